"""Logical axis rules: sharded forward passes equal the single-device one (8 fake CPU devices)."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from ofa_jax import partitioning
from ofa_jax.config import PRESETS
from ofa_jax.model import OFA, init_params

CFG = PRESETS["micro"]


def test_make_mesh_shapes():
    if len(jax.devices()) < 8:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
    assert partitioning.make_mesh({"data": -1}).shape == {"data": 8, "fsdp": 1, "tensor": 1}
    assert partitioning.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}).shape == {"data": 2, "fsdp": 2, "tensor": 2}
    with pytest.raises(ValueError, match="needs 12 devices"):
        partitioning.make_mesh({"data": 3, "fsdp": 2, "tensor": 2})


@pytest.mark.parametrize("shape", [{"data": 8}, {"data": 2, "fsdp": 2, "tensor": 2}])
def test_sharded_forward_equals_single_device(shape):
    if len(jax.devices()) < 8:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
    boxed = init_params(CFG, jax.random.PRNGKey(0))
    plain = nn.meta.unbox(boxed)
    model = OFA(CFG)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (8, 32, 64, 3)).astype(np.float32)
    src = np.tile(np.array([[0, 5, 6, 2]]), (8, 1))
    prev = rng.integers(4, 100, (8, 5))
    ref = jax.jit(model.apply)(plain, images, src, prev)

    mesh = partitioning.make_mesh(shape)
    shardings = partitioning.variable_shardings(boxed, mesh)
    sharded_vars = jax.device_put(plain, nn.meta.unbox(shardings))
    assert any(len(x.sharding.device_set) > 1 and not x.sharding.is_fully_replicated
               for x in jax.tree_util.tree_leaves(sharded_vars)) or shape == {"data": 8}
    batch = [jax.device_put(x, partitioning.batch_sharding(mesh, x.ndim)) for x in (images, src, prev)]
    out = jax.jit(model.apply)(sharded_vars, *batch)
    assert out.sharding.spec[0] == ("data", "fsdp") or len(out.sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=2e-5, rtol=1e-5)
