"""Golden values of ModelScope's OFA training criterion for ``ofa_jax.losses``.

Run inside the reference environment (see make_model_fixtures.py):

    .venv-reference/bin/python tools/reference/make_loss_fixtures.py [--out tests/fixtures]

Small random logits and targets (with pad positions) go through
``AdjustLabelSmoothedCrossEntropyCriterion.compute_loss`` with label smoothing 0.1 and 0.0, and with
R-Drop (batch doubled, the copies given different logits as dropout would). Writes ``loss_fixtures.npz``.
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from modelscope.trainers.multi_modal.ofa.ofa_trainer_utils import AdjustLabelSmoothedCrossEntropyCriterion

PAD = 1


class _Args(dict):
    """The criterion reads ``args.get(...)`` and ``args.tokenizer.pad_token_id``."""

    class tokenizer:  # noqa: N801
        pad_token_id = PAD


def _case(rng, batch, length, vocab, scale):
    logits = (scale * rng.standard_normal((batch, length, vocab))).astype(np.float32)
    target = rng.integers(2, vocab, (batch, length)).astype(np.int64)
    for b in range(batch):  # variable lengths: pad after a random cut (at least one real token)
        cut = int(rng.integers(1, length + 1))
        target[b, cut:] = PAD
    return logits, target


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures"))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    out = {}
    cases = [("ls01", dict(label_smoothing=0.1), 3, 7, 37, 3.0),
             ("ls00", dict(label_smoothing=0.0), 2, 5, 23, 1.0),
             ("ls01_big", dict(label_smoothing=0.1), 4, 9, 301, 5.0),
             ("rdrop", dict(label_smoothing=0.1, use_rdrop=True, reg_alpha=1.0), 3, 6, 29, 2.0),
             ("rdrop_a05", dict(label_smoothing=0.1, use_rdrop=True, reg_alpha=0.5), 2, 4, 31, 2.0)]
    for name, kw, b, t, v, scale in cases:
        crit = AdjustLabelSmoothedCrossEntropyCriterion(_Args(kw))
        logits, target = _case(rng, b, t, v, scale)
        if kw.get("use_rdrop"):
            # construct_rdrop_sample repeats the batch; the two copies' logits differ through dropout.
            logits = np.concatenate([logits, logits + (0.3 * rng.standard_normal(logits.shape)).astype(np.float32)])
            target = np.concatenate([target, target])
        loss, nll, ntok = crit.compute_loss(torch.from_numpy(logits.copy()), {"target": torch.from_numpy(target)},
                                            update_num=0)
        out[f"{name}/logits"] = logits
        out[f"{name}/target"] = target.astype(np.int32)
        out[f"{name}/epsilon"] = np.float32(kw["label_smoothing"])
        out[f"{name}/use_rdrop"] = np.bool_(kw.get("use_rdrop", False))
        out[f"{name}/reg_alpha"] = np.float32(kw.get("reg_alpha", 1.0))
        out[f"{name}/loss"] = np.float64(loss.item())
        out[f"{name}/nll_loss"] = np.float64(nll.item())
        out[f"{name}/ntokens"] = np.int64(ntok)
        print(name, loss.item(), nll.item(), ntok)
    path = os.path.join(args.out, "loss_fixtures.npz")
    np.savez_compressed(path, **out)
    print("wrote", path)


if __name__ == "__main__":
    main()
