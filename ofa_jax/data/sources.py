"""Random-access record sources, and `load_eval_source(spec)` for the evaluation command.

A record source has ``len(src)`` and ``src[i] -> {"id": str, "image": bytes, "text": str}``
(``image`` = the encoded image file). They plug straight into `ofa_jax.data.pipeline`.

Specs:

* ``tfds:NAME/CONFIG`` - a prepared TFDS dataset (e.g. ``tfds:ocr_fudanvi_zh/scene``), read with
  ``tfds.data_source`` from ``data_dir`` (default: TFDS's, i.e. ``$TFDS_DATA_DIR`` or
  ``~/tensorflow_datasets``). ``NAME/CONFIG:VERSION`` works too.
* ``lmdb:PATH`` - a FudanVI-layout LMDB. If PATH holds no ``data.mdb`` but split folders, the split
  is looked up like the FudanVI builder does (``PATH/*_SPLIT``, ``PATH/SPLIT``).
* ``folder:PATH`` - a folder with labels.jsonl/labels.tsv, per-split subfolders, or OFA-Sys
  ``SPLIT.tsv`` files (see `ofa_jax.data.builders.folder`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ofa_jax.data.records import FudanLmdb, is_lmdb_dir, iter_records


class ListSource:
    """Records held in memory (small eval sets, folders, TSVs)."""

    def __init__(self, records: Sequence[dict]):
        self._records = list(records)

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i: int) -> dict:
        return self._records[int(i)]


class TfdsSource:
    """A `tfds.data_source` split with image bytes left encoded and strings decoded to str."""

    def __init__(self, name: str, split: str, data_dir: str | os.PathLike | None = None):
        import tensorflow_datasets as tfds

        import ofa_jax.data.builders  # noqa: F401  (registers our builders)

        self.name, self.split = name, split
        self.data_dir = None if data_dir is None else str(data_dir)
        self._src = tfds.data_source(
            name, split=split, data_dir=self.data_dir,
            decoders={"image": tfds.decode.SkipDecoding()},
            builder_kwargs={"file_format": "array_record"})

    def __len__(self) -> int:
        return len(self._src)

    def __getitem__(self, i: int) -> dict:
        ex = self._src[int(i)]
        return {k: (v.decode("utf-8") if isinstance(v, bytes) and k != "image" else v)
                for k, v in ex.items()}

    def __getstate__(self):
        return {"name": self.name, "split": self.split, "data_dir": self.data_dir}

    def __setstate__(self, state):
        self.__init__(state["name"], state["split"], state["data_dir"])


def _lmdb_split_dir(path: Path, split: str) -> Path:
    if is_lmdb_dir(path):
        return path
    cands = sorted(path.glob(f"*_{split}")) + [path / split]
    for c in cands:
        if is_lmdb_dir(c):
            return c
    raise FileNotFoundError(f"lmdb:{path}: no data.mdb there, nor in {path}/*_{split} or {path}/{split}")


def load_eval_source(spec: str, split: str = "test", data_dir: str | os.PathLike | None = None):
    """Turn ``tfds:NAME/CONFIG``, ``lmdb:PATH``, ``folder:PATH`` or ``render:...`` (synthetic lines
    rendered on access: `ofa_jax.data.builders.synthetic.RenderedSynthetic`) into a record source."""
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ValueError(f"data spec {spec!r}: expected tfds:NAME/CONFIG, lmdb:PATH, folder:PATH or render:SPEC")
    if kind == "tfds":
        return TfdsSource(rest, split, data_dir)
    if kind == "render":
        from ofa_jax.data.builders.synthetic import RenderedSynthetic

        return RenderedSynthetic(rest, split)
    if kind == "lmdb":
        return FudanLmdb(_lmdb_split_dir(Path(rest), split))
    if kind == "folder":
        from ofa_jax.data.builders.folder import SPLITS as FOLDER_SPLITS, find_folder_splits

        splits = find_folder_splits(rest)
        if split not in splits:
            if len(splits) == 1 and split in FOLDER_SPLITS:  # a single unsplit folder/TSV: that is the data
                (loc,) = splits.values()                    # whichever of the three splits is asked for
            elif len(splits) == 1:
                raise KeyError(f"folder:{rest} has no split {split!r} (it is one unsplit set: --split "
                               f"{', '.join(FOLDER_SPLITS[:-1])} or {FOLDER_SPLITS[-1]} reads all of it)")
            else:
                raise KeyError(f"folder:{rest} has splits {sorted(splits)}, not {split!r}")
        else:
            loc = splits[split]
        return ListSource(list(iter_records(loc)))
    raise ValueError(f"data spec {spec!r}: unknown kind {kind!r} (tfds, lmdb, folder, render)")
