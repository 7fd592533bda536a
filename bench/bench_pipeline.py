"""Input pipeline throughput: images/s of `ofa_jax.data.pipeline` at 480x480 (uint8 batches).

    python bench/bench_pipeline.py [--batches 40] [--batch-size 8] [--workers 0 2] [--output FILE]

Run from the repo root with ofa-jax installed (`pip install -e .`) or `PYTHONPATH=.`.

The source is in-memory JPEG text lines rendered like `ocr_synthetic_zh` (so decode + augment +
OCR resize + tokenise are all measured, storage reads are not). Train mode: shuffle, augmentation,
padding. The number to compare with is the train step's consumption rate (images/s of one
optimizer step); the pipeline must stay >= 10x above it.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from ofa_jax.data import corpus, pipeline, render
from ofa_jax.data.sources import ListSource


def make_source(n: int, seed: int = 0) -> tuple[ListSource, str]:
    fonts = render.find_cjk_fonts()
    font = fonts[0] if fonts else render.PIL_DEFAULT
    recs = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        text = (corpus.random_gb2312_line(rng, 4, 20) if fonts else corpus.random_alnum_line(rng, 4, 20))
        img = render.render_line(text, font, rng, render.RenderOptions(degrade=bool(i % 2)))
        recs.append({"id": str(i), "image": render.encode_image(img, "JPEG", 85), "text": text})
    return ListSource(recs), render.font_key(font)


def bench(src, tokenizer, workers: int, threads: int, batches: int, batch_size: int, warmup: int = 3):
    cfg = pipeline.PipelineConfig(batch_size=batch_size, image_size=480, train=True, seed=0,
                                  num_workers=workers, num_threads=threads)
    it = pipeline.make_iterator(src, cfg, tokenizer)
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        b = next(it)
    dt = time.perf_counter() - t0
    assert b["image"].shape == (batch_size, 480, 480, 3) and b["image"].dtype == np.uint8
    return batches * batch_size / dt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3, help="report the median of this many runs")
    ap.add_argument("--output", default=None, help="write a Markdown table here")
    args = ap.parse_args()

    src, font = make_source(256)
    tok = pipeline.default_tokenizer()
    rows = []
    for w in args.workers:
        for t in args.threads:
            rates = [bench(src, tok, w, t, args.batches, args.batch_size) for _ in range(args.repeats)]
            rows.append((w, t, float(np.median(rates)), min(rates), max(rates)))
            print(f"workers={w} threads={t}: {rows[-1][2]:.1f} img/s (min {min(rates):.1f}, max {max(rates):.1f})",
                  flush=True)

    if args.output:
        lines = [
            "# Input pipeline throughput",
            "",
            f"`python bench/bench_pipeline.py --batches {args.batches} --batch-size {args.batch_size}`: "
            "train mode (shuffle, augmentation, OCR resize+pad to 480x480 uint8, tokenise, pad), "
            f"in-memory JPEG text lines rendered with `{font}`; median of {args.repeats} runs of "
            f"{args.batches} batches after 3 warm-up batches.",
            "",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores visible, Python "
            f"{platform.python_version()}.",
            "",
            "| worker processes | threads per process | images/s (median) | min | max |",
            "|---|---|---|---|---|",
        ] + [f"| {w} | {t} | {r:.1f} | {lo:.1f} | {hi:.1f} |" for w, t, r, lo, hi in rows] + ["", ""]
        with open(args.output, "w", encoding="utf-8") as f:
            f.write("\n".join(lines))


if __name__ == "__main__":
    main()
