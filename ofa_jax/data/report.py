"""Counting what the input pipeline had to do to the labels and records, for the training log.

`DataReport.update(batch)` reads the per-row flags of a pipeline batch (`ofa_jax.data.pipeline`):

* ``truncated``   labels longer than ``max_target_tokens``, cut (the reference cuts them too);
* ``oov_tokens``  characters outside the vocabulary, mapped to ``<unk>`` (as the reference's tokenizer);
* ``empty_label`` labels that are empty after normalisation (target = eos alone, as in the reference);
* ``bad_record``  records that could not be read and were skipped (blank, all-pad rows).

The training loop logs the totals (``data/...`` in ``metrics.jsonl`` and one console line whenever a
count grew) and stops with :class:`DataError` when most records are unreadable: a wrong path or
format, not a few bad lines.
"""
from __future__ import annotations

import numpy as np

KEYS = (("truncated", "labels truncated to max_target_tokens"), ("oov_tokens", "out-of-vocabulary tokens (<unk>)"),
        ("empty_label", "empty labels"), ("bad_record", "unreadable records skipped"))


class DataError(ValueError):
    """The training data cannot be used as it is (message says why and what to do)."""


class DataReport:
    def __init__(self, max_bad_fraction: float = 0.5, min_records: int = 16):
        self.max_bad_fraction, self.min_records = max_bad_fraction, min_records
        self.records = 0
        self.counts = {k: 0 for k, _ in KEYS}
        self._logged = dict(self.counts)

    def update(self, batch: dict) -> None:
        rows = len(batch["target"])
        self.records += rows
        for k, _ in KEYS:
            if k in batch:
                self.counts[k] += int(np.sum(batch[k]))

    def metrics(self) -> dict:
        return {"records_seen": self.records, **{k: v for k, v in self.counts.items()}}

    def news(self) -> str:
        """One line with the totals if any count grew since the last call, else ''."""
        if self.counts == self._logged:
            return ""
        self._logged = dict(self.counts)
        parts = [f"{self.counts[k]} {what}" for k, what in KEYS if self.counts[k]]
        return f"data: {', '.join(parts)} (of {self.records} records read so far)"

    def check(self, where: str) -> None:
        """Raises DataError when more than ``max_bad_fraction`` of the records read were unreadable."""
        bad = self.counts["bad_record"]
        if self.records >= self.min_records and bad > self.max_bad_fraction * self.records:
            raise DataError(f"{where}: {bad} of the first {self.records} records could not be read (see the "
                            "'skipping unreadable record' lines above): wrong path, format or a broken dataset?")
