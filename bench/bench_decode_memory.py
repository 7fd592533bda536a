"""A long decode keeps memory flat and compiles a fixed number of times.

    python bench/bench_decode_memory.py [--n 2000] [--batch-size 8] [--size 160] [--beam 5] [--max-len 16]

N generated text-line images of widely varying sizes (1 to 1,500 px wide, every aspect ratio, PNG and
JPEG, 1 in 100 corrupt so the error path runs too, a partial last batch) go through the ``Recognizer``
batch by batch exactly as ``python -m ofa_jax.decode`` streams them. The model is the ``micro``
preset with random weights (a model dir written to a temp dir): this measures the runtime - XLA
compilations and host memory - not accuracy. The persistent compilation cache is off so that every
compilation is counted.

Reported (one JSON line): compilations in total and after the first batch (bucketing: images are
resized and padded to one shape, batches padded to one size, so the count must not grow), resident
memory (RSS) after the first 10% of the images and at the end, growth per 1,000 images (least-squares
slope over the samples after that warm-up), peak RSS, images/s.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def rss_mb() -> float:
    """Current resident memory of this process (Linux /proc; ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_images(folder: str, n: int, seed: int = 0) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        if i % 100 == 57:  # corrupt: a truncated PNG
            p = os.path.join(folder, f"img_{i:05d}.png")
            with open(p, "wb") as f:
                f.write(b"\x89PNG\r\n\x1a\n" + rng.bytes(int(rng.integers(0, 64))))
            paths.append(p)
            continue
        w = int(np.exp(rng.uniform(0, np.log(1500))))
        h = int(np.exp(rng.uniform(0, np.log(200))))
        if rng.random() < 0.2:
            w, h = h, w  # vertical lines too
        a = np.full((h, w, 3), int(rng.integers(150, 256)), np.uint8)
        a[h // 4: max(h // 4 + 1, 3 * h // 4), :: max(1, int(rng.integers(2, 12)))] = rng.integers(0, 100, 3)
        fmt = "PNG" if i % 2 else "JPEG"
        p = os.path.join(folder, f"img_{i:05d}.{fmt.lower()}")
        Image.fromarray(a).save(p, format=fmt)
        paths.append(p)
    return paths


def write_model(folder: str, size: int, beam: int, max_len: int) -> str:
    import flax.linen as nn
    import jax

    from ofa_jax.config import PRESETS
    from ofa_jax.model import init_params
    from ofa_jax.modeldir import save_model_dir
    from tools.convert_weights.convert import BUNDLED_VOCAB

    cfg = PRESETS["micro"]
    variables = nn.meta.unbox(init_params(cfg, jax.random.PRNGKey(0), (size, size)))
    save_model_dir(folder, cfg, jax.device_get(variables), BUNDLED_VOCAB,
                   generation={"patch_image_size": size, "beam_size": beam, "max_len_b": max_len, "min_len": 1})
    return folder


class CompileCounter:
    """Counts XLA backend compilations (jax.monitoring events) from the moment it is created."""

    def __init__(self):
        import jax
        from jax._src import dispatch

        self.count = 0
        self._event = dispatch.BACKEND_COMPILE_EVENT

        def listener(event, duration, **kwargs):
            if event == self._event:
                self.count += 1

        jax.monitoring.register_event_duration_secs_listener(listener)


def run(n: int = 2000, batch_size: int = 8, size: int = 160, beam: int = 5, max_len: int = 16,
        sample_every: int = 1, workdir: str | None = None) -> dict:
    from ofa_jax.recognizer import Recognizer

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        os.makedirs(os.path.join(tmp, "images"))
        paths = write_images(os.path.join(tmp, "images"), n)
        model = write_model(os.path.join(tmp, "model"), size, beam, max_len)
        counter = CompileCounter()
        rec = Recognizer.from_pretrained(model, batch_size=batch_size, compilation_cache=False)
        compiles_at_load = counter.count
        samples = []  # (images done, rss MB)
        failed = ok = 0
        after_first = None
        for b, start in enumerate(range(0, len(paths), batch_size)):
            chunk = paths[start:start + batch_size]
            for r in rec(chunk):
                failed += r.error is not None
                ok += r.error is None
            if b == 0:
                after_first = counter.count
                t_first = time.perf_counter()
            if b % sample_every == 0 or start + batch_size >= len(paths):
                samples.append((start + len(chunk), rss_mb()))
        dt = time.perf_counter() - t_first
    warm = [s for s in samples if s[0] >= max(batch_size, n // 10)]
    x = np.array([s[0] for s in warm], float)
    y = np.array([s[1] for s in warm], float)
    slope = float(np.polyfit(x, y, 1)[0]) * 1000 if len(warm) >= 2 else float("nan")
    import resource

    return {
        "images": n, "decoded": ok, "failed": failed, "batch_size": rec.batch_size, "image_size": size, "beam": beam,
        "max_len": max_len, "compilations_total": counter.count, "compilations_at_load": compiles_at_load,
        "compilations_first_batch": after_first - compiles_at_load,
        "compilations_after_first_batch": counter.count - after_first,
        "rss_mb_after_warmup": round(float(y[0]), 1) if len(y) else None, "rss_mb_end": round(samples[-1][1], 1),
        "rss_growth_mb_per_1000_images": round(slope, 2), "rss_mb_min_max_after_warmup":
            [round(float(y.min()), 1), round(float(y.max()), 1)] if len(y) else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "images_per_s_after_first_batch": round((n - batch_size) / dt, 2) if dt > 0 else None,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--max-len", type=int, default=16)
    args = ap.parse_args(argv)
    out = run(args.n, args.batch_size, args.size, args.beam, args.max_len)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
