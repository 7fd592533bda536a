"""Lines/s delivered to the train loop: the grain pipeline vs the replay buffer (`ofa_jax.data.replay`).

    python bench/bench_replay.py [--workers 1] [--batch-size 64] [--batches 20] [--reuse 4] [--output FILE]

Run from the repo root with ofa-jax installed. Data: the shipped model's training lines
(``configs/ocr_zh_small_gpu.py``: ``render:`` lines at 32x320, augmentation on). Measured in one run:

* pipeline: batches of the grain pipeline with ``--workers`` processes (what a train loop waits on);
* replay, new lines: the rate at which the same number of workers prepares new lines into the buffer;
* replay, draws: batches drawn from a full 16,384-line window that needs no new lines (a step's cost);
* replay at ``--reuse``: min(draws, reuse x new lines), the rate a fast accelerator can train at.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--reuse", type=float, default=4.0)
    ap.add_argument("--output", default=None, help="append a Markdown table here")
    args = ap.parse_args()

    sys.path.insert(0, os.path.join(ROOT, "configs"))
    from ocr_zh_small_gpu import get_config
    from ofa_jax import train
    from ofa_jax.data.replay import ReplayIterator, replay_iterator
    from ofa_jax.tokenizer import OFATokenizer

    cfg = get_config()
    cfg.batch_size, cfg.data.num_workers = args.batch_size, args.workers
    tok = OFATokenizer.default()
    src = train.load_config_source(cfg, "train")
    b, n = args.batch_size, args.batches

    it = train.ShardedIterator(src, cfg, tok)
    for _ in range(2 * max(1, args.workers)):
        next(it)
    t0 = time.perf_counter()
    for _ in range(n):
        next(it)
    pipe = n * b / (time.perf_counter() - t0)
    del it

    # new lines: reuse 1 (every step needs `b` new lines), after the workers' start-up
    rit = replay_iterator(src, train.train_pipeline_config(cfg, 0, 1), tok, reuse=1, window=(n + 2) * b,
                          workers=args.workers)
    next(rit)
    next(rit)
    t0 = time.perf_counter()
    for _ in range(n):
        next(rit)
    fresh = n * b / (time.perf_counter() - t0)
    # draws: from a full 16,384-line window (0.5 GB, more than the CPU caches hold) that needs no new
    # lines; what the rows hold does not change the cost, so it is filled with random bytes
    rit.close()
    window = 16384
    rit2 = ReplayIterator(rit.dataset, b, rit.layout["image"][1][1:], rit.layout["target"][1][1], reuse=b,
                          window=window, workers=0)
    rit2._start()
    rit2._buf["image"][:] = np.random.default_rng(0).integers(0, 256, rit2._buf["image"].shape, dtype=np.uint8)
    rit2._done = window
    last = (window - b) // rit2.fresh  # hi(last) == window: every draw ranges over the whole window
    k = 200
    t0 = time.perf_counter()
    for _ in range(k):
        rit2.step = last
        next(rit2)
    draws = k * b / (time.perf_counter() - t0)
    rit2.close()
    at_reuse = min(draws, args.reuse * fresh)

    rows = [("grain pipeline", pipe), ("replay: new lines prepared", fresh), ("replay: draws from the window", draws),
            (f"replay at reuse {args.reuse:g}", at_reuse)]
    head = (f"{datetime.date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, {args.workers} worker process(es), "
            f"batch {b}, 32x320 lines of configs/ocr_zh_small_gpu.py")
    table = [head, "", "| source | lines/s | vs pipeline |", "|---|---|---|"]
    table += [f"| {name} | {r:,.0f} | {r / pipe:.2f}x |" for name, r in rows]
    print("\n".join(table))
    if args.output:
        with open(args.output, "a") as f:
            f.write("\n" + "\n".join(table) + "\n")


if __name__ == "__main__":
    main()
