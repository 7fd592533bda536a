"""A short from-scratch run on rendered digits lowers the loss (fast) and gets lines right (slow)."""
import numpy as np
import pytest

from helpers import tiny_config, train_losses
from ofa_jax import train

DIGITS = "synth:chars=0123456789,min=1,max=2,n=4000,seed=0,fontmin=22,fontmax=30,font=wqy-microhei.ttc"


def test_loss_goes_down(tmp_path):
    cfg = tiny_config(total_steps=20, **{"model.overrides": {"dropout": 0.0}, "optim.lr": 2e-3,
                                         "optim.warmup_ratio": 0.1, "batch_size": 16})
    train.train_and_evaluate(cfg, str(tmp_path))
    losses = train_losses(tmp_path)
    assert np.mean(losses[-3:]) < losses[0] - 2.0, losses


@pytest.mark.slow
def test_learns_digits_above_chance(tmp_path):
    # Chance: 1-2 digits -> 110 possible lines; a constant guess is right ~1/20 at best.
    cfg = tiny_config(total_steps=400, **{
        "model.overrides": {"dropout": 0.0}, "optim.lr": 2e-3, "optim.warmup_ratio": 0.05, "batch_size": 16,
        "data.train": DIGITS, "data.val": DIGITS, "eval.every": 400, "eval.max_examples": 64, "eval.batch_size": 32,
        "eval.beam_size": 1, "eval.max_len": 4, "log.every": 20})
    out = train.train_and_evaluate(cfg, str(tmp_path))
    losses = train_losses(tmp_path)
    assert losses[-1] < losses[0] / 3, losses
    assert out["val"]["acc"] > 0.2, out["val"]
