"""Model invariants beyond reference parity: cached decoding, padding, logical axes, train mode."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ofa_jax.config import PRESETS, OFAConfig
from ofa_jax.model import OFA, init_params

CFG = PRESETS["micro"]


@pytest.fixture(scope="module")
def variables():
    v = nn.meta.unbox(init_params(CFG, jax.random.PRNGKey(1)))
    # make relative tables and head scales non-trivial (they are zero/one at init)
    rng = np.random.default_rng(2)
    v = jax.tree_util.tree_map(
        lambda a: a + 0.1 * rng.standard_normal(a.shape, np.float32) if a.dtype == jnp.float32 and a.ndim < 4 else a, v)
    v["batch_stats"] = jax.tree_util.tree_map(jnp.abs, v["batch_stats"])  # variances must stay positive
    return v


def apply(model, *args, method=None, **kw):
    """jit-compiled model.apply (eager op-by-op execution of a ResNet is slow)."""
    static = {k: kw.pop(k) for k in ("train", "mutable") if k in kw}
    fn = jax.jit(lambda *a, **k: model.apply(*a, method=method, **static, **k))
    return fn(*args, **kw)


def _inputs(b=2, h=64, w=96):
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.uniform(-1, 1, (b, h, w, 3)), jnp.float32)
    src = jnp.asarray([[0, 5, 6, 7, 2], [0, 8, 2, 1, 1]][:b])
    return images, src


@pytest.mark.parametrize("entangle", [False, True], ids=["bias-positions", "entangled-positions"])
def test_incremental_decoding_matches_teacher_forcing(variables, entangle):
    """Also with positions added to the inputs (``entangle_position_embedding``): a decode step adds
    its own position's embedding."""
    model = OFA(CFG.replace(entangle_position_embedding=entangle))
    images, src = _inputs()
    enc = apply(model, variables, images, src, method=OFA.encode)
    k, t = 3, 7
    rng = np.random.default_rng(1)
    prev = rng.integers(4, 1000, (2, k, t))
    prev[..., 0] = 0
    full = jax.jit(jax.vmap(lambda p: model.apply(variables, p, enc, method=OFA.decode), in_axes=1, out_axes=1))(
        jnp.asarray(prev))
    cache = model.apply(variables, enc, k, 10, method=OFA.init_cache)
    step = jax.jit(lambda tok, c: model.apply(variables, tok, c, method=OFA.decode_step))
    for i in range(t):
        logits, cache = step(jnp.asarray(prev[:, :, i]), cache)
        np.testing.assert_allclose(logits, full[:, :, i], atol=2e-5, rtol=1e-5)
    assert int(cache.index) == t


def test_cache_reorder(variables):
    model = OFA(CFG)
    images, src = _inputs()
    enc = apply(model, variables, images, src, method=OFA.encode)
    cache = model.apply(variables, enc, 2, 6, method=OFA.init_cache)
    tok = jnp.asarray([[0, 0], [0, 0]])
    _, cache = model.apply(variables, tok, cache, method=OFA.decode_step)
    tok = jnp.asarray([[11, 12], [13, 14]])
    _, cache = model.apply(variables, tok, cache, method=OFA.decode_step)
    swapped = cache.reorder(jnp.asarray([[1, 1], [1, 0]]))
    for layer in range(CFG.decoder_layers):
        np.testing.assert_array_equal(swapped.self_k[layer][0, 0], cache.self_k[layer][0, 1])
        np.testing.assert_array_equal(swapped.self_v[layer][1, 1], cache.self_v[layer][1, 0])
        np.testing.assert_array_equal(swapped.cross_k[layer], cache.cross_k[layer])


def test_padding_does_not_change_valid_outputs(variables):
    """Extra pad tokens on the text or decoder side leave the other positions' results unchanged."""
    model = OFA(CFG)
    images, src = _inputs(b=1)
    prev = jnp.asarray([[0, 9, 10, 11]])
    a = apply(model, variables, images, src, prev)
    b = apply(model, variables, images, jnp.pad(src, ((0, 0), (0, 3)), constant_values=1),
                    jnp.pad(prev, ((0, 0), (0, 2)), constant_values=1))
    np.testing.assert_allclose(a, b[:, :4], atol=1e-5)


def test_every_parameter_has_logical_axes():
    boxed = init_params(CFG)["params"]
    leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
    for x in leaves:
        assert len(x.names) == x.value.ndim


def test_train_mode_dropout_and_droppath():
    cfg = CFG.replace(dropout=0.1, encoder_drop_path_rate=0.2, decoder_drop_path_rate=0.2, resnet_drop_path_rate=0.1)
    v = nn.meta.unbox(init_params(cfg))
    model = OFA(cfg)
    images, src = _inputs()
    prev = jnp.asarray([[0, 9, 10], [0, 4, 5]])
    det = apply(model, v, images, src, prev)
    r1 = apply(model, v, images, src, prev, train=True, rngs={"dropout": jax.random.PRNGKey(0)})
    r2 = apply(model, v, images, src, prev, train=True, rngs={"dropout": jax.random.PRNGKey(0)})
    r3 = apply(model, v, images, src, prev, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    np.testing.assert_array_equal(r1, r2)
    assert not np.allclose(r1, det) and not np.allclose(r1, r3)


def test_trainable_batchnorm_updates_stats():
    model = OFA(CFG, frozen_bn=False)
    v = nn.meta.unbox(init_params(CFG))
    images, src = _inputs()
    prev = jnp.asarray([[0, 9], [0, 4]])
    _, upd = apply(model, v, images, src, prev, train=True, rngs={"dropout": jax.random.PRNGKey(0)},
                   mutable=("batch_stats",))
    a = upd["batch_stats"]["encoder"]["embed_images"]["bn1"]["mean"]
    assert not np.allclose(a, v["batch_stats"]["encoder"]["embed_images"]["bn1"]["mean"])


def test_image_too_large_is_a_clear_error():
    v = nn.meta.unbox(init_params(CFG))
    with pytest.raises(ValueError, match="larger than the 672px"):
        OFA(CFG).apply(v, jnp.zeros((1, 32, 700, 3)), jnp.ones((1, 3), jnp.int32), method=OFA.encode)


def test_config_round_trip(tmp_path):
    for name, cfg in PRESETS.items():
        cfg.save(str(tmp_path / f"{name}.json"))
        assert OFAConfig.load(str(tmp_path / f"{name}.json")) == cfg
        assert OFAConfig.from_modelscope(cfg.to_modelscope()) == cfg
    with pytest.raises(ValueError, match="use_ofasys"):
        OFAConfig.from_modelscope({"use_ofasys": True})
