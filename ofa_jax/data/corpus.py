"""Offline text for the synthetic corpus.

Sources (named in a builder config):

* ``"gb2312"`` - random strings over the GB2312 hanzi (level 1: 3,755 common characters, drawn ten
  times as often as level 2: 3,008 less common ones, so each level-1 character about eight times as
  often as each level-2 one), decoded from Python's own ``gb2312`` codec, with
  occasional digits, Latin letters and Chinese punctuation. Always available.
* ``"rare"`` - like ``"gb2312"``, weighted toward level-2 hanzi, Latin and digit runs (for continuing
  a model that misreads those; evaluation keeps ``"gb2312"``).
* ``"alnum"`` - random Latin letters/digits/ASCII punctuation words (always available; also what
  tests use on machines without a CJK font).
* ``"hsk"`` - the 4,354 graded sentences of the PyPI package ``hsk-sentences-audio`` (dataset licence
  CC-BY-SA-4.0: images rendered from it are derived works, keep the attribution if you publish
  them). Needs ``pip install hsk-sentences-audio``.
* ``"words"`` - random sequences of Chinese words drawn by their frequency in the dictionary of the
  PyPI package ``jieba`` (MIT; 342k words of GB2312 hanzi), with occasional punctuation and digits:
  natural character statistics and word boundaries without a finite pool to memorise (a decoder
  trained on half HSK sentences completed memorised sentences instead of reading them). Needs
  ``pip install jieba``, or ``OFA_JAX_WORDS_DICT`` naming a file in its format ("word count [tag]"
  per line, ``.xz`` allowed): your own word list, or jieba's on a machine without the package.
* ``"prose"`` - lines that look like printed running text, up to 40+ characters: sentences from
  clause templates over jieba's words by part of speech, with the punctuation real text has (also at
  line ends), dates, times, prices, percentages, codes, phone numbers and Latin words in the running
  text, cut into lines like a typeset page (`ofa_jax.data.prose`). Needs jieba like ``"words"``.
* ``"file:PATH"`` - one text line per line of a UTF-8 file you supply.

Every random source's line also passes `ofa_jax.data.holdout` (a line equal to an evaluation line or to
a text of the independent dev/test set, or containing one of >= 6 characters, is drawn again).

Fixed-text sources ("hsk", "file:") are split between train/val/test by a stable hash of the line,
so a validation or test line is never rendered for training. Random sources are drawn with a
split-specific seed.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import lzma
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ofa_jax.data.text import read_lines

_CN_PUNCT = "，。、；：？！“”‘’（）《》—…·"
_ASCII_PUNCT = ".,:;!?-()%/+"
_LATIN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_DIGITS = "0123456789"


@functools.lru_cache(maxsize=1)
def gb2312_hanzi() -> tuple[str, str]:
    """(level-1, level-2) GB2312 hanzi as strings, decoded from Python's gb2312 codec.

    Level 1 is rows 16-55 (sorted by pinyin), level 2 rows 56-87 (by radical); each row has 94 cells
    (row 55 ends after cell 89).
    """
    def rows(lo, hi):
        chars = []
        for row in range(lo, hi + 1):
            for cell in range(1, 95):
                try:
                    chars.append(bytes([0xA0 + row, 0xA0 + cell]).decode("gb2312"))
                except UnicodeDecodeError:
                    pass
        return "".join(chars)

    return rows(16, 55), rows(56, 87)


@functools.lru_cache(maxsize=1)
def hsk_sentences() -> tuple[str, ...]:
    try:
        import hsk_sentences_audio
    except ImportError:
        raise ImportError("text source 'hsk' needs the PyPI package hsk-sentences-audio "
                          "(pip install hsk-sentences-audio)") from None
    return tuple(s["chinese"].strip() for s in hsk_sentences_audio.load_sentences() if s["chinese"].strip())


def words_dict_path() -> Path | None:
    """The word-frequency file of the ``words`` source: ``$OFA_JAX_WORDS_DICT``, else jieba's."""
    if os.environ.get("OFA_JAX_WORDS_DICT"):
        return Path(os.environ["OFA_JAX_WORDS_DICT"])
    spec = importlib.util.find_spec("jieba")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / "dict.txt"


@functools.lru_cache(maxsize=1)
def jieba_words() -> tuple[tuple[str, ...], np.ndarray]:
    """(words, cumulative frequencies) of jieba's dictionary, words of GB2312 hanzi only.

    Read from ``OFA_JAX_WORDS_DICT`` or the package's ``dict.txt`` ("word count tag" per line) without
    importing jieba, whose import sets up its segmenter.
    """
    path = words_dict_path()
    if path is None:
        raise ImportError("text source 'words' needs the PyPI package jieba (pip install jieba) "
                          "or OFA_JAX_WORDS_DICT naming a word-frequency file")
    if not path.is_file():
        raise FileNotFoundError(f"text source 'words': no such file: {path}")
    raw = path.read_bytes()
    text = (lzma.decompress(raw) if path.suffix == ".xz" else raw).decode("utf-8")
    hanzi = set("".join(gb2312_hanzi()))
    words, counts = [], []
    for line in text.splitlines():
        parts = line.split(" ")
        if len(parts) >= 2 and parts[0] and all(c in hanzi for c in parts[0]) and parts[1].isdigit():
            words.append(parts[0])
            counts.append(int(parts[1]))
    if not words:
        raise ValueError(f"text source 'words': no GB2312 words in {path}")
    return tuple(words), np.cumsum(np.asarray(counts, dtype=np.float64))


def available(source: str) -> bool:
    if source in ("words", "prose"):
        path = words_dict_path()
        return path is not None and path.is_file()
    if source == "hsk":
        try:
            hsk_sentences()
            return True
        except ImportError:
            return False
    if source.startswith("file:"):
        return Path(source[5:]).is_file()
    return source in RANDOM_SOURCES


def fixed_lines(source: str) -> tuple[str, ...] | None:
    """The lines of a fixed-text source, or None for a random one."""
    if source == "hsk":
        return hsk_sentences()
    if source.startswith("file:"):
        return tuple(read_lines(source[5:]))
    if source in RANDOM_SOURCES:
        return None
    raise ValueError(f"unknown text source {source!r} (gb2312, rare, alnum, words, prose, hsk, file:PATH)")


def split_of_line(line: str, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> int:
    """Stable split index (0 train, 1 val, 2 test) of a fixed line from a hash of its text."""
    h = int.from_bytes(hashlib.sha256(line.encode("utf-8")).digest()[:8], "big") / 2.0**64
    acc = 0.0
    for i, f in enumerate(fractions):
        acc += f
        if h < acc:
            return i
    return len(fractions) - 1


def _random_hanzi_line(rng: np.random.Generator, min_len: int, max_len: int,
                       cuts: tuple[float, float, float, float]) -> str:
    """Random GB2312 string: each draw is punctuation, a digit run, a Latin run, a level-1 or a level-2
    hanzi, by a uniform number against the cumulative ``cuts`` (the first three, the fourth; level 2
    above it). Punctuation never opens a line (that draw becomes a digit run)."""
    level1, level2 = gb2312_hanzi()
    punct, digits, latin, hanzi1 = cuts
    n = int(rng.integers(min_len, max_len + 1))
    out = []
    while len(out) < n:
        r = rng.random()
        if r < punct and out:
            out.append(_CN_PUNCT[rng.integers(len(_CN_PUNCT))])
        elif r < digits:
            k = int(rng.integers(1, 5))
            out.extend(_DIGITS[i] for i in rng.integers(0, 10, size=k))
        elif r < latin:
            k = int(rng.integers(1, 5))
            out.extend(_LATIN[i] for i in rng.integers(0, len(_LATIN), size=k))
        elif r < hanzi1:
            out.append(level1[rng.integers(len(level1))])
        else:
            out.append(level2[rng.integers(len(level2))])
    return "".join(out[:n]).strip() or level1[0]


def random_gb2312_line(rng: np.random.Generator, min_len: int, max_len: int) -> str:
    return _random_hanzi_line(rng, min_len, max_len, (0.05, 0.10, 0.12, 0.92))


def random_rare_line(rng: np.random.Generator, min_len: int, max_len: int) -> str:
    """Like ``gb2312`` but weighted toward what it draws least: half the hanzi from level 2 (there 1 in
    11) and Latin and digit runs ten and three times as often. For continuing a model whose errors are
    in these classes; evaluation keeps the ``gb2312`` mix."""
    return _random_hanzi_line(rng, min_len, max_len, (0.05, 0.20, 0.40, 0.70))


def random_alnum_line(rng: np.random.Generator, min_len: int, max_len: int) -> str:
    n = int(rng.integers(min_len, max_len + 1))
    words, length = [], 0
    alphabet = _LATIN + _DIGITS
    while length < n:
        k = int(rng.integers(1, 8))
        w = "".join(alphabet[i] for i in rng.integers(0, len(alphabet), size=k))
        if rng.random() < 0.15:
            w += _ASCII_PUNCT[rng.integers(len(_ASCII_PUNCT))]
        words.append(w)
        length += len(w) + 1
    return " ".join(words)[:n].strip() or "a"


def random_words_line(rng: np.random.Generator, min_len: int, max_len: int) -> str:
    """Words drawn by frequency until the line is long enough, cut to length (lines end anywhere,
    as crops of real text do); a comma or number between words now and then."""
    words, cum = jieba_words()
    n = int(rng.integers(min_len, max_len + 1))
    out = ""
    while len(out) < n:
        r = rng.random()
        if r < 0.06 and out:
            out += _CN_PUNCT[int(rng.integers(2))]  # ，or 。
        elif r < 0.09:
            out += "".join(_DIGITS[i] for i in rng.integers(0, 10, size=int(rng.integers(1, 5))))
        out += words[int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))]
    return out[:n]


def random_prose_line(rng: np.random.Generator, min_len: int, max_len: int) -> str:
    """A line of printed running text (`ofa_jax.data.prose`)."""
    from ofa_jax.data import prose

    return prose.random_line(rng, min_len, max_len)


RANDOM_SOURCES = {"gb2312": random_gb2312_line, "rare": random_rare_line, "alnum": random_alnum_line,
                  "words": random_words_line, "prose": random_prose_line}


def random_line(source: str, rng: np.random.Generator, min_len: int, max_len: int) -> str:
    """A line of a random source that is not held out (`ofa_jax.data.holdout`: drawn again if it is)."""
    if source not in RANDOM_SOURCES:
        raise ValueError(f"{source!r} is not a random text source")
    from ofa_jax.data.holdout import load_holdout

    holdout = load_holdout()
    for _ in range(100):
        line = RANDOM_SOURCES[source](rng, min_len, max_len)
        if line not in holdout:
            return line
    raise RuntimeError(f"text source {source!r}: 100 draws in a row were held-out lines")
