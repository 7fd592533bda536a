"""Inference memory options: batch chunks (same numbers) and bfloat16-stored weights (float32 compute)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ofa_jax.config import PRESETS
from ofa_jax.model import OFA, apply_in_chunks, cast_params, init_params

CFG = PRESETS["micro"]


@pytest.fixture(scope="module")
def setup():
    v = nn.meta.unbox(init_params(CFG, jax.random.PRNGKey(5)))
    rng = np.random.default_rng(1)
    v["params"] = jax.tree.map(lambda a: a + 0.05 * rng.standard_normal(a.shape, np.float32), v["params"])
    images = jnp.asarray(rng.uniform(-1, 1, (3, 48, 64, 3)), jnp.float32)
    src = jnp.asarray([[0, 5, 6, 7, 2], [0, 8, 2, 1, 1], [0, 9, 9, 2, 1]])
    prev = jnp.asarray([[0, 9, 10, 11], [0, 12, 2, 1], [0, 4, 1, 1]])
    return v, (images, src, prev)


@pytest.mark.parametrize("chunk", [1, 2])  # 2: batch 3 is padded to 4 and cut back
def test_apply_in_chunks_equals_whole_batch(setup, chunk):
    v, batch = setup
    model = OFA(CFG)
    whole = jax.jit(model.apply)(v, *batch)
    chunked = jax.jit(lambda v, *a: apply_in_chunks(lambda *x: model.apply(v, *x), chunk, *a))(v, *batch)
    assert chunked.shape == whole.shape
    np.testing.assert_allclose(chunked, whole, atol=2e-5, rtol=0)


def test_bf16_weights_keep_float32_compute(setup):
    v, batch = setup
    fn = jax.jit(OFA(CFG).apply)
    ref = fn(v, *batch)
    v16 = cast_params(v)
    assert all(a.dtype == jnp.bfloat16 for a in jax.tree.leaves(v16["params"]))
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(v16["batch_stats"]))
    out = fn(v16, *batch)
    assert out.dtype == jnp.float32
    err = float(jnp.max(jnp.abs(out - ref)))
    assert 0 < err < 0.05 * float(jnp.std(ref)), err  # weights rounded to 8 mantissa bits, nothing else
