"""The page benchmark: ofa-jax's page pipeline next to RapidOCR's full pipeline (det + cls + rec,
default settings), on the same generated pages (``ofa_jax.detect.synth``: documents, two-column
pages, receipts, signs, half of them photographed at an angle; held-out texts).

    python -m tools.convert_detector.bench_pages [--pages 24] [--seed 1000]   # needs rapidocr

Reports detection precision / recall / H-mean (IoU 0.5), end-to-end line accuracy (a true line found
and read exactly, benchmark normalisation) and NED, and pages/s on this machine (after warm-up:
each side reads the first page once before the clock starts).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.convert_detector.bench_pages")
    ap.add_argument("--pages", type=int, default=24)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from rapidocr import RapidOCR
    from ofa_jax.detect.synth import KINDS, render_page
    from ofa_jax.pages import PageReader, page_scores, summarize

    pages = [render_page(args.seed + i, KINDS[i % len(KINDS)], warp=bool(i // len(KINDS) % 2)) for i in range(args.pages)]
    arrays = [np.asarray(p.image) for p in pages]

    reader = PageReader.from_pretrained()
    reader(arrays[:1])
    t = time.perf_counter()
    ours = reader(arrays)
    t_ours = time.perf_counter() - t

    engine = RapidOCR(params={"Global.log_level": "error"})
    engine(arrays[0][..., ::-1].copy())
    t = time.perf_counter()
    theirs = [engine(a[..., ::-1].copy()) for a in arrays]   # RapidOCR takes arrays as BGR
    t_theirs = time.perf_counter() - t

    rows = {"ofa-jax (PP-OCRv6 det in JAX + OFA small)": [], "RapidOCR (PP-OCRv6 det + cls + rec, ONNX)": []}
    for page, a, b in zip(pages, ours, theirs):
        rows["ofa-jax (PP-OCRv6 det in JAX + OFA small)"].append(
            page_scores([l.box for l in a.lines], [l.text for l in a.lines], page.boxes, page.texts))
        boxes = [] if b.boxes is None else list(b.boxes)
        rows["RapidOCR (PP-OCRv6 det + cls + rec, ONNX)"].append(
            page_scores(boxes, list(b.txts or []), page.boxes, page.texts))
    out = {}
    for (name, r), secs in zip(rows.items(), (t_ours, t_theirs)):
        out[name] = {**summarize(r), "pages_per_s": len(pages) / secs}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{len(pages)} pages, {out[next(iter(out))]['lines']} lines\n")
    print("| pipeline | det P | det R | det H-mean | e2e line acc | NED | pages/s |")
    print("|---|---|---|---|---|---|---|")
    for name, s in out.items():
        print(f"| {name} | {s['precision']:.3f} | {s['recall']:.3f} | {s['hmean']:.3f} | {s['line_acc']:.3f} | "
              f"{s['ned']:.3f} | {s['pages_per_s']:.2f} |")
    return 0


if __name__ == "__main__":
    from ofa_jax.cli import run

    run(main)
