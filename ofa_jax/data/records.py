"""Readers (and a writer) for the raw record layouts this package understands.

Every reader yields records ``{"id": str, "image": bytes, "text": str}`` where ``image`` holds the
encoded image file exactly as stored (JPEG/PNG/... bytes, never re-encoded).

Layouts:

* FudanVI LMDB (the Chinese text recognition benchmark): an LMDB environment (a directory with
  ``data.mdb``) holding ``num-samples`` (ASCII int), ``image-%09d`` (encoded image) and
  ``label-%09d`` (UTF-8 text), with indices starting at 1.
* A folder of images with ``labels.jsonl`` (one ``{"file": ..., "text": ...}`` object per line) or
  ``labels.tsv`` (``file<TAB>text`` per line); ``file`` is relative to the folder.
* The OFA-Sys TSV layout: ``uniq_id<TAB>base64 image<TAB>text`` per line.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Iterable, Iterator

Record = dict  # {"id": str, "image": bytes, "text": str}


class RecordError(ValueError):
    """One record of a source cannot be read (missing key, label not UTF-8, ...); the message is one
    line naming the source and the record. Readers raise it for that record only: the others stay
    readable, and the training pipeline / builders skip and count such records."""


# ----------------------------------------------------------------------------- FudanVI LMDB

def is_lmdb_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / "data.mdb").is_file()


_ENVS: dict[tuple[int, str], object] = {}


def _open_readonly(path: str):
    """One shared read-only environment per (process, path): LMDB refuses a second open of the
    same environment in one process, and a forked worker must not reuse its parent's handle."""
    import lmdb

    key = (os.getpid(), os.path.realpath(path))
    env = _ENVS.get(key)
    if env is None:
        env = _ENVS[key] = lmdb.open(path, readonly=True, lock=False, readahead=False,
                                     meminit=False, max_readers=126)
    return env


class FudanLmdb:
    """Random access to a FudanVI-layout LMDB: ``len(db)``, ``db[i]`` (i from 0) -> record.

    Opened lazily and read-only without locking, so instances can be pickled into grain worker
    processes (each process reopens its own environment).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        if not is_lmdb_dir(self.path):
            raise FileNotFoundError(f"no LMDB environment (data.mdb) in {self.path}")
        self._env = None
        with self._open().begin(write=False) as txn:
            raw = txn.get(b"num-samples")
        if raw is None:
            raise ValueError(f"{self.path}: LMDB has no 'num-samples' key (not FudanVI layout)")
        self._n = int(raw.decode("ascii").strip())

    def _open(self):
        if self._env is None:
            self._env = _open_readonly(self.path)
        return self._env

    def __getstate__(self):
        return {"path": self.path, "_n": self._n, "_env": None}

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> Record:
        i = int(i)
        if not 0 <= i < self._n:
            raise IndexError(i)
        k = i + 1
        with self._open().begin(write=False) as txn:
            img = txn.get(b"image-%09d" % k)
            label = txn.get(b"label-%09d" % k)
        if img is None or label is None:
            raise RecordError(f"{self.path}: record {k:09d}: missing "
                              f"{' and '.join(n for n, v in (('image', img), ('label', label)) if v is None)}-{k:09d}")
        label = bytes(label)
        try:
            text = label.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RecordError(f"{self.path}: record {k:09d}: label is not valid UTF-8 ({e.reason} at byte {e.start}: "
                              f"{label[max(0, e.start - 4):e.start + 4]!r})") from None
        return {"id": f"{k:09d}", "image": bytes(img), "text": text}

    def __iter__(self) -> Iterator[Record]:
        for i in range(self._n):
            yield self[i]

    def iter_readable(self, errors: list | None = None) -> Iterator[Record]:
        """Like iterating, but records that raise :class:`RecordError` are skipped; their messages
        are appended to ``errors``."""
        for i in range(self._n):
            try:
                rec = self[i]
            except RecordError as e:
                if errors is not None:
                    errors.append(str(e))
                continue
            yield rec


def write_fudan_lmdb(path: str | os.PathLike, records: Iterable[tuple[bytes, str]],
                     map_size: int = 1 << 30) -> int:
    """Write (image bytes, label) pairs as a FudanVI-layout LMDB; returns the number written."""
    import lmdb

    Path(path).mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(path), map_size=map_size)
    n = 0
    with env.begin(write=True) as txn:
        for n, (img, label) in enumerate(records, 1):
            txn.put(b"image-%09d" % n, bytes(img))
            txn.put(b"label-%09d" % n, label.encode("utf-8"))
        txn.put(b"num-samples", str(n).encode("ascii"))
    env.close()
    return n


# ----------------------------------------------------------------------------- folders / TSV

LABEL_FILES = ("labels.jsonl", "labels.tsv")


def _read_text_lines(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        data = f.read()
    if data.startswith("\ufeff"):
        data = data[1:]
    for lineno, line in enumerate(data.split("\n"), 1):  # never splitlines(): U+2028 in labels
        line = line.rstrip("\r")
        if line.strip():
            yield lineno, line


def read_label_file(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(relative image file, text) pairs from a ``labels.jsonl`` or ``labels.tsv``."""
    path = Path(path)
    pairs = []
    for lineno, line in _read_text_lines(path):
        if path.suffix == ".jsonl":
            try:
                obj = json.loads(line)
                pairs.append((str(obj["file"]), str(obj["text"])))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{lineno}: expected {{\"file\": ..., \"text\": ...}} ({e})") from None
        else:
            parts = line.split("\t", 1)
            if len(parts) != 2:
                raise ValueError(f"{path}:{lineno}: expected 'file<TAB>text'")
            pairs.append((parts[0], parts[1]))
    return pairs


def iter_label_folder(folder: str | os.PathLike) -> Iterator[Record]:
    """Records of a folder holding ``labels.jsonl`` or ``labels.tsv`` plus the image files."""
    folder = Path(folder)
    label_file = next((folder / n for n in LABEL_FILES if (folder / n).is_file()), None)
    if label_file is None:
        raise FileNotFoundError(f"{folder}: expected one of {', '.join(LABEL_FILES)}")
    for rel, text in read_label_file(label_file):
        img_path = folder / rel
        if not img_path.is_file():
            raise FileNotFoundError(f"{label_file}: image {rel!r} not found in {folder}")
        yield {"id": rel, "image": img_path.read_bytes(), "text": text}


def iter_ofasys_tsv(path: str | os.PathLike) -> Iterator[Record]:
    """Records of an OFA-Sys TSV (``uniq_id<TAB>base64 image<TAB>text``)."""
    path = Path(path)
    for lineno, line in _read_text_lines(path):
        parts = line.split("\t")
        if len(parts) < 3:
            raise ValueError(f"{path}:{lineno}: expected 'uniq_id<TAB>base64 image<TAB>text'")
        uid, b64, text = parts[0], parts[1], "\t".join(parts[2:])
        try:
            img = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            try:
                img = base64.urlsafe_b64decode(b64)
            except (binascii.Error, ValueError):
                raise ValueError(f"{path}:{lineno}: column 2 is not base64") from None
        yield {"id": uid, "image": img, "text": text}


def is_ofasys_tsv(path: str | os.PathLike) -> bool:
    """True if the first non-empty line of `path` has >= 3 tab-separated columns with a base64 2nd."""
    path = Path(path)
    if not path.is_file() or path.suffix != ".tsv":
        return False
    for _, line in _read_text_lines(path):
        parts = line.split("\t")
        if len(parts) < 3:
            return False
        try:
            base64.b64decode(parts[1][:4096], validate=True)  # 4096 % 4 == 0
            return True
        except (binascii.Error, ValueError):
            return False
    return False


def iter_records(path: str | os.PathLike) -> Iterator[Record]:
    """Records of one split given as an LMDB dir, a label folder or an OFA-Sys TSV file."""
    path = Path(path)
    if path.is_dir() and is_lmdb_dir(path):
        yield from FudanLmdb(path)
    elif path.is_dir():
        yield from iter_label_folder(path)
    elif path.suffix == ".tsv":
        yield from iter_ofasys_tsv(path)
    else:
        raise ValueError(f"{path}: not an LMDB dir, a folder with {'/'.join(LABEL_FILES)}, or a .tsv")
