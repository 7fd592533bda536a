"""Synthetic pages with known line boxes: documents (one or two columns), receipts and signs, some
rotated, in perspective or "photographed" (blur, noise, uneven light). Used for the detector's test
fixtures, the sample pages in ``examples/pages/`` and the page benchmark.

Texts are the held-out evaluation lines (``ofa_jax/data/eval_exclude.txt``: the shipped recogniser
never trained on them), so end-to-end accuracy on these pages is honest. Every line's ground truth
is the quadrilateral of its ink box with a margin (``GT_MARGIN``), after the page's warp, and
its text.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

KINDS = ("document", "columns", "receipt", "sign")
GT_MARGIN = 0.2   # ground-truth boxes: the ink box grown by this fraction of the line's height


@dataclasses.dataclass
class Page:
    image: Image.Image
    boxes: list          # (4, 2) float32 quads: top-left, top-right, bottom-right, bottom-left
    texts: list
    kind: str


def eval_texts() -> list[str]:
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "eval_exclude.txt")
    with open(path, encoding="utf-8") as f:
        return [t.strip() for t in f if t.strip() and " " not in t.strip()]


def _homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """3x3 matrix mapping the 4 ``src`` points to ``dst`` (direct linear solve)."""
    a, b = [], []
    for (x, y), (u, v) in zip(src, dst):
        a += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        b += [u, v]
    h = np.linalg.solve(np.asarray(a, np.float64), np.asarray(b, np.float64))
    return np.append(h, 1.0).reshape(3, 3)


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.c_[pts, np.ones(len(pts))] @ m.T
    return (p[:, :2] / p[:, 2:]).astype(np.float32)


class _Writer:
    def __init__(self, img: Image.Image, fonts: Sequence[str], rng: np.random.Generator):
        from ofa_jax.data.render import font_covers
        self.draw, self.fonts, self.rng, self.covers = ImageDraw.Draw(img), list(fonts), rng, font_covers
        self.boxes, self.texts = [], []

    def font(self, text: str, size: int):
        from ofa_jax.data.render import load_font
        ok = [f for f in self.fonts if self.covers(f, text)] or self.fonts
        return load_font(ok[int(self.rng.integers(len(ok)))], size)

    def line(self, x: float, y: float, text: str, font, fill, anchor_right: bool = False) -> float:
        """Writes ``text`` with its top-left (or top-right) ink corner at (x, y); returns its height."""
        x0, y0, x1, y1 = self.draw.textbbox((0, 0), text, font=font)
        if anchor_right:
            x -= x1 - x0
        self.draw.text((x - x0, y - y0), text, font=font, fill=fill)
        m = GT_MARGIN * (y1 - y0)   # annotation boxes leave a margin around the ink
        self.boxes.append(np.array([[x - m, y - m], [x + x1 - x0 + m, y - m], [x + x1 - x0 + m, y + y1 - y0 + m],
                                    [x - m, y + y1 - y0 + m]], np.float32))
        self.texts.append(text)
        return y1 - y0


def render_page(seed: int, kind: Optional[str] = None, fonts: Optional[Sequence[str]] = None,
                texts: Optional[Sequence[str]] = None, warp: Optional[bool] = None) -> Page:
    """One page, reproducible from ``seed`` (with the same fonts installed)."""
    from ofa_jax.data.render import find_cjk_fonts
    rng = np.random.default_rng(seed)
    fonts = list(fonts or find_cjk_fonts())
    if not fonts:
        raise RuntimeError("no CJK font found (pip install paperang-p2-fonts-cjk)")
    pool = list(texts or eval_texts())
    kind = kind or KINDS[int(rng.integers(len(KINDS)))]

    def text(lo=4, hi=16):
        t = pool[int(rng.integers(len(pool)))]
        return t[:int(rng.integers(lo, hi + 1))]

    if kind == "sign":
        w, h = int(rng.integers(480, 720)), int(rng.integers(240, 400))
        bg = tuple(int(c) for c in rng.integers(20, 200, 3))
        ink = (255, 255, 255) if sum(bg) < 380 else (0, 0, 0)
    else:
        w, h = ((int(rng.integers(300, 380)), int(rng.integers(520, 680))) if kind == "receipt"
                else (int(rng.integers(560, 720)), int(rng.integers(640, 840))))
        bg = tuple(int(c) for c in rng.integers(225, 256, 3))
        ink = tuple(int(c) for c in rng.integers(0, 60, 3))
    img = Image.new("RGB", (w, h), bg)
    wr = _Writer(img, fonts, rng)
    margin = int(rng.integers(24, 40))
    if kind == "sign":
        n = int(rng.integers(1, 3))
        y = h / 2 - n * 45
        for _ in range(n):
            t = text(3, 8)
            f = wr.font(t, int(rng.integers(48, 64)))
            tw = wr.draw.textlength(t, font=f)
            y += wr.line(max(margin, (w - tw) / 2), y, t, f, ink) + int(rng.integers(20, 40))
    elif kind == "receipt":
        t = text(4, 8)
        f = wr.font(t, 26)
        y = margin + wr.line(max(margin, (w - wr.draw.textlength(t, font=f)) / 2), margin, t, f, ink) + 24
        size = int(rng.integers(17, 21))
        while y < h - margin - 2 * size:
            t = text(2, 7)
            f = wr.font(t, size)
            wr.line(margin, y, t, f, ink)
            price = f"{rng.integers(1, 300)}.{rng.integers(0, 100):02d}"
            y += wr.line(w - margin, y, price, wr.font(price, size), ink, anchor_right=True) + int(size * 0.8)
    else:
        cols = 2 if kind == "columns" else 1
        t = text(5, 10)
        f = wr.font(t, int(rng.integers(30, 38)))
        y0 = margin + wr.line(max(margin, (w - wr.draw.textlength(t, font=f)) / 2), margin, t, f, ink) + 28
        size = int(rng.integers(18, 24))
        gutter = 36
        col_w = (w - 2 * margin - (cols - 1) * gutter) / cols
        for c in range(cols):
            x, y = margin + c * (col_w + gutter), y0 + (c * int(rng.integers(0, size)))
            while y < h - margin - 2 * size:
                t = text(3, 18)
                f = wr.font(t, size)
                while len(t) > 1 and wr.draw.textlength(t, font=f) > col_w:
                    t = t[:-1]
                y += wr.line(x, y, t, f, ink) + int(size * rng.uniform(0.7, 1.4))
                if rng.random() < 0.15:
                    y += size  # a paragraph break
    boxes = wr.boxes
    warp = bool(rng.random() < 0.5) if warp is None else warp
    if warp:  # a photo of the page: perspective, a small rotation, margins of background
        pad = 40
        src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
        jit = rng.uniform(-0.06, 0.06, (4, 2)) * [w, h]
        ang = np.deg2rad(rng.uniform(-8, 8))
        c, s = np.cos(ang), np.sin(ang)
        dst = (src - [w / 2, h / 2]) @ np.array([[c, s], [-s, c]]) + [w / 2 + pad, h / 2 + pad] + jit
        W, H = int(w + 2 * pad), int(h + 2 * pad)
        m = _homography(src, dst)
        inv = np.linalg.inv(m)
        back = tuple(int(v) for v in rng.integers(60, 160, 3))
        img = img.transform((W, H), Image.PERSPECTIVE, tuple((inv / inv[2, 2]).ravel()[:8]), Image.BICUBIC,
                            fillcolor=back)
        boxes = [_apply(m, b) for b in boxes]
        arr = np.asarray(img, np.float32)
        yy, xx = np.mgrid[0:H, 0:W]
        light = 1.0 - rng.uniform(0.1, 0.35) * (xx / W if rng.random() < 0.5 else yy / H)
        arr = arr * light[..., None] + rng.normal(0, rng.uniform(2, 8), arr.shape)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    return Page(img, [np.asarray(b, np.float32) for b in boxes], list(wr.texts), kind)


def page_set(n: int, seed: int = 1000) -> list[Page]:
    """The benchmark's mix: the kinds in turn, every other round of them photographed at an angle."""
    return [render_page(seed + i, KINDS[i % len(KINDS)], warp=bool(i // len(KINDS) % 2)) for i in range(n)]


def main(argv=None) -> int:
    """python -m ofa_jax.detect.synth OUT_DIR [--pages 16] [--seed 1000]: a page set for
    ``python -m ofa_jax.evaluate --pages OUT_DIR`` (PNG pages + labels.json)."""
    import argparse
    from ofa_jax.detect.pageset import save_page_set
    ap = argparse.ArgumentParser(prog="python -m ofa_jax.detect.synth",
                                 description="Writes generated pages (PNG) and their labels.json to OUT_DIR: a page "
                                             "set for python -m ofa_jax.evaluate --pages OUT_DIR.")
    ap.add_argument("out", metavar="OUT_DIR")
    ap.add_argument("--pages", type=int, default=16, help="how many pages (default 16)")
    ap.add_argument("--seed", type=int, default=1000, help="seed of the first page (default 1000)")
    args = ap.parse_args(argv)
    if args.pages < 1:
        ap.error("--pages must be >= 1")
    try:
        save_page_set(args.out, page_set(args.pages, args.seed))
    except (OSError, RuntimeError) as e:
        print(f"error: {args.out}: {e}", file=sys.stderr)
        return 2
    print(f"{args.pages} pages -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from ofa_jax.cli import run

    run(main)
