"""Teacher-forced forward: ofa-jax vs the ModelScope PyTorch reference, in the same run.

    python bench/bench_forward.py --reference-python .venv-reference/bin/python \
        [--presets tiny base] [--batches 1 8] [--repeats 3] [--batch-chunk 1] [--weights bfloat16]
    python bench/bench_forward.py --check-bf16 [--presets tiny base]   # logits error of bf16 weights

480x480 image, 12-token prompt, 32 target tokens, fp32, random weights. Each (implementation,
preset, batch) runs in its own process so peak RSS is its own; the median of ``--repeats`` timed runs
after one warm-up is reported, with compile time (JAX) separately. Prints a Markdown table and a JSON
line; paste the table into bench/RESULTS.md with the machine and date.

ofa-jax options: ``--batch-chunk K`` runs the batch K images at a time inside the one jitted call
(``ofa_jax.model.apply_in_chunks``: same numbers, the temporaries of a batch of K); ``--weights
bfloat16`` stores the weights in bfloat16 (``ofa_jax.model.cast_params``; compute, activations and
logits stay float32), ``--check-bf16`` reports what that costs in logits error.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import peak_rss_gb, release_freed_host_memory, run_worker  # noqa: E402

IMAGE, SRC_LEN, TGT_LEN = 480, 12, 32



def _inputs(batch):
    import numpy as np
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (batch, IMAGE, IMAGE, 3)).astype(np.float32)
    src = rng.integers(4, 21000, (batch, SRC_LEN))
    src[:, 0], src[:, -1] = 0, 2
    prev = rng.integers(4, 21000, (batch, TGT_LEN))
    prev[:, 0] = 0
    return images, src, prev


def random_variables(cfg, weights="float32"):
    """Random weights built leaf by leaf on the host, as loading a model dir would give them.

    (A jitted ``model.init`` peaks at ~4x the parameter bytes, which is not what a user pays:
    they load a converted checkpoint.)
    """
    import jax
    import numpy as np
    from ofa_jax.model import abstract_variables
    rng = np.random.default_rng(0)

    def fill(path, s):
        name = jax.tree_util.keystr(path)
        if "var" in name and "batch_stats" in name:
            return jax.device_put(np.ones(s.shape, s.dtype))
        x = jax.device_put((rng.standard_normal(s.shape, np.float32) * 0.02).astype(s.dtype))
        return x.astype(jax.numpy.dtype(weights)) if "params" in name and weights != "float32" else x
    return jax.tree_util.tree_map_with_path(fill, abstract_variables(cfg))


def worker_jax(preset, batch, repeats, chunk=0, weights="float32"):
    import jax
    from ofa_jax.config import PRESETS
    from ofa_jax.model import OFA, apply_in_chunks

    cfg = PRESETS[preset]
    variables = random_variables(cfg, weights)
    model = OFA(cfg)
    images, src, prev = _inputs(batch)
    from ofa_jax.xla_options import compiler_options
    fn = jax.jit(lambda v, *a: apply_in_chunks(lambda *x: model.apply(v, *x), chunk, *a),
                 compiler_options=compiler_options())
    t0 = time.perf_counter()
    compiled = fn.lower(variables, images, src, prev).compile()
    compile_s = time.perf_counter() - t0
    temp_gb = compiled.memory_analysis().temp_size_in_bytes / 1e9
    release_freed_host_memory()
    compiled(variables, images, src, prev).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        compiled(variables, images, src, prev).block_until_ready()
        times.append(time.perf_counter() - t0)
    a = jax.numpy.ones((2048, 2048))
    mm = jax.jit(lambda x: x @ x)
    mm(a).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(5):
        mm(a).block_until_ready()
    mm_gflops = 5 * 2 * 2048 ** 3 / (time.perf_counter() - t0) / 1e9
    return dict(impl="ofa-jax", median_s=statistics.median(times), times=times, compile_s=compile_s,
                peak_rss_gb=peak_rss_gb(), temp_gb=temp_gb, matmul_gflops=mm_gflops, chunk=chunk, weights=weights,
                jax=jax.__version__)


def check_bf16(preset, batch=2):
    """Max abs logits error of bfloat16-stored weights vs float32 (same random weights), and how often
    the arg-max token agrees."""
    import jax
    import numpy as np
    from ofa_jax.config import PRESETS
    from ofa_jax.model import OFA, cast_params

    cfg = PRESETS[preset]
    v32 = random_variables(cfg)
    images, src, prev = _inputs(batch)
    fn = jax.jit(OFA(cfg).apply)
    ref = np.asarray(fn(v32, images, src, prev))
    out = np.asarray(fn(cast_params(v32), images, src, prev))
    return dict(preset=preset, max_abs_err=float(np.abs(out - ref).max()), logits_abs_max=float(np.abs(ref).max()),
                logits_std=float(ref.std()), argmax_agree=float((out.argmax(-1) == ref.argmax(-1)).mean()))


def worker_torch(preset, batch, repeats):
    import torch
    from modelscope.models.multi_modal.ofa import OFAModel
    from modelscope.models.multi_modal.ofa.configuration_ofa import OFAConfig as MSConfig
    from ofa_jax.config import PRESETS

    torch.set_num_threads(os.cpu_count() or 1)
    model = OFAModel(MSConfig(**PRESETS[preset].to_modelscope())).eval()
    images, src, prev = _inputs(batch)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    kw = dict(input_ids=torch.from_numpy(src), patch_images=x, patch_masks=torch.ones(batch, dtype=torch.bool),
              decoder_input_ids=torch.from_numpy(prev), return_dict=True)
    release_freed_host_memory()  # as the ofa-jax worker does after compiling (no effect measured here)
    with torch.no_grad():
        model(**kw)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(**kw)
            times.append(time.perf_counter() - t0)
        a = torch.ones(2048, 2048)
        a @ a
        t0 = time.perf_counter()
        for _ in range(5):
            a @ a
        mm_gflops = 5 * 2 * 2048 ** 3 / (time.perf_counter() - t0) / 1e9
    return dict(impl="reference", median_s=statistics.median(times), times=times, compile_s=0.0,
                peak_rss_gb=peak_rss_gb(), matmul_gflops=mm_gflops, torch=torch.__version__)


def run_child(python, impl, preset, batch, repeats, chunk=0, weights="float32"):
    argv = ["--worker", impl, "--preset", preset, "--batch", batch, "--repeats", repeats]
    if impl == "jax":
        argv += ["--batch-chunk", chunk, "--weights", weights]
    return run_worker(python, __file__, argv, f"{impl} {preset} b{batch}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference-python", help="python of the reference env (omit to time ofa-jax only)")
    ap.add_argument("--presets", nargs="+", default=["tiny", "base"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-chunk", type=int, nargs="+", default=[0],
                    help="ofa-jax: images per chunk inside the call (0: all); several: one row each")
    ap.add_argument("--weights", nargs="+", default=["float32"], choices=["float32", "bfloat16"],
                    help="ofa-jax weight storage; several: one row each")
    ap.add_argument("--check-bf16", action="store_true", help="logits error of bfloat16 weights, then exit")
    ap.add_argument("--worker", choices=["jax", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--preset", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "jax":
        print(json.dumps(worker_jax(args.preset, args.batch, args.repeats, args.batch_chunk[0], args.weights[0])))
        return
    if args.worker:
        print(json.dumps(worker_torch(args.preset, args.batch, args.repeats)))
        return
    if args.check_bf16:
        for preset in args.presets:
            print(json.dumps(check_bf16(preset)))
        return

    from ofa_jax.flops import forward_flops
    from ofa_jax.config import PRESETS
    rows = []
    for preset in args.presets:
        gflop = forward_flops(PRESETS[preset], IMAGE, SRC_LEN, TGT_LEN)["total"] / 1e9
        for batch in args.batches:
            ref = run_child(args.reference_python, "torch", preset, batch, args.repeats) if args.reference_python else None
            for weights in args.weights:
                for chunk in args.batch_chunk:
                    if chunk and chunk >= batch and len(args.batch_chunk) > 1:
                        continue  # the same program as chunk 0
                    res = {"preset": preset, "batch": batch, "gflop_per_image": gflop}
                    res["jax"] = run_child(sys.executable, "jax", preset, batch, args.repeats, chunk, weights)
                    if ref:
                        res["ref"] = ref
                    rows.append(res)
                    print(json.dumps(res), file=sys.stderr, flush=True)
    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}; "
          f"{time.strftime('%Y-%m-%d')}\n")
    print("| preset | batch | chunk | weights | ofa-jax s | ref s | ratio | ofa-jax GFLOP/s | ref GFLOP/s | compile s | "
          "XLA temp GB | ofa-jax peak GB | ref peak GB | mem ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        j, f = r["jax"], r["gflop_per_image"] * r["batch"]
        ref = r.get("ref")
        ratio = f"{j['median_s'] / ref['median_s']:.2f}x" if ref else "-"
        mem = f"{j['peak_rss_gb'] / ref['peak_rss_gb']:.2f}x" if ref else "-"
        print(f"| {r['preset']} | {r['batch']} | {j['chunk']} | {j['weights']} | {j['median_s']:.2f} | {ref['median_s']:.2f} | {ratio} | "
              f"{f / j['median_s']:.0f} | {f / ref['median_s']:.0f} | {j['compile_s']:.1f} | {j['temp_gb']:.2f} | "
              f"{j['peak_rss_gb']:.2f} | {ref['peak_rss_gb']:.2f} | {mem} |" if ref else
              f"| {r['preset']} | {r['batch']} | {j['chunk']} | {j['weights']} | {j['median_s']:.2f} | - | - | {f / j['median_s']:.0f} | - | "
              f"{j['compile_s']:.1f} | {j['temp_gb']:.2f} | {j['peak_rss_gb']:.2f} | - | - |")
    mm = rows[0]["jax"]["matmul_gflops"], (rows[0]["ref"]["matmul_gflops"] if "ref" in rows[0] else None)
    print(f"\n2048^2 fp32 matmul in the same run: JAX {mm[0]:.0f} GFLOP/s"
          + (f", PyTorch {mm[1]:.0f} GFLOP/s" if mm[1] else ""))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
