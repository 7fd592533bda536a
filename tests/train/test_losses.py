"""ofa_jax.losses against ModelScope's AdjustLabelSmoothedCrossEntropyCriterion (recorded fixtures)."""
import os

import jax.numpy as jnp
import numpy as np
import pytest

from ofa_jax import losses

CASES = ["ls01", "ls00", "ls01_big", "rdrop", "rdrop_a05"]


@pytest.fixture(scope="module")
def fx(fixtures_dir):
    return np.load(os.path.join(fixtures_dir, "loss_fixtures.npz"))


@pytest.mark.parametrize("name", CASES)
def test_matches_reference_criterion(fx, name):
    logits, target = fx[f"{name}/logits"], fx[f"{name}/target"]
    loss, nll, n = losses.ofa_criterion(jnp.asarray(logits), jnp.asarray(target), jnp.asarray(target != 1),
                                        float(fx[f"{name}/epsilon"]), bool(fx[f"{name}/use_rdrop"]),
                                        float(fx[f"{name}/reg_alpha"]))
    assert int(n) == int(fx[f"{name}/ntokens"])
    np.testing.assert_allclose(float(loss), float(fx[f"{name}/loss"]), rtol=2e-6)
    np.testing.assert_allclose(float(nll), float(fx[f"{name}/nll_loss"]), rtol=2e-6)


def test_sums_split_over_microbatches(fx):
    """Accumulating sums over micro-batches then dividing equals the whole-batch mean."""
    logits, target = jnp.asarray(fx["ls01_big/logits"]), jnp.asarray(fx["ls01_big/target"])
    mask = target != 1
    whole = losses.label_smoothed_nll(logits, target, mask, 0.1)
    parts = [losses.label_smoothed_nll(logits[i:i + 2], target[i:i + 2], mask[i:i + 2], 0.1) for i in (0, 2)]
    np.testing.assert_allclose(sum(float(p[0]) for p in parts) / sum(float(p[2]) for p in parts),
                               float(whole[0] / whole[2]), rtol=1e-6)


def test_bf16_logits_are_upcast():
    logits = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 11)), jnp.bfloat16)
    target = jnp.array([[4, 5, 2], [6, 2, 1]])
    out = losses.label_smoothed_nll(logits, target, target != 1, 0.1)
    assert out[0].dtype == jnp.float32 and int(out[2]) == 5
