"""One command for a GPU or TPU machine: decode and train throughput, MFU, and the AOT prediction.

    python bench/accelerator.py                 # the full table (target: under 6 minutes on one device)
    python bench/accelerator.py --preset tiny --batches 1,8 --train_batch 8 --no-append   # a quick try

Needs only ``pip install -e ".[cuda]"`` (GPU) or ``pip install -e ".[tpu]"`` (TPU) from a clone: no
internet once installed, no weights, no data (the shipped model and ``examples/`` are in the repo;
the base model is randomly initialised, its speed does not depend on the weights). On a CPU it runs
too (no roofline: no chip figures), which is how it is tested.

Measured, all on the first device (``jax.devices()[0]``; one chip):

* decode: the ``--preset`` model (default base) in bfloat16, beam 5, 480x480, at batches 1/32/128,
  lines/s. Random weights never emit eos, so every line runs all ``--max_len`` steps: the
  worst case of the jitted beam search (real lines stop at their length).
* the shipped small model (``Recognizer.from_pretrained()``, its 7 test-time views and plain
  decoding), lines/s over the example lines tiled to a batch of 128.
* the train step of ``--preset`` (bfloat16 compute, float32 parameters and AdamW state, 480x480,
  32 target tokens) at the largest batch that fits (from the compiled program's memory analysis:
  one compile at ``--train_batch``, a second at the predicted largest batch), images/s and MFU
  (analytic model FLOPs, ``ofa_jax.flops``, forward + backward = 3x forward).
* next to each measurement, ``ofa_jax.aot``'s roofline floor for the same compiled program.

The base model runs in its scanned form (``OFA(scan=True)``: the same numbers, compile time flat in
depth) so that the whole benchmark fits in a few minutes; ``--unrolled`` measures the default form.

Prints a Markdown table and appends it to bench/RESULTS.md (``--no-append`` to skip) under a
heading with the device, the date and this command.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _put(x, abstract):
    """A host array placed as ``abstract`` (a ShapeDtypeStruct with a sharding) says."""
    import jax
    import numpy as np

    return jax.device_put(np.asarray(x).astype(abstract.dtype), abstract.sharding)


def _timed(fn, n_min=3, seconds=8.0):
    """Mean seconds per call of ``fn`` after one warm call, over at least ``n_min`` calls and ``seconds``."""
    import jax

    jax.block_until_ready(fn())  # warm (compiled already; first run allocates)
    n, t0 = 0, time.perf_counter()
    while n < n_min or time.perf_counter() - t0 < seconds:
        jax.block_until_ready(fn())
        n += 1
    return (time.perf_counter() - t0) / n


def decode_rows(preset, batches, max_len, seconds, device, scan):
    import flax.linen as nn
    import jax
    import numpy as np

    from ofa_jax import aot
    from ofa_jax.config import get_config
    from ofa_jax.model import init_params

    rows = []
    config = get_config(preset)
    variables = nn.meta.unbox(init_params(config, jax.random.PRNGKey(0), image_size=(480, 480), scan=scan))
    for b in batches:
        rep = aot.decode_program(preset, [device], device.platform, batch=b, beam=5, max_len=max_len,
                                 image_size=480, dtype="bfloat16", scan=scan)
        abs_vars, abs_images, abs_src = rep.abstract_args
        v = jax.tree.map(_put, {k: variables[k] for k in abs_vars}, abs_vars)
        rng = np.random.default_rng(0)
        images = _put(rng.uniform(-1, 1, abs_images.shape), abs_images)
        src = _put(np.full(abs_src.shape, 5), abs_src)
        dt = _timed(lambda: rep.compiled(v, images, src), seconds=seconds)
        r = rep.roofline()
        rows.append({"what": f"decode {preset} bf16 beam 5, batch {b}, {max_len} steps",
                     "measured": f"{b / dt:.1f} lines/s ({dt * 1e3:.1f} ms/batch)",
                     "mfu": f"{100 * rep.model_flops / dt / rep.chip['flops']:.1f}%" if rep.chip["flops"] else "n/a",
                     "aot": (f"floor {r['floor_s'] * 1e3:.1f} ms ({r['bound']}), {rep.memory['total'] / 2**30:.2f} GiB"
                             if r else f"{rep.memory['total'] / 2**30:.2f} GiB"),
                     "compile": f"{rep.compile_s:.0f} s"})
        print(rows[-1], flush=True)
    return rows


def shipped_rows(seconds, device, batch=128):
    import numpy as np

    from ofa_jax import Recognizer
    from ofa_jax.decode import expand_paths

    rows = []
    paths = expand_paths([os.path.join(ROOT, "examples")])
    for views, label in ((None, "7 views (default)"), ("id", "plain")):
        r = Recognizer.from_pretrained(batch_size=batch, devices=[device], views=views, compilation_cache=False)
        pixels = np.stack([r.preprocess(p) for p in paths])
        pixels = np.concatenate([pixels] * (-(-batch // len(pixels))))[:batch]
        t0 = time.perf_counter()
        texts = r.recognize_pixels(pixels)
        first = time.perf_counter() - t0
        dt = _timed(lambda: r._generate(r.variables, *r._batch(pixels)), seconds=seconds)
        rows.append({"what": f"shipped model, {label}, batch {batch}", "measured": f"{batch / dt:.1f} lines/s",
                     "mfu": "", "aot": "", "compile": f"{first:.0f} s (first call)"})
        print(rows[-1], texts[0], flush=True)
    return rows


def train_rows(preset, batch0, seconds, device, scan, max_batch=1024):
    import jax
    import numpy as np

    from ofa_jax import aot, train
    from ofa_jax.train_defaults import base

    def cfg_for(b):
        c = base()
        c.model.preset = preset
        c.model.dtype = "bfloat16"
        c.model.scan = scan
        c.data.image_size = 480
        c.data.max_target_tokens = 32
        c.batch_size = b
        c.total_steps = 1000
        c.mesh.num_devices = 1
        return c

    rep = aot.train_program(cfg_for(batch0), [device], device.platform)
    notes = [f"batch {batch0}: {rep.memory['total'] / 2**30:.2f} GiB"]
    limit = rep.chip["hbm"]
    if limit:
        fixed = rep.memory["arguments"]  # state (+ a small batch); the rest grows with the batch
        per = max(1, (rep.memory["total"] - fixed) / batch0)
        b = int(min(max_batch, (0.9 * limit - fixed) // per)) // 8 * 8
        while b > batch0:
            bigger = aot.train_program(cfg_for(b), [device], device.platform)
            if bigger.fits:
                rep = bigger
                break
            notes.append(f"batch {b} does not fit ({bigger.memory['total'] / 2**30:.1f} GiB)")
            b = b // 2 // 8 * 8
    b = int(rep.abstract_batch["image"].shape[0])
    s = rep.setup
    cfg = cfg_for(b)
    state = train.initial_state(cfg, s, lambda *_: None)
    rng = np.random.default_rng(0)
    t = 32
    ab = rep.abstract_batch
    target = rng.integers(4, 1000, (b, t))
    batch = {"image": _put(rng.integers(0, 256, ab["image"].shape), ab["image"]), "target": _put(target, ab["target"]),
             "prev_output_tokens": _put(np.concatenate([np.zeros((b, 1)), target[:, :-1]], 1), ab["prev_output_tokens"]),
             "target_mask": _put(np.ones((b, t), bool), ab["target_mask"])}
    key = jax.device_put(jax.random.PRNGKey(0), s.state_shardings.step)
    holder = {"state": state}

    def step():
        holder["state"], metrics = rep.compiled(holder["state"], batch, key)  # the state is donated
        return metrics

    dt = _timed(step, seconds=seconds)
    r = rep.roofline()
    fitted = "largest that fits" if limit else "no memory figure for this device"
    return [{"what": f"train step {preset} bf16, batch {b} ({fitted}), 480x480",
             "measured": f"{b / dt:.1f} images/s ({dt * 1e3:.0f} ms/step)",
             "mfu": f"{100 * rep.model_flops / dt / rep.chip['flops']:.1f}%" if rep.chip["flops"] else "n/a",
             "aot": (f"floor {r['floor_s'] * 1e3:.0f} ms ({r['bound']}), MFU <= {100 * r['mfu_bound']:.0f}%, "
                     f"{rep.memory['total'] / 2**30:.1f} GiB" if r else f"{rep.memory['total'] / 2**30:.1f} GiB"),
             "compile": f"{rep.compile_s:.0f} s", "notes": "; ".join(notes)}]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python bench/accelerator.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="base")
    ap.add_argument("--batches", default="1,32,128", help="decode batches")
    ap.add_argument("--max_len", type=int, default=32, help="decode steps (random weights run them all)")
    ap.add_argument("--train_batch", type=int, default=16, help="first train batch to compile (then the largest)")
    ap.add_argument("--shipped_batch", type=int, default=128, help="batch of the shipped model's rows")
    ap.add_argument("--seconds", type=float, default=8.0, help="timing window per measurement")
    ap.add_argument("--unrolled", action="store_true",
                    help="unrolled layer stacks (the default model form) instead of scanned (compiles faster)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: decode,shipped,train")
    ap.add_argument("--no-append", action="store_true", help="do not append the table to bench/RESULTS.md")
    args = ap.parse_args(argv)

    import jax

    device = jax.devices()[0]
    t_start = time.perf_counter()
    skip = set(filter(None, args.skip.split(",")))
    rows = []
    if "decode" not in skip:
        rows += decode_rows(args.preset, [int(b) for b in args.batches.split(",")], args.max_len, args.seconds, device,
                            not args.unrolled)
    if "shipped" not in skip:
        rows += shipped_rows(args.seconds, device, args.shipped_batch)
    if "train" not in skip:
        rows += train_rows(args.preset, args.train_batch, args.seconds, device, not args.unrolled)
    total = time.perf_counter() - t_start
    import jaxlib

    cmd = " ".join(["python bench/accelerator.py", *(sys.argv[1:] if argv is None else argv)])
    lines = [f"### {device.device_kind} ({device.platform}), {datetime.date.today().isoformat()}", "",
             f"`{cmd}` (jax {jax.__version__}, jaxlib {jaxlib.__version__}; one device; {total:.0f} s in all)", "",
             "| what | measured | MFU | AOT (same program) | compile |", "|---|---|---|---|---|"]
    lines += [f"| {r['what']} | {r['measured']} | {r['mfu']} | {r['aot']} | {r['compile']} |" for r in rows]
    lines += [f"\n{r['what']}: {r['notes']}" for r in rows if r.get("notes")]
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    if not args.no_append:
        path = os.path.join(ROOT, "bench", "RESULTS.md")
        with open(path, "a") as f:
            f.write("\n" + table)
        print(f"appended to {path}")


if __name__ == "__main__":
    main()
