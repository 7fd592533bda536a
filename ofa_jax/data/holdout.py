"""Lines no training corpus may hold: the evaluation lines and the independent dev/test set's texts.

The rule (spaces removed on both sides): a training line is held out if it *equals* an entry, or
*contains* an entry of at least ``MIN_CONTAINED`` (6) characters. The second half matters for long
lines: a 40-character line that quotes a held-out sentence would teach that sentence.

Entries come from

* the evaluation list in force (`ofa_jax.data.text.load_eval_exclude`: the packaged
  ``eval_exclude.txt`` or ``$OFA_JAX_EVAL_EXCLUDE``), and
* ``indep_texts.txt`` next to this module: every text of the independent dev/test set
  (``bench/data/indep``, written by ``python -m tools.indep_set.build``), shipped with the package
  so that an installed ofa-jax keeps them out of its training lines too.

`HoldoutFilter.__contains__` answers in time linear in the line's length (a dictionary of the
entries' first six characters), so random text sources can check every line they draw.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterable

from ofa_jax.data.text import eval_exclude_path, read_lines

MIN_CONTAINED = 6
INDEP_TEXTS = Path(__file__).with_name("indep_texts.txt")


def _squash(text: str) -> str:
    return "".join(text.split())


class HoldoutFilter:
    """``line in holdout``: True if the line equals an entry or contains one of >= 6 characters
    (both compared with all whitespace removed)."""

    def __init__(self, entries: Iterable[str], source: str = "<memory>"):
        self.entries = frozenset(e for e in (_squash(x) for x in entries) if e)
        self.source = source
        heads: dict[str, list[str]] = {}
        for e in self.entries:
            if len(e) >= MIN_CONTAINED:
                heads.setdefault(e[:MIN_CONTAINED], []).append(e)
        self._heads = heads

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, line: object) -> bool:
        if not isinstance(line, str):
            return False
        s = _squash(line)
        if s in self.entries:
            return True
        heads = self._heads
        for i in range(len(s) - MIN_CONTAINED + 1):
            cands = heads.get(s[i:i + MIN_CONTAINED])
            if cands and any(s.startswith(e, i) for e in cands):
                return True
        return False

    def matches(self, line: str) -> list[str]:
        """The entries that hold ``line`` out (for messages and tests)."""
        s = _squash(line)
        return sorted(e for e in self.entries if e == s or (len(e) >= MIN_CONTAINED and e in s))


def indep_texts() -> list[str]:
    """The independent dev/test set's texts (empty if the file is absent)."""
    return read_lines(INDEP_TEXTS) if INDEP_TEXTS.is_file() else []


@functools.lru_cache(maxsize=8)
def _load(eval_path: str, indep_path: str) -> HoldoutFilter:
    lines = read_lines(eval_path) if Path(eval_path).is_file() else []
    if Path(indep_path).is_file():
        lines += read_lines(indep_path)
    return HoldoutFilter(lines, source=f"{eval_path} + {indep_path}")


def load_holdout() -> HoldoutFilter:
    """The evaluation list in force plus the independent set's texts, as one filter."""
    path = eval_exclude_path()
    if not path.is_file():
        raise FileNotFoundError(f"evaluation exclusion list not found: {path}")
    return _load(str(path.resolve()), str(INDEP_TEXTS))
