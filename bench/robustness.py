"""How a model's line accuracy moves when the test images are changed the ways fonts differ.

    python bench/robustness.py [--model DIR] [--data SPEC] [--split test] [--variants id,w0.85,...] [--views V,...]
                                [--fonts FILE_OR_DIR ...]

Decodes every line of the split once per variant (greedy unless ``--beam``) and prints line accuracy
(benchmark normalisation) per variant, overall and by line length (characters after normalisation).
Variants: ``id`` (as rendered); ``w0.85``/``w1.15`` (width x0.85 / x1.15: narrower or wider glyphs);
``pad10`` (a margin of 10% of the height on every side: after the line resize a long line's glyphs
shrink); ``thick``/``thin`` (a 3x3 min/max filter: dark strokes 1 px thicker/thinner at the image's
own size); ``blur`` (Gaussian, radius 0.8). The last two lines say what picking, per line, the
variant whose reading scored highest would read, and how many lines at least one variant reads.
Decoding is plain (``--views id``) unless ``--views`` names test-time views (``ofa_jax/views.py``),
which are then applied to every variant. ``--fonts`` renders the split's texts (a ``render:`` spec)
with other font files instead of its own: e.g. the val texts in fonts that neither training nor the
test split uses, a third set of unseen fonts on which to check choices made on val.

Why: the held-out fonts of the test split differ from the training fonts in glyph proportions, stroke
weight and metrics as much as in shapes; this measures how much each costs (bench/RESULTS.md, section
"image changes"), and whether ``data.augment_geometry`` training removes it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from PIL import ImageFilter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from ofa_jax.views import view_fn  # noqa: E402  (after the sys.path line)

LINES = "render:mixed,max_chars=12,heldout_fonts=2,degraded_fraction=0.3"

VARIANTS = {  # the geometric ones are test-time views (ofa_jax/views.py) under this bench's names
    "id": view_fn("id"),
    "w0.85": view_fn("w0.85"),
    "w1.15": view_fn("w1.15"),
    "pad10": view_fn("pad0.10"),
    "thick": lambda im: im.filter(ImageFilter.MinFilter(3)),
    "thin": lambda im: im.filter(ImageFilter.MaxFilter(3)),
    "blur": view_fn("blur0.8"),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model dir (default: the shipped model)")
    ap.add_argument("--data", default=LINES)
    ap.add_argument("--split", default="test")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--beam", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--limit", type=int, default=0, help="first N lines only (0: all)")
    ap.add_argument("--fonts", nargs="+", help="font files or directories to render the split with (render: specs)")
    ap.add_argument("--views", default="id", help="test-time views (default id: plain decoding, the model alone)")
    args = ap.parse_args(argv)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")

    from ofa_jax.data.metrics import normalize_benchmark
    from ofa_jax.data.pipeline import decode_image
    from ofa_jax.data.sources import load_eval_source
    from ofa_jax.recognizer import Recognizer

    src = load_eval_source(args.data, args.split, None)
    if args.fonts:
        from ofa_jax.data.render import font_key
        if not hasattr(src, "fonts"):
            ap.error("--fonts needs a render: data spec")
        files = [os.path.join(f, n) for f in args.fonts if os.path.isdir(f) for n in sorted(os.listdir(f))]
        src.fonts = sorted(files + [f for f in args.fonts if not os.path.isdir(f)], key=font_key)
        print("fonts:", ", ".join(os.path.basename(f) for f in src.fonts), flush=True)
    n = len(src) if not args.limit else min(args.limit, len(src))
    recs = [src[i] for i in range(n)]
    images = [decode_image(r["image"]) for r in recs]  # as evaluate and the pipeline read them
    truth = [normalize_benchmark(r["text"]) for r in recs]
    rec = Recognizer.from_pretrained(args.model, beam_size=args.beam, batch_size=args.batch_size, views=args.views)
    print(f"model {rec.model_dir.path}, {args.data} {args.split}: {n} lines, beam {args.beam}, views "
          f"{','.join(rec.views)}", flush=True)

    lengths = np.array([min(len(t), 12) for t in truth])
    groups = [(lo, hi) for lo, hi in ((1, 3), (4, 6), (7, 9), (10, 12)) if ((lengths >= lo) & (lengths <= hi)).any()]
    print(f"{'variant':8s} {'ACC %':>6s} " + " ".join(f"{f'{lo}-{hi} ch':>8s}" for lo, hi in groups) + "   s")
    right, scores = {}, {}
    for name in names:
        t = time.time()
        res = rec([VARIANTS[name](im) for im in images])
        right[name] = np.array([r.ok and normalize_benchmark(r.text) == g for r, g in zip(res, truth)])
        scores[name] = np.array([r.score if r.ok else -np.inf for r in res])
        by_len = " ".join(f"{100 * right[name][(lengths >= lo) & (lengths <= hi)].mean():8.2f}" for lo, hi in groups)
        print(f"{name:8s} {100 * right[name].mean():6.2f} {by_len} {time.time() - t:4.0f}", flush=True)
    print("lines   " + " " * 7 + " ".join(f"{((lengths >= lo) & (lengths <= hi)).sum():8d}" for lo, hi in groups))
    if len(names) > 1:
        best = np.argmax(np.stack([scores[k] for k in names]), 0)
        picked = np.array([right[names[b]][i] for i, b in enumerate(best)])
        print(f"highest-scoring variant per line: {100 * picked.mean():.2f}%")
        print(f"read by at least one variant: {100 * np.any([right[k] for k in names], 0).mean():.2f}%")


if __name__ == "__main__":
    main()
