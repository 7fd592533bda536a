"""Gradient checkpointing (``OFA(remat=...)``) changes memory, not numbers: the same loss and gradients."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ofa_jax import losses
from ofa_jax.config import PRESETS
from ofa_jax.model import OFA, init_params

# every consumer of the dropout rng on: the recomputed forward must draw the same masks
CFG = PRESETS["micro"].replace(dropout=0.1, attention_dropout=0.1, activation_dropout=0.1,
                               encoder_drop_path_rate=0.2, decoder_drop_path_rate=0.2, resnet_drop_path_rate=0.2)


@pytest.fixture(scope="module")
def setup():
    v = nn.meta.unbox(init_params(CFG, jax.random.PRNGKey(3)))
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.uniform(-1, 1, (2, 48, 64, 3)), jnp.float32)
    src = jnp.asarray([[0, 5, 6, 7, 2], [0, 8, 2, 1, 1]])
    tgt = jnp.asarray([[9, 10, 11, 2], [12, 2, 1, 1]])
    prev = jnp.asarray([[0, 9, 10, 11], [0, 12, 2, 1]])
    return v, (images, src, prev, tgt)


def _loss_and_grads(remat, frozen_bn, v, batch):
    images, src, prev, tgt = batch
    model = OFA(CFG, remat=remat, frozen_bn=frozen_bn)

    def loss(params):
        logits, upd = model.apply({"params": params, "batch_stats": v["batch_stats"]}, images, src, prev, train=True,
                                  rngs={"dropout": jax.random.PRNGKey(7)}, mutable=["batch_stats"])
        loss_sum, _, n = losses.label_smoothed_nll(logits, tgt, tgt != 1, 0.1)
        return loss_sum / n, upd["batch_stats"]

    (value, stats), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(v["params"])
    return value, grads, stats


# Full remat: slow (~50 s each); CI keeps remat=layers, the setting the configs document for short memory.
@pytest.mark.parametrize("frozen_bn,modes", [(True, ("layers",)),
                                             pytest.param(False, ("full",), marks=pytest.mark.slow),
                                             pytest.param(True, ("full",), marks=pytest.mark.slow)])
def test_remat_same_loss_and_grads(setup, frozen_bn, modes):
    v, batch = setup
    ref_loss, ref_grads, ref_stats = _loss_and_grads("none", frozen_bn, v, batch)
    for mode in modes:
        loss, grads, stats = _loss_and_grads(mode, frozen_bn, v, batch)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-6, atol=0)
        flat_ref = jax.tree_util.tree_leaves_with_path(ref_grads)
        flat = jax.tree_util.tree_leaves(grads)
        assert len(flat) == len(flat_ref)
        top = max(float(jnp.max(jnp.abs(g))) for _, g in flat_ref)
        for (path, g0), g in zip(flat_ref, flat):
            # 1e-5 of the leaf's own scale; plus float noise on gradients that are zero in exact arithmetic
            # (k_proj biases: a softmax does not see a shift shared by all keys)
            atol = 1e-5 * float(jnp.max(jnp.abs(g0))) + 1e-7 * top
            np.testing.assert_allclose(g, g0, atol=atol, rtol=0,
                                       err_msg=f"{mode}: {jax.tree_util.keystr(path)}")
        for a, b in zip(jax.tree_util.tree_leaves(stats), jax.tree_util.tree_leaves(ref_stats)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_remat_mode_is_checked():
    with pytest.raises(ValueError, match="remat"):
        OFA(CFG, remat="yes").init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), jnp.ones((1, 3), jnp.int32),
                                   jnp.ones((1, 3), jnp.int32))
