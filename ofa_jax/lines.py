"""What a text-line image goes through before the recogniser sees it, beyond the reference's resize:
light-on-dark text made dark-on-light, and a line too long for the model cut at gaps between
characters into pieces it can read (`Recognizer` joins their texts).

Why cut: a seq2seq recogniser reads what its training lines held. The shipped model saw lines of at
most 12 characters in a 32 x 320 input; a 30-character line squeezed into that input has ~10 px per
character and collapses into repeated fragments (bench/RESULTS_indep.md). A line wider than
``max_aspect`` text heights is cut into about-equal pieces of at most ``PIECE_SHARE * max_aspect``
heights, each a line of the kind the model reads. Where to cut comes from the ink's column profile:
the widest blank run near each even split point, so a cut falls between characters (or words) and,
in CJK text, rarely inside one. A line a little narrower than ``max_aspect`` is read both whole and
cut, and the better-scoring reading is kept (`readings`): the lengths the model was trained on read as
before, and a slightly longer line is still cut.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

# the CLI help of decode, evaluate and ocr
POLARITY_HELP = ("auto: read light-on-dark lines inverted; keep: as they are (default: the model dir's "
                 "generation.json polarity, else keep)")
ASPECT_HELP = ("read a line wider than A text heights in pieces cut between characters, 0: never (default: the "
               "model dir's generation.json max_piece_aspect, else never; ofa_jax/lines.py)")

PIECE_SHARE = 0.75  # a long line's pieces are at most this share of max_aspect wide

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3].astype(np.float32) @ _LUMA


def border(lum: np.ndarray, k: int = 2) -> np.ndarray:
    """The outer ``k``-pixel frame of an image's luminance (a line crop's background)."""
    return np.concatenate([lum[:k].ravel(), lum[-k:].ravel(), lum[:, :k].ravel(), lum[:, -k:].ravel()])


def dark_text_on_light(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` with light text on a dark background inverted (dark on light is left alone): the
    background is the image's border (a line has a margin around the ink), and it is darker than the
    image's mean when the ink is the bright part. The shipped recogniser read the white-on-dark sign in
    examples/pages wrong (0 of 2 lines) and inverted right (2 of 2)."""
    lum = luminance(rgb)
    return 255 - rgb if np.median(border(lum)) < lum.mean() else rgb


def ink_mask(rgb: np.ndarray) -> np.ndarray:
    """Boolean (H, W): pixels darker than the background by a good part of the line's contrast
    (``rgb`` dark text on light: `dark_text_on_light` first)."""
    lum = luminance(rgb)
    bg = float(np.median(border(lum)))
    dark = float(np.percentile(lum, 2))
    return lum < bg - max(24.0, 0.4 * (bg - dark))


@dataclasses.dataclass(frozen=True)
class Piece:
    x0: int
    x1: int
    gap_before: float = 0.0  # blank width before this piece, in text heights (0 for the first)


def text_height(ink: np.ndarray) -> int:
    """The height of the line's ink band (rows holding a fair share of the ink), at least 1."""
    rows = ink.sum(1)
    if not rows.any():
        return ink.shape[0]
    on = np.nonzero(rows >= max(1, 0.02 * rows.max()))[0]
    return int(on[-1] - on[0] + 1)


def _widest_blank(cols: np.ndarray, lo: int, hi: int, target: float) -> tuple[int, int]:
    """The run of emptiest columns in ``cols[lo:hi]`` that is widest (nearest ``target`` among equals):
    (start, end) column indices."""
    window = cols[lo:hi]
    low = np.append(window <= window.min(), False)
    best, best_key, start = (lo, lo + 1), None, None
    for i, flag in enumerate(low):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            key = (i - start, -abs(lo + (start + i) / 2 - target))
            if best_key is None or key > best_key:
                best, best_key = (lo + start, lo + i), key
            start = None
    return best


def _profile(rgb: np.ndarray) -> tuple[np.ndarray, int]:
    """(ink pixels per column, text height) of a dark-on-light line."""
    ink = ink_mask(rgb)
    return ink.sum(0), text_height(ink)


def _cut(cols: np.ndarray, th: int, w: int, max_aspect: float) -> list[Piece]:
    """`cut_points` on a line's `_profile`."""
    on = np.nonzero(cols > 0)[0]
    if len(on) == 0 or on[-1] - on[0] + 1 <= max_aspect * th:
        return [Piece(0, w)]
    left, right = int(on[0]), int(on[-1]) + 1
    n = math.ceil((right - left) / (PIECE_SHARE * max_aspect * th))
    step = (right - left) / n
    cuts, gaps = [0], []
    for k in range(1, n):
        target = left + k * step
        lo, hi = max(cuts[-1] + 1, int(target - step / 4)), min(right, int(target + step / 4) + 1)
        a, b = _widest_blank(cols, lo, hi, target)
        cuts.append((a + b) // 2)
        gaps.append((b - a) / th if cols[a:b].max(initial=0) == 0 else 0.0)
    cuts.append(w)
    return [Piece(cuts[0], cuts[1])] + [Piece(cuts[k], cuts[k + 1], gaps[k - 1]) for k in range(1, n)]


def cut_points(rgb: np.ndarray, max_aspect: float) -> list[Piece]:
    """Column ranges of the pieces of a line. A line whose ink is at most ``max_aspect`` text heights
    wide is one piece, ``[Piece(0, W)]``; a wider one is cut into the fewest pieces of about equal width
    no wider than ``PIECE_SHARE * max_aspect`` each, each cut in the widest blank run within a quarter
    piece of where an even split would cut (so pieces stay inside what the model reads whole)."""
    return _cut(*_profile(rgb), rgb.shape[1], max_aspect)


def readings(rgb: np.ndarray, max_aspect: float) -> list[list[Piece]]:
    """The ways to read a line, each a list of pieces; the recogniser keeps the best-scoring one.

    * ink at most ``PIECE_SHARE * max_aspect`` text heights wide: one way, whole;
    * wider than ``max_aspect``: one way, in pieces (`cut_points`);
    * in between: both whole and in smaller pieces (``cut_points(rgb, PIECE_SHARE * max_aspect)``). The
      model's own training lengths end here (the shipped model's 12 characters are 10-13 heights), and
      whether a line this wide reads better whole or cut depends on the line: the score decides.
    """
    cols, th = _profile(rgb)
    w = rgb.shape[1]
    cut = _cut(cols, th, w, PIECE_SHARE * max_aspect)
    if len(cut) == 1:
        return [[Piece(0, w)]]
    long = _cut(cols, th, w, max_aspect)
    return [long] if len(long) > 1 else [[Piece(0, w)], cut]


def join_texts(texts: list[str], pieces: list[Piece], space_gap: float = 0.33) -> str:
    """The pieces' texts as one line: a space where a wide blank (``space_gap`` text heights) parts two
    Latin letters or digits, else nothing (CJK text has no spaces)."""
    out = texts[0] if texts else ""
    for t, p in zip(texts[1:], pieces[1:]):
        if out and t and p.gap_before >= space_gap and out[-1].isascii() and out[-1].isalnum() \
                and t[0].isascii() and t[0].isalnum():
            out += " "
        out += t
    return out
