"""``ofa_jax.fused_attention`` (Pallas attention kernels, TPU) computes what ``model.attention`` does.

The kernels are Mosaic code for TPUs; here they run in Pallas' TPU interpret mode on the CPU, which
executes the same kernel bodies (the grid, blocks, padding to 128 lanes, the bias gradient summed
over the lines, the backward kernels), ours and JAX's flash-attention kernel that longer sequences use.
The scanned model is not run here: its scan body is a ``jax.checkpoint``, and interpret mode's host
callbacks are effects a checkpoint refuses; ``tests/test_aot.py`` compiles that program for a TPU.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu

from ofa_jax import fused_attention
from ofa_jax.config import PRESETS
from ofa_jax.model import OFA, attention
from test_scan import _assert_grads_close, _batch, _loss_and_grads, _random_variables


def _inputs(b=2, t=40, s=40, h=2, d=16, seed=0):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.normal(size=(b, t, h, d)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(b, s, h, d)), jnp.float32) for _ in range(2))
    bias = jnp.asarray(rng.normal(size=(h, t, s)), jnp.float32)
    lengths = np.array([s, s - 5])[:b]
    mask = jnp.asarray(np.arange(s)[None, None, None, :] < lengths[:, None, None, None])
    return q, k, v, bias, mask


_SHAPES = {"one-block": (40, 40), "two-blocks": (130, 130), "three-query-blocks": (300, 300), "short-queries": (7, 40)}


@pytest.mark.parametrize("t,s,shared_bias", [
    *(pytest.param(t, s, True, id=f"shared-bias-{name}") for name, (t, s) in _SHAPES.items()),
    pytest.param(130, 130, False, id="jax-kernel-two-blocks"),
    *(pytest.param(t, s, False, id=f"jax-kernel-{name}", marks=pytest.mark.slow)
      for name, (t, s) in _SHAPES.items() if name != "two-blocks")])
def test_kernel_matches_attention_values_and_gradients(t, s, shared_bias, monkeypatch):
    """Outputs and the gradients of q, k, v and of the position bias (it trains through the kernel).
    ``shared_bias``: ours (keys up to MAX_KEYS); otherwise JAX's kernel, which longer sequences use."""
    if not shared_bias:
        monkeypatch.setattr(fused_attention, "MAX_KEYS", 0)
    q, k, v, bias, mask = _inputs(t=t, s=s)
    loss = lambda f: (lambda q, k, v, bias: jnp.sum(jnp.sin(f(q, k, v, bias, mask))))
    with pltpu.force_tpu_interpret_mode():
        out = fused_attention.attention(q, k, v, bias, mask)
        grads = jax.grad(loss(fused_attention.attention), argnums=(0, 1, 2, 3))(q, k, v, bias)
    ref = attention(q, k, v, bias, mask)
    ref_grads = jax.grad(loss(attention), argnums=(0, 1, 2, 3))(q, k, v, bias)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    np.testing.assert_allclose(out, ref, atol=2e-6 * float(jnp.max(jnp.abs(ref))), rtol=0)
    for name, g, g0 in zip("qkvb", grads, ref_grads):
        assert g.shape == g0.shape, name
        np.testing.assert_allclose(g, g0, atol=1e-5 * float(jnp.max(jnp.abs(g0))), rtol=0, err_msg=name)


def test_bfloat16_compute_is_close():
    """With bfloat16 q/k/v the bias enters the kernel in bfloat16 too (half the bytes): outputs within
    bfloat16 rounding of the unfused attention on the same bfloat16 inputs."""
    q, k, v, bias, mask = _inputs(t=130, s=130)
    q, k, v = (x.astype(jnp.bfloat16) for x in (q, k, v))
    with pltpu.force_tpu_interpret_mode():
        out = fused_attention.attention(q, k, v, bias, mask)
    ref = attention(q, k, v, bias, mask)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(np.float32), ref.astype(np.float32), atol=3e-2, rtol=0)


def test_block_sizes_divide_the_padded_lengths():
    assert fused_attention._padded(912) == 1024 and fused_attention._block(1024) == 512
    assert fused_attention._block(1024, fused_attention.BLOCK_Q) == 256
    assert fused_attention._block(384) == 384 and fused_attention._block(640) == 128


@pytest.mark.slow
def test_model_loss_and_gradients_match():
    """micro, train mode without dropout: the fused encoder attention gives the unfused loss and gradients."""
    cfg = PRESETS["micro"].replace(dropout=0.0)
    v = _random_variables(cfg)
    ref_loss, ref_grads, _ = _loss_and_grads(cfg, False, "none", True, v)
    with pltpu.force_tpu_interpret_mode():
        loss, grads, _ = _loss_and_grads(cfg, False, "none", True, v, fused_attention=True)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    _assert_grads_close(grads, ref_grads, "fused")


def test_attention_dropout_is_refused():
    cfg = PRESETS["micro"].replace(attention_dropout=0.1)
    images, src, prev, _ = _batch()
    with pytest.raises(ValueError, match="no attention dropout"):
        jax.eval_shape(lambda: OFA(cfg, fused_attention=True).init(jax.random.PRNGKey(0), images, src, prev))
