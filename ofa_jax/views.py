"""Test-time views: read a line as several slightly changed copies and keep the reading they agree on.

A small model trained on a dozen fonts is brittle to how an unseen font differs: the same test lines
15% wider read 17 points worse (``bench/robustness.py``), and on a given line a stretched copy is
often read right where the original is not. With views, one beam search runs over all copies of a
line at once and scores each next token by the mean of the copies' log-probabilities: an ensemble
over inputs instead of models, and a product of experts (fairseq's model ensembles average
probabilities instead), so a reading wins when every view finds it plausible, not when one view is
sure of it. Cost: about one plain decode per view.

Views are names, applied to the RGB image before the model's resize:

* ``id`` -- the image as it is (a single ``id`` view is plain decoding, bit for bit);
* ``wF`` -- width scaled by ``F`` (``w1.15``: glyphs 15% wider, bicubic);
* ``padF`` -- a margin of ``F`` times the height on every side, in the corner pixel's colour;
* ``blurR`` -- Gaussian blur of radius ``R`` pixels.

The released OFA checkpoints are decoded with ``("id",)`` unless asked otherwise; a model dir can
name its own default in ``generation.json`` (``"views": [...]``), as the shipped small model does.
"""
from __future__ import annotations

import re
from typing import Callable, Iterable, Sequence, Union

from PIL import Image, ImageFilter

# the --views help of decode and evaluate
CLI_HELP = ("test-time views, e.g. id,w1.08,w0.85,w1.15: read each image as these changed copies in one search "
            "(ofa_jax/views.py; default: the model dir's, else id = plain decoding; cost: about one plain decode "
            "per view)")

_VIEW = re.compile(r"^(id|w|pad|blur)((?:\d+(?:\.\d*)?|\.\d+))?$")
_LIMITS = {"w": (0.25, 4.0), "pad": (0.0, 1.0), "blur": (0.0, 5.0)}


def _stretch(f: float) -> Callable[[Image.Image], Image.Image]:
    return lambda im: im.resize((max(1, round(im.width * f)), im.height), Image.BICUBIC)


def _pad(frac: float) -> Callable[[Image.Image], Image.Image]:
    def pad(im):
        p = round(im.height * frac)
        out = Image.new(im.mode, (im.width + 2 * p, im.height + 2 * p), im.getpixel((0, 0)))
        out.paste(im, (p, p))
        return out
    return pad


def _blur(r: float) -> Callable[[Image.Image], Image.Image]:
    return lambda im: im.filter(ImageFilter.GaussianBlur(r))


def view_fn(name: str) -> Callable[[Image.Image], Image.Image]:
    """``"w1.15"`` -> a function RGB PIL image -> RGB PIL image. ValueError names a bad view."""
    m = _VIEW.match(name.strip())
    kind, arg = (m.group(1), m.group(2)) if m else (None, None)
    if kind is None or (kind == "id") != (arg is None):
        raise ValueError(f"unknown view {name!r}: expected id, wF (width x F), padF (margin F x height) or blurR")
    if kind == "id":
        return lambda im: im
    x = float(arg)
    lo, hi = _LIMITS[kind]
    if not lo < x <= hi and not (kind == "pad" and x == 0):
        raise ValueError(f"view {name!r}: {kind} must be in ({lo}, {hi}]")
    return {"w": _stretch, "pad": _pad, "blur": _blur}[kind](x)


def parse_views(views: Union[str, Iterable[str], None]) -> tuple[str, ...]:
    """``"id,w1.15"`` or a sequence of names -> a tuple of checked, distinct names (None -> ``("id",)``)."""
    if views is None:
        return ("id",)
    names = [v.strip() for v in (views.split(",") if isinstance(views, str) else views)]
    if not names or any(not v for v in names):
        raise ValueError(f"views {views!r}: expected comma-separated view names such as id,w1.15")
    if len(set(names)) != len(names):
        raise ValueError(f"views {views!r}: a view is named twice")
    for v in names:
        view_fn(v)
    return tuple(names)


def apply_views(img: Image.Image, views: Sequence[str]) -> list[Image.Image]:
    return [view_fn(v)(img) for v in views]
