"""The ResNet's training-speed rewrites compute what the plain formulation computes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import flax.linen as nn

from ofa_jax import resnet
from ofa_jax.config import get_config


@pytest.mark.parametrize("hw", [(8, 8), (7, 9), (5, 6)])
def test_max_pool_matches_flax_value_and_gradient(hw):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, *hw, 3)), jnp.float32)  # distinct values
    ref = lambda x: nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    w = jnp.asarray(np.random.default_rng(1).standard_normal(ref(x).shape), jnp.float32)
    np.testing.assert_array_equal(resnet.max_pool_3x3_s2(x), ref(x))
    g = jax.grad(lambda x: jnp.sum(resnet.max_pool_3x3_s2(x) * w))(x)
    g_ref = jax.grad(lambda x: jnp.sum(ref(x) * w))(x)
    np.testing.assert_allclose(g, g_ref, rtol=0, atol=1e-6)


def test_max_pool_gradient_goes_to_the_first_maximum():
    """torch's MaxPool2d routes a tied window's gradient to its first maximum in row-major order."""
    x = jnp.ones((1, 4, 4, 1), jnp.float32)
    g = jax.grad(lambda x: jnp.sum(resnet.max_pool_3x3_s2(x)))(x)[0, :, :, 0]
    # windows (rows/cols -1..1, 1..3) start at padded -inf, so each picks its first real pixel
    expected = np.zeros((4, 4), np.float32)
    for r0 in (0, 1):
        for c0 in (0, 1):
            expected[max(2 * r0 - 1, 0), max(2 * c0 - 1, 0)] += 1
    np.testing.assert_array_equal(g, expected)
    assert float(g.sum()) == 4.0


def test_folded_frozen_batchnorm_matches_unfolded_in_training():
    """Training with frozen statistics folds BatchNorm into the conv; evaluation does not. Same numbers."""
    cfg = get_config("micro")
    m = resnet.ResNet(cfg, frozen_bn=True)
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 64, 96, 3)), jnp.float32)
    v = jax.jit(m.init)(jax.random.PRNGKey(0), x)  # jitted here and below: eager, this test took 40 s
    rng = np.random.default_rng(2)
    stats = jax.tree.map(lambda a: jnp.asarray(rng.uniform(0.5, 2.0, a.shape), a.dtype), v["batch_stats"])
    v = {"params": v["params"], "batch_stats": stats}

    def loss(p, train):
        return jnp.mean(m.apply({"params": p, "batch_stats": stats}, x, train=train) ** 2)

    fwd = jax.jit(lambda v, train: m.apply(v, x, train=train), static_argnums=1)
    np.testing.assert_allclose(fwd(v, True), fwd(v, False), rtol=1e-4, atol=1e-5)
    # train=False takes the nn.BatchNorm path; its gradient is the unfolded formulation's
    grad = jax.jit(jax.grad(loss), static_argnums=1)
    g_fold = grad(v["params"], True)
    g_ref = grad(v["params"], False)
    for a, b in zip(jax.tree.leaves(g_fold), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6 * float(np.abs(b).max()) + 1e-9)
    shapes = [jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), x, **kw)) for kw in ({"train": True}, {})]
    assert jax.tree.structure(shapes[0]) == jax.tree.structure(shapes[1])
