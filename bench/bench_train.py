"""Train step: ofa-jax vs the ModelScope PyTorch reference (same loss, AdamW, clipping), in the same run.

    python bench/bench_train.py --reference-python .venv-reference/bin/python [--presets tiny base] [--repeats 3] \
        [--remat none|layers|full] [--grad-accum K] [--accum-loop host unroll] [--skip-reference-for base] \
        [--freeze '^encoder/']

Batch 8, 480x480 images, 12-token prompt, 32 target tokens, fp32, random weights, BatchNorm frozen on
both sides (running statistics; OFA's fine-tuning default), dropout 0.1. One step = forward, label-smoothed
CE (eps 0.1) over non-pad tokens, backward, global-norm clip 1.0, AdamW (lr 5e-5, wd 0.01). Each
(implementation, preset) runs in its own process so its peak RSS is its own; the median of
``--repeats`` timed steps after one warm-up step is reported (JAX compile time separately).
Achieved GFLOP/s counts 3x the analytic forward FLOPs of ofa_jax/flops.py (forward + backward; the
recomputation of ``--remat`` is not counted: it is the price of the memory saved).
``--remat`` is ofa-jax's gradient checkpointing (``config.model.remat``); ``--grad-accum K`` runs the
batch of 8 as K sequential micro-batches (``config.grad_accum_steps``: the same gradient, activations
of 8/K images alive at a time); ``--accum-loop`` how (``config.grad_accum_loop``: on CPU "auto" is a
Python loop over jitted programs of ``--per-call`` micro-batches each (default: 2), "unroll" all K in one program). The ofa-jax worker also reports XLA's own
account of the step's temporary buffers (``temp_gb``). ``--freeze REGEX`` is ``config.optim.freeze`` on
both sides: the reference sets ``requires_grad=False`` on the PyTorch tensors whose ofa-jax path (through
the converter's name table) the expression matches, and gives AdamW only the others.
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

from bench.common import (peak_rss_gb, release_freed_host_memory, reset_peak_rss, run_worker,  # noqa: E402
                          window_peak_rss_gb)

BATCH, IMAGE, SRC_LEN, TGT_LEN = 8, 480, 12, 32



def _inputs():
    import numpy as np
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (BATCH, IMAGE, IMAGE, 3)).astype(np.uint8)
    src = rng.integers(4, 21000, (BATCH, SRC_LEN)).astype(np.int32)
    src[:, 0], src[:, -1] = 0, 2
    target = rng.integers(4, 21000, (BATCH, TGT_LEN)).astype(np.int32)
    target[:, -1] = 2
    prev = np.concatenate([np.zeros((BATCH, 1), np.int32), target[:, :-1]], axis=1)
    return images, src, target, prev


def worker_jax(preset, repeats, remat="none", accum=1, accum_loop="auto", per_call=0, freeze=""):
    import jax
    import jax.numpy as jnp
    sys.path.insert(0, os.path.join(ROOT, "configs"))
    from common import base
    from ofa_jax import train
    from ofa_jax.preprocess import NORMALIZE_LUT

    cfg = base()
    cfg.model.preset = preset
    cfg.data.image_size = IMAGE
    cfg.total_steps = 1000
    cfg.batch_size = BATCH
    cfg.mesh.num_devices = 1
    cfg.model.remat = remat
    cfg.grad_accum_steps = accum
    cfg.grad_accum_loop = accum_loop
    cfg.grad_accum_per_call = per_call
    cfg.optim.freeze = freeze
    s = train.build(cfg, None)
    state = train.initial_state(cfg, s, lambda m: None)
    images, src, target, prev = _inputs()
    batch = {"image": jnp.asarray(images), "target": jnp.asarray(target), "prev_output_tokens": jnp.asarray(prev),
             "target_mask": jnp.asarray(target != 1)}
    rng = jax.random.PRNGKey(1)
    lut = jnp.asarray(NORMALIZE_LUT)
    loop = train.accum_loop(cfg) if accum > 1 else "one program"
    label = loop
    if loop == "host":  # three small programs driven from Python (the CPU default for accum > 1)
        from jax.sharding import NamedSharding, PartitionSpec as P
        rep = NamedSharding(s.mesh, P())
        compiled = train.make_host_accum_step(s.model, s.tx, cfg, src[:1], lut, s.state_shardings,
                                              {k: rep for k in batch}, rep)
        label = f"host x{compiled.per_call}"
        step_args = (state.params, compiled.start(state, batch)[0], batch, rng, state.step, jnp.float32(1),
                     jnp.int32(0))
        # (an extra compile of the micro-batch program, outside the timed first call below)
        temp_gb = compiled.micro.lower(*step_args).compile().memory_analysis().temp_size_in_bytes / 1e9
        del step_args
        t0 = time.perf_counter()
        state, m = compiled(state, batch, rng)  # compiles the three programs (and runs one step)
        jax.block_until_ready(m)
        compile_s = time.perf_counter() - t0  # minus one step's time below
    else:
        from ofa_jax.xla_options import compiler_options
        step = jax.jit(train.make_train_step(s.model, s.tx, cfg, src[:1], lut), donate_argnums=(0,),
                       compiler_options=compiler_options())
        t0 = time.perf_counter()
        compiled = step.lower(state, batch, rng).compile()
        compile_s = time.perf_counter() - t0
        temp_gb = compiled.memory_analysis().temp_size_in_bytes / 1e9
    release_freed_host_memory()  # the compiler's freed heap (~1 GB for this program) back to the OS
    reset_peak_rss()  # run peak: from here (warm-up step included), without the compiler's own peak
    if loop != "host":  # (the host loop's first call was its warm-up step)
        state, m = compiled(state, batch, rng)
        jax.block_until_ready(m)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, m = compiled(state, batch, rng)
        jax.block_until_ready((state, m))
        times.append(time.perf_counter() - t0)
    if loop == "host":
        compile_s -= statistics.median(times)
    return dict(impl="ofa-jax", median_s=statistics.median(times), times=times, compile_s=compile_s,
                loss=float(m["loss"]), peak_rss_gb=peak_rss_gb(), run_peak_gb=window_peak_rss_gb(), temp_gb=temp_gb,
                remat=remat, grad_accum=accum, accum_loop=label, freeze=freeze,
                jax=jax.__version__)


def _torch_frozen(model, preset, pattern):
    """Names of the reference's parameters whose ofa-jax path matches ``pattern`` (the converter's table)."""
    import re

    from ofa_jax.config import PRESETS
    from tools.convert_weights.mapping import table

    path_of = {r.torch_key: r.flax_path.split("/", 1)[1] for r in table(PRESETS[preset])}
    # Tensors outside the table (the decoder's image-generation embeddings) take no part in OCR: no
    # gradient reaches them, and AdamW skips them either way.
    return {n for n, _ in model.named_parameters() if n in path_of and re.search(pattern, path_of[n])}


def worker_torch(preset, repeats, freeze=""):
    import numpy as np
    import torch
    from modelscope.models.multi_modal.ofa import OFAModel
    from modelscope.models.multi_modal.ofa.configuration_ofa import OFAConfig as MSConfig
    from modelscope.trainers.multi_modal.ofa.ofa_trainer_utils import AdjustLabelSmoothedCrossEntropyCriterion
    from ofa_jax.config import PRESETS

    class Args(dict):
        class tokenizer:  # noqa: N801
            pad_token_id = 1

    torch.set_num_threads(os.cpu_count() or 1)
    model = OFAModel(MSConfig(**PRESETS[preset].to_modelscope()))
    model.train()
    for m in model.modules():  # frozen BatchNorm, as ofa-jax's default
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    crit = AdjustLabelSmoothedCrossEntropyCriterion(Args(label_smoothing=0.1))
    frozen = _torch_frozen(model, preset, freeze) if freeze else set()
    for n, p in model.named_parameters():
        p.requires_grad_(n not in frozen)
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=5e-5, weight_decay=0.01)
    images, src, target, prev = _inputs()
    x = torch.from_numpy(images.astype(np.float32) / 127.5 - 1).permute(0, 3, 1, 2).contiguous()
    kw = dict(input_ids=torch.from_numpy(src).long(), patch_images=x, patch_masks=torch.ones(BATCH, dtype=torch.bool),
              decoder_input_ids=torch.from_numpy(prev).long(), return_dict=True)
    tgt = torch.from_numpy(target).long()

    def one():
        logits = model(**kw).logits
        loss, _, _ = crit.compute_loss(logits, {"target": tgt}, update_num=0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    release_freed_host_memory()  # as the ofa-jax worker does after compiling
    reset_peak_rss()  # a no-op for the reference (nothing to compile), kept symmetric
    one()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        loss = one()
        times.append(time.perf_counter() - t0)
    return dict(impl="reference", median_s=statistics.median(times), times=times, compile_s=0.0, loss=loss,
                peak_rss_gb=peak_rss_gb(), run_peak_gb=window_peak_rss_gb(), frozen_tensors=len(frozen),
                torch=torch.__version__)


def run_child(python, impl, preset, repeats, remat="none", accum=1, accum_loop="auto", per_call=0, freeze=""):
    argv = ["--worker", impl, "--preset", preset, "--repeats", repeats, "--freeze", freeze]
    if impl == "jax":
        argv += ["--remat", remat, "--grad-accum", accum, "--accum-loop", accum_loop, "--per-call", per_call]
    return run_worker(python, __file__, argv, f"{impl} {preset}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference-python", help="python of the reference env (omit to time ofa-jax only)")
    ap.add_argument("--presets", nargs="+", default=["tiny", "base"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--remat", nargs="+", default=["none"], choices=["none", "layers", "full"],
                    help="ofa-jax gradient checkpointing (config.model.remat); several: one row each")
    ap.add_argument("--grad-accum", type=int, nargs="+", default=[1],
                    help="ofa-jax micro-batches per step (config.grad_accum_steps); several: one row each")
    ap.add_argument("--accum-loop", nargs="+", default=["auto"], choices=["auto", "host", "unroll", "scan"],
                    help="how micro-batches run (config.grad_accum_loop; auto = host on CPU); several: one row each")
    ap.add_argument("--per-call", type=int, nargs="+", default=[0],
                    help="host loop: micro-batches unrolled per jitted call (config.grad_accum_per_call; 0 = auto: 2 "
                         "where it divides --grad-accum); several: one row each")
    ap.add_argument("--skip-reference-for", nargs="*", default=[],
                    help="presets whose reference step is not run (e.g. too little free memory for base)")
    ap.add_argument("--freeze", default="", help="config.optim.freeze on both sides (a regex over ofa-jax "
                    "parameter paths), e.g. '^encoder/'")
    ap.add_argument("--worker", choices=["jax", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--preset", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        if args.worker == "jax":
            print(json.dumps(worker_jax(args.preset, args.repeats, args.remat[0], args.grad_accum[0], args.accum_loop[0],
                                        args.per_call[0], args.freeze)))
        else:
            print(json.dumps(worker_torch(args.preset, args.repeats, args.freeze)))
        return

    from ofa_jax.flops import forward_flops
    from ofa_jax.config import PRESETS
    rows = []
    for preset in args.presets:
        gflop = 3 * BATCH * forward_flops(PRESETS[preset], IMAGE, SRC_LEN, TGT_LEN)["total"] / 1e9
        ref = None
        if args.reference_python and preset not in args.skip_reference_for:
            ref = run_child(args.reference_python, "torch", preset, args.repeats, freeze=args.freeze)
        for remat in args.remat:
            for accum in args.grad_accum:
                for loop in (args.accum_loop if accum > 1 else ["auto"]):
                    for k in (args.per_call if accum > 1 and loop in ("host", "auto") else [1]):
                        res = {"preset": preset, "train_gflop_per_step": gflop}
                        res["jax"] = run_child(sys.executable, "jax", preset, args.repeats, remat, accum, loop, k,
                                               args.freeze)
                        if ref:
                            res["ref"] = ref
                        rows.append(res)
                        print(json.dumps(res), file=sys.stderr, flush=True)
    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}; "
          f"{time.strftime('%Y-%m-%d')}; train step batch {BATCH}, {IMAGE}x{IMAGE}, {TGT_LEN} target tokens, fp32"
          f"{'; frozen: ' + repr(args.freeze) if args.freeze else ''}\n")
    print("| preset | remat | accum | loop | ofa-jax s | ref s | time ratio | ofa-jax GFLOP/s | ref GFLOP/s | compile s | "
          "XLA temp GB | ofa-jax peak GB | ref peak GB | mem ratio | ofa-jax run peak GB | ref run peak GB | "
          "run mem ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        j, ref = r["jax"], r.get("ref")
        g = r["train_gflop_per_step"]
        rs = f"{ref['median_s']:.2f}" if ref else "-"
        ratio = f"{j['median_s'] / ref['median_s']:.2f}x" if ref else "-"
        rg = f"{g / ref['median_s']:.1f}" if ref else "-"
        rm = f"{ref['peak_rss_gb']:.2f}" if ref else "-"
        mr = f"{j['peak_rss_gb'] / ref['peak_rss_gb']:.2f}x" if ref else "-"
        run_ref = f"{ref['run_peak_gb']:.2f}" if ref else "-"
        run_ratio = f"{j['run_peak_gb'] / ref['run_peak_gb']:.2f}x" if ref else "-"
        print(f"| {r['preset']} | {j['remat']} | {j['grad_accum']} | {j.get('accum_loop', '-')} | {j['median_s']:.2f} | {rs} | {ratio} | "
              f"{g / j['median_s']:.1f} | {rg} | {j['compile_s']:.1f} | {j['temp_gb']:.2f} | {j['peak_rss_gb']:.2f} | "
              f"{rm} | {mr} | {j['run_peak_gb']:.2f} | {run_ref} | {run_ratio} |")
    print("\n" + json.dumps(rows))


if __name__ == "__main__":
    main()
