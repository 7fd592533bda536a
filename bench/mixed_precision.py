"""bfloat16 against float32 compute on a trained model: same text? how far apart are the logits?

    python bench/mixed_precision.py [--model DIR] [--limit 2000] [--data render:mixed,...] [--split test]

The default is the shipped model on its held-out test split (the lines and fonts of the accuracy in
the README), decoded plainly (no test-time views), greedy as the model dir says. Reports:

* text agreement: the share of lines whose bfloat16 reading equals the float32 one, and the ACC of
  each against the labels;
* logits: teacher-forced on the float32 reading, the max and mean absolute difference of the
  log-probabilities (bfloat16 compute vs float32), over every position of the first 256 lines.

bfloat16 here is the accelerator setting: parameters rounded to bfloat16 and matrix products in
bfloat16, with attention softmax, LayerNorm and the log-softmax in float32 (ofa_jax/model.py says
where). On a CPU it is slower than float32 (XLA:CPU has no bfloat16 matrix units); the numbers, not
the speed, are the point.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

HELDOUT = "render:mixed,max_chars=12,heldout_fonts=2,degraded_fraction=0.3"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python bench/mixed_precision.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model dir (default: the shipped model)")
    ap.add_argument("--data", default=HELDOUT)
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--logit_lines", type=int, default=256)
    ap.add_argument("--batch_size", type=int, default=32)
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from ofa_jax import Recognizer
    from ofa_jax.data.metrics import LineMetrics
    from ofa_jax.data.sources import load_eval_source

    src = load_eval_source(args.data, args.split)
    n = min(args.limit, len(src))
    recs = [src[i] for i in range(n)]
    labels = [r["text"] if isinstance(r["text"], str) else r["text"].decode() for r in recs]
    images = [r["image"] for r in recs]

    out = {}
    recognizers = {}
    for dtype in ("float32", "bfloat16"):
        r = Recognizer.from_pretrained(args.model, views="id", dtype=dtype, batch_size=args.batch_size,
                                       compilation_cache=False)
        recognizers[dtype] = r
        t0 = time.perf_counter()
        res = r(images)
        out[dtype] = {"texts": [x.text for x in res], "seconds": time.perf_counter() - t0}
        m = LineMetrics()
        for pred, gt in zip(out[dtype]["texts"], labels):
            m.update_one(pred or "", gt)
        out[dtype]["acc"] = m.result()["acc"]
        print(f"{dtype}: ACC {100 * out[dtype]['acc']:.2f}% ({out[dtype]['seconds']:.0f} s)", flush=True)
    same = sum(a == b for a, b in zip(out["float32"]["texts"], out["bfloat16"]["texts"]))
    differ = [(labels[i], out["float32"]["texts"][i], out["bfloat16"]["texts"][i]) for i in range(n)
              if out["float32"]["texts"][i] != out["bfloat16"]["texts"][i]]

    # Teacher-forced log-probabilities on the float32 readings.
    f32 = recognizers["float32"]
    tok = f32.tokenizer
    k = min(args.logit_lines, n)
    targets = [tok.encode(t or "", add_eos=True) for t in out["float32"]["texts"][:k]]
    T = max(len(t) for t in targets)
    tgt = np.full((k, T), tok.pad_id, np.int32)
    for i, t in enumerate(targets):
        tgt[i, :len(t)] = t
    prev = np.concatenate([np.full((k, 1), tok.bos_id, np.int32), tgt[:, :-1]], 1)
    prev = np.where(prev == tok.eos_id, tok.pad_id, prev)
    mask = tgt != tok.pad_id
    pixels = np.stack([f32.preprocess(im) for im in images[:k]])
    from ofa_jax.preprocess import NORMALIZE_LUT
    x = jnp.asarray(NORMALIZE_LUT)[jnp.asarray(pixels)]
    srcs = jnp.asarray(np.repeat(f32._src[:1], k, 0))

    def logprobs(r):
        fn = jax.jit(lambda v, x, s, p: jax.nn.log_softmax(r.model.apply(v, x, s, p), -1))
        chunks = [fn(r.variables, x[i:i + 32], srcs[i:i + 32], jnp.asarray(prev[i:i + 32])) for i in range(0, k, 32)]
        return np.concatenate([np.asarray(c, np.float32) for c in chunks])

    lp32, lp16 = logprobs(f32), logprobs(recognizers["bfloat16"])
    diff = np.abs(lp32 - lp16)[mask]  # (positions, vocab)
    chosen = np.abs(np.take_along_axis(lp32, tgt[..., None], -1) - np.take_along_axis(lp16, tgt[..., None], -1))[..., 0][mask]
    report = {"lines": n, "agree": same / n, "acc_float32": out["float32"]["acc"], "acc_bfloat16": out["bfloat16"]["acc"],
              "seconds_float32": out["float32"]["seconds"], "seconds_bfloat16": out["bfloat16"]["seconds"],
              "logprob_max_abs": float(diff.max()), "logprob_mean_abs": float(diff.mean()),
              "chosen_logprob_max_abs": float(chosen.max()), "chosen_logprob_mean_abs": float(chosen.mean()),
              "positions": int(mask.sum()), "differing_examples": differ[:10]}
    print(json.dumps(report, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
