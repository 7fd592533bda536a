"""Beam-search decoding: ofa-jax vs the ModelScope PyTorch generator, in the same run.

    python bench/bench_decode.py --reference-python .venv-reference/bin/python [--preset base]

Reported (random weights, 480x480, fp32):
* beam 5, exactly 32 generated tokens (min_len = max_len = 32), batch 1: median of 3 after warm-up,
  both implementations, and the ratio;
* ofa-jax images/s at batch 16, beam 5 and greedy;
* compile time, and start-up of a second ``Recognizer`` process (persistent compilation cache warm)
  vs the first (cold cache): from process start to the first decoded image;
* peak RSS of each process.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import peak_rss_gb, run_worker  # noqa: E402
T0 = time.perf_counter()
TOKENS = 32



def _images(batch):
    import numpy as np
    return np.random.default_rng(0).uniform(-1, 1, (batch, 480, 480, 3)).astype(np.float32)


def worker_jax(preset, batch, beam, repeats):
    import jax
    from bench.bench_forward import random_variables
    from ofa_jax.config import PRESETS
    from ofa_jax.decoding import GenerationConfig, make_generate_fn
    from ofa_jax.model import OFA
    from ofa_jax.tokenizer import OFATokenizer

    cfg = PRESETS[preset]
    variables = random_variables(cfg)
    gen = GenerationConfig(beam_size=beam, max_len_b=TOKENS, min_len=TOKENS)
    fn = make_generate_fn(OFA(cfg), gen)
    import numpy as np
    src = np.asarray([OFATokenizer.default().encode_prompt()] * batch, np.int32)
    images = _images(batch)
    t = time.perf_counter()
    compiled = fn.lower(variables, images, src).compile()
    compile_s = time.perf_counter() - t
    out = compiled(variables, images, src)
    assert int(out.lengths.min()) == TOKENS + 1, out.lengths  # 32 tokens + eos
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(compiled(variables, images, src))
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return dict(median_s=med, times=times, images_per_s=batch / med, compile_s=compile_s, peak_rss_gb=peak_rss_gb())


def worker_torch(preset, batch, beam, repeats):
    import torch
    from modelscope.models.multi_modal.ofa import OFAModel, OFATokenizerZH
    from modelscope.models.multi_modal.ofa.configuration_ofa import OFAConfig as MSConfig
    from modelscope.models.multi_modal.ofa.generate import sequence_generator as sg
    from ofa_jax.config import PRESETS

    torch.set_num_threads(os.cpu_count() or 1)
    model = OFAModel(MSConfig(**PRESETS[preset].to_modelscope())).eval()
    d = tempfile.mkdtemp()
    shutil.copy(os.path.join(ROOT, "ofa_jax", "assets", "vocab_zh.txt"), os.path.join(d, "vocab.txt"))
    tok = OFATokenizerZH.from_pretrained(d)
    tok.add_tokens([f"<code_{i}>" for i in range(8192)])
    tok.add_tokens([f"<bin_{i}>" for i in range(1000)])
    gen = sg.SequenceGenerator(tokenizer=tok, beam_size=beam, max_len_b=TOKENS, min_len=TOKENS,
                               no_repeat_ngram_size=0)
    src = torch.tensor([[0, 1749, 4279, 681, 4642, 3156, 2103, 3225, 788, 724, 140, 2]] * batch)
    x = torch.from_numpy(_images(batch)).permute(0, 3, 1, 2).contiguous()
    sample = {"net_input": {"input_ids": src, "patch_images": x, "patch_masks": torch.ones(batch, dtype=torch.bool)}}
    with torch.no_grad():
        hyps = gen.generate([model], sample)
        assert len(hyps[0][0]["tokens"]) == TOKENS + 1
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            gen.generate([model], sample)
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return dict(median_s=med, times=times, images_per_s=batch / med, compile_s=0.0, peak_rss_gb=peak_rss_gb())


def worker_startup(model_dir, cache_dir):
    """Process start -> first decoded image, through the public API (what `ofa_jax.decode` does)."""
    os.environ["OFA_JAX_CACHE_DIR"] = cache_dir
    import numpy as np
    from ofa_jax.recognizer import Recognizer
    rec = Recognizer.from_pretrained(model_dir, batch_size=1)
    rec(np.full((48, 320, 3), 200, np.uint8))
    return dict(startup_s=time.perf_counter() - T0, peak_rss_gb=peak_rss_gb())


def child(python, *args):
    return run_worker(python, __file__, ["--worker", *args], f"worker {args}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference-python")
    ap.add_argument("--preset", default="base")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--throughput-batch", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="only the batch-1 comparison with the reference")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, rest = args.worker[0], args.worker[1:]
        if kind == "startup":
            print(json.dumps(worker_startup(*rest)))
        else:
            preset, batch, beam, repeats = rest[0], int(rest[1]), int(rest[2]), int(rest[3])
            print(json.dumps((worker_jax if kind == "jax" else worker_torch)(preset, batch, beam, repeats)))
        return

    res = {}
    res["jax_b1_beam5"] = child(sys.executable, "jax", args.preset, 1, 5, args.repeats)
    print(json.dumps(res), file=sys.stderr, flush=True)
    if args.reference_python:
        res["ref_b1_beam5"] = child(args.reference_python, "torch", args.preset, 1, 5, args.repeats)
        print(json.dumps(res), file=sys.stderr, flush=True)
    b = args.throughput_batch
    if args.quick:
        j, r = res["jax_b1_beam5"], res.get("ref_b1_beam5")
        print(f"{args.preset} beam 5, {TOKENS} tokens, batch 1: ofa-jax {j['median_s']:.2f} s"
              + (f", reference {r['median_s']:.2f} s, ratio {j['median_s'] / r['median_s']:.3f}x" if r else ""))
        print(json.dumps(res))
        return
    res[f"jax_b{b}_beam5"] = child(sys.executable, "jax", args.preset, b, 5, 2)
    res[f"jax_b{b}_greedy"] = child(sys.executable, "jax", args.preset, b, 1, 2)
    print(json.dumps(res), file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:  # start-up through the public API, cold then warm cache
        import flax.linen as nn
        from ofa_jax.config import PRESETS
        from ofa_jax.model import init_params
        from ofa_jax.modeldir import save_model_dir
        md = os.path.join(tmp, "model")
        save_model_dir(md, PRESETS[args.preset], nn.meta.unbox(init_params(PRESETS[args.preset])),
                       os.path.join(ROOT, "ofa_jax", "assets", "vocab_zh.txt"))
        cache = os.path.join(tmp, "cache")
        res["startup_cold"] = child(sys.executable, "startup", md, cache)
        res["startup_warm"] = child(sys.executable, "startup", md, cache)

    j, r = res["jax_b1_beam5"], res.get("ref_b1_beam5")
    print(f"\n{args.preset}, beam 5, {TOKENS} tokens, 480x480, fp32. {platform.machine()}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d')}\n")
    print("| measurement | ofa-jax | reference | ratio |\n|---|---|---|---|")
    if r:
        print(f"| batch 1, beam 5: s/image (median of {args.repeats}) | {j['median_s']:.2f} | {r['median_s']:.2f} | "
              f"{j['median_s'] / r['median_s']:.3f}x |")
        print(f"| peak RSS GB | {j['peak_rss_gb']:.2f} | {r['peak_rss_gb']:.2f} | {j['peak_rss_gb'] / r['peak_rss_gb']:.2f}x |")
    else:
        print(f"| batch 1, beam 5: s/image | {j['median_s']:.2f} | - | - |")
    print(f"| compile (beam 5, batch 1) s | {j['compile_s']:.1f} | - | - |")
    for k in (f"jax_b{b}_beam5", f"jax_b{b}_greedy"):
        print(f"| batch {b}, {'greedy' if 'greedy' in k else 'beam 5'}: images/s | {res[k]['images_per_s']:.2f} | - | - |"
              f" ")
    print(f"| start-up to first image, cold cache s | {res['startup_cold']['startup_s']:.1f} | - | - |")
    print(f"| start-up to first image, warm cache s | {res['startup_warm']['startup_s']:.1f} | - | - |")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
