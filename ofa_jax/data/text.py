"""Text normalisation for training targets and the held-out evaluation line filter.

Two things live here because every builder and the pipeline need them:

* `train_normalize`: the training-target normalisation of ModelScope's OFA OCR preprocessor
  (`zhconv.convert(text, 'zh-hans')` then Unicode NFKC).
* `EvalExclude`: the set of text lines that are reserved for evaluation. Every *training* corpus
  built by this package drops records whose label is one of these lines (exact match after stripping
  surrounding whitespace), so that evaluation numbers on them are not measured on training data.
  The list ships as `eval_exclude.txt` next to this module; `OFA_JAX_EVAL_EXCLUDE=/path/to/file`
  (one line per entry) replaces it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import unicodedata
from pathlib import Path
from typing import Iterable

import zhconv

EVAL_EXCLUDE_ENV = "OFA_JAX_EVAL_EXCLUDE"
_PACKAGED_EXCLUDE = Path(__file__).with_name("eval_exclude.txt")


def train_normalize(text: str) -> str:
    """OFA's training-target normalisation: traditional -> simplified (zh-hans), then NFKC."""
    return unicodedata.normalize("NFKC", zhconv.convert(text, "zh-hans"))


def full_to_half_width(text: str) -> str:
    """Full-width ASCII variants (U+FF01..U+FF5E) -> ASCII, ideographic space U+3000 -> ' '.

    This is exactly the FudanVI benchmark's `strQ2B`; nothing else (e.g. full-width brackets
    outside that block, or half-width katakana) is touched.
    """
    out = []
    for ch in text:
        code = ord(ch)
        if code == 0x3000:
            code = 0x20
        elif 0xFF01 <= code <= 0xFF5E:
            code -= 0xFEE0
        out.append(chr(code))
    return "".join(out)


def read_lines(path: str | os.PathLike) -> list[str]:
    """Lines of a UTF-8 text file, split on '\\n' only (never `str.splitlines`, which also splits on
    U+2028 and friends), without trailing '\\r', empty lines dropped."""
    text = Path(path).read_text(encoding="utf-8")
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


@dataclasses.dataclass(frozen=True)
class EvalExclude:
    """Held-out evaluation lines; `line in exclude` is an exact match on stripped text."""

    lines: frozenset[str]
    source: str

    @classmethod
    def from_lines(cls, lines: Iterable[str], source: str = "<memory>") -> "EvalExclude":
        return cls(frozenset(line.strip() for line in lines if line.strip()), source)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "EvalExclude":
        return cls.from_lines(read_lines(path), source=str(path))

    @classmethod
    def empty(cls) -> "EvalExclude":
        return cls(frozenset(), "<none>")

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and text.strip() in self.lines

    def __len__(self) -> int:
        return len(self.lines)


def eval_exclude_path() -> Path:
    """The exclusion list in force: `$OFA_JAX_EVAL_EXCLUDE` if set, else the packaged file."""
    env = os.environ.get(EVAL_EXCLUDE_ENV)
    return Path(env) if env else _PACKAGED_EXCLUDE


@functools.lru_cache(maxsize=8)
def _load_cached(path: str) -> EvalExclude:
    return EvalExclude.from_file(path)


def load_eval_exclude(path: str | os.PathLike | None = None) -> EvalExclude:
    """Load the held-out line list (`path`, else `$OFA_JAX_EVAL_EXCLUDE`, else the packaged one)."""
    p = Path(path) if path is not None else eval_exclude_path()
    if not p.is_file():
        raise FileNotFoundError(
            f"evaluation exclusion list not found: {p} (set ${EVAL_EXCLUDE_ENV} to a file with one "
            "line per held-out text)")
    return _load_cached(str(p.resolve()))
