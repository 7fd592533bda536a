"""Line-level OCR metrics: ACC (exact match) and NED (1 - mean normalised edit distance).

Both prediction and ground truth go through one of two named normalisations before scoring:

* ``"benchmark"`` (the default) - the FudanVI Chinese text recognition benchmark's
  (github FudanVI/benchmarking-chinese-text-recognition): full-width -> half-width
  (U+FF01..U+FF5E and U+3000 only), lowercase, then traditional -> simplified with
  ``zhconv.convert(s, "zh-cn")``. Spaces are kept.
* ``"ofa"`` - OFA-OCR's own: ``zhconv.convert(s, "zh-hans")``, Unicode NFKC, lowercase, and all
  whitespace removed.
* ``"none"`` - strings compared as given.

NED = 1 - mean_i lev(p_i, g_i) / max(|p_i|, |g_i|), with 0/0 counted as distance 0 (two empty
strings match). Lengths and distances are in Unicode code points. A line with no prediction at all
(an unreadable image, `LineMetrics.update_failed`) counts as wrong with distance 1, even when its
label is empty. Always say which normalisation a number uses.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from typing import Callable, Iterable, Sequence

import zhconv

from ofa_jax.data.text import full_to_half_width

DEFAULT_NORMALIZATION = "benchmark"


def normalize_benchmark(text: str) -> str:
    """FudanVI benchmark: full-width -> half-width, lowercase, zhconv zh-cn (in that order)."""
    return zhconv.convert(full_to_half_width(text).lower(), "zh-cn")


def normalize_ofa(text: str) -> str:
    """OFA-OCR: zhconv zh-hans, NFKC, lowercase, whitespace removed."""
    text = unicodedata.normalize("NFKC", zhconv.convert(text, "zh-hans")).lower()
    return "".join(text.split())


NORMALIZATIONS: dict[str, Callable[[str], str]] = {
    "benchmark": normalize_benchmark,
    "ofa": normalize_ofa,
    "none": lambda s: s,
}


def get_normalizer(name: str) -> Callable[[str], str]:
    try:
        return NORMALIZATIONS[name]
    except KeyError:
        raise ValueError(f"unknown normalisation {name!r}; choose one of {sorted(NORMALIZATIONS)}") from None


def levenshtein(a: Sequence, b: Sequence) -> int:
    """Edit distance (insert/delete/substitute, unit costs)."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def normalized_edit_distance(pred: str, gt: str) -> float:
    denom = max(len(pred), len(gt))
    return 0.0 if denom == 0 else levenshtein(pred, gt) / denom


@dataclasses.dataclass
class LineMetrics:
    """Streaming accumulator: `update(preds, gts)` per batch, `result()` at the end."""

    normalization: str = DEFAULT_NORMALIZATION
    n: int = 0
    correct: int = 0
    ned_sum: float = 0.0

    def __post_init__(self):
        self._norm = get_normalizer(self.normalization)

    def update_one(self, pred: str, gt: str) -> tuple[bool, float]:
        p, g = self._norm(pred), self._norm(gt)
        ned = normalized_edit_distance(p, g)
        ok = p == g
        self.n += 1
        self.correct += ok
        self.ned_sum += ned
        return ok, ned

    def update_failed(self) -> None:
        """A line without a prediction (unreadable image): wrong, edit distance 1 (NED term 0)."""
        self.n += 1
        self.ned_sum += 1.0

    def update(self, preds: Iterable[str], gts: Iterable[str]) -> None:
        preds, gts = list(preds), list(gts)
        if len(preds) != len(gts):
            raise ValueError(f"{len(preds)} predictions vs {len(gts)} ground truths")
        for p, g in zip(preds, gts):
            self.update_one(p, g)

    def result(self) -> dict:
        acc = self.correct / self.n if self.n else float("nan")
        ned = 1.0 - self.ned_sum / self.n if self.n else float("nan")
        return {"n": self.n, "acc": acc, "ned": ned, "normalization": self.normalization}


def compute_metrics(preds: Iterable[str], gts: Iterable[str],
                    normalization: str = DEFAULT_NORMALIZATION) -> dict:
    """{"n", "acc", "ned", "normalization"} for paired predictions and ground truths."""
    m = LineMetrics(normalization)
    m.update(preds, gts)
    return m.result()
