"""``OFA(scan=True)`` (layer stacks as ``nn.scan``) computes what the unrolled default computes.

Same weights via ``ofa_jax.layout.stack_layers``. Dropout masks are not compared across the two forms:
the unrolled layers draw from per-layer rng streams (``layers_3/dropout``), the scan splits one
stream over its iterations, so the masks differ by construction. Forward and gradients are compared
where no rng is consumed (deterministic mode, or train mode with every dropout and drop-path rate 0);
within the scanned form, remat is compared with all of them on (the same masks in both).
"""
import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ofa_jax import losses, partitioning
from ofa_jax.config import PRESETS
from ofa_jax.layout import stack_layers, unstack_layers
from ofa_jax.model import OFA, init_params
from ofa_jax.resnet import DropPath

CFG = PRESETS["micro"]
DROPS = dict(dropout=0.1, attention_dropout=0.1, activation_dropout=0.1, encoder_drop_path_rate=0.2,
             decoder_drop_path_rate=0.2, resnet_drop_path_rate=0.2)


def _random_variables(cfg, seed=1):
    """Unrolled-layout variables with every parameter non-trivial (relative tables, norms, head scales),
    drawn in numpy on the abstract shapes: no init to compile."""
    rng = np.random.default_rng(seed)

    def draw(path, s):
        name = jax.tree_util.keystr(path[-1:])
        if "var" in name:
            return rng.uniform(0.5, 2.0, s.shape).astype(s.dtype)
        n = rng.standard_normal(s.shape).astype(s.dtype)
        if len(s.shape) == 1:
            return (1 + 0.1 * n) if ("scale" in name or "c_attn" in name) else 0.1 * n
        return n * np.float32(np.prod(s.shape[:-1]) ** -0.5)  # fan-in scaling (dense, conv, embedding tables)

    abstract = nn.meta.unbox(jax.eval_shape(lambda: init_params(cfg)))
    return jax.tree_util.tree_map_with_path(draw, abstract)


@pytest.fixture(scope="module")
def variables():
    return _random_variables(CFG)


def _batch():
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.uniform(-1, 1, (2, 48, 64, 3)), jnp.float32)
    src = jnp.asarray([[0, 5, 6, 7, 2], [0, 8, 2, 1, 1]])
    tgt = jnp.asarray([[9, 10, 11, 2], [12, 2, 1, 1]])
    prev = jnp.asarray([[0, 9, 10, 11], [0, 12, 2, 1]])
    return images, src, prev, tgt


def _assert_same_tree(a, b, exact=True, rtol=0.0):
    fa, fb = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for (path, x), (_, y) in zip(fa, fb):
        msg = jax.tree_util.keystr(path)
        assert x.shape == y.shape and x.dtype == y.dtype, msg
        if exact:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=msg)
        else:
            np.testing.assert_allclose(x, y, rtol=rtol, atol=0, err_msg=msg)


# ---- layout --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,overrides", [("micro", {}), ("micro", {"share_attn_bias": True}), ("tiny", {})])
def test_init_structure_is_the_stacked_layout(name, overrides):
    """init of the scanned model == stack_layers(init of the unrolled one): paths, shapes, dtypes and
    logical axis names (the stacked axis is "layers")."""
    cfg = PRESETS[name].replace(**overrides)
    scanned = jax.eval_shape(lambda: init_params(cfg, scan=True))
    stacked = jax.eval_shape(lambda: stack_layers(init_params(cfg), cfg))
    assert jax.tree.structure(scanned) == jax.tree.structure(stacked)  # includes the Partitioned names
    for a, b in zip(jax.tree.leaves(scanned), jax.tree.leaves(stacked)):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
    params = scanned["params"]
    layers = cfg.encoder_layers
    assert params["encoder"]["layers"]["fc1"]["kernel"].names == ("layers", "embed", "mlp")
    assert params["encoder"]["layers"]["fc1"]["kernel"].value.shape[0] == layers
    assert "layer3_rest" in params["encoder"]["embed_images"]
    assert "layer3_rest" in scanned["batch_stats"]["encoder"]["embed_images"]
    assert not any(k.startswith("layers_") for k in params["encoder"])
    if cfg.share_attn_bias:
        assert "token_rel_pos_table_list_0" in params["encoder"]
    else:
        assert params["decoder"]["token_rel_pos_table_list"]["embedding"].value.shape[0] == cfg.decoder_layers


def test_scanned_shardings_replicate_the_layer_axis():
    boxed = jax.eval_shape(lambda: init_params(CFG, scan=True))
    mesh = partitioning.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    sh = partitioning.variable_shardings(boxed, mesh)
    fc1 = nn.meta.unbox(sh)["params"]["encoder"]["layers"]["fc1"]["kernel"]
    assert tuple(fc1.spec) == (None, "fsdp", "tensor")


@pytest.mark.parametrize("name", ["micro", "tiny"])
def test_stack_unstack_round_trip_is_exact(name):
    cfg = PRESETS[name]
    abstract = jax.eval_shape(lambda: init_params(cfg))
    # abstract shapes (boxed): stacking and back restores shapes and logical names
    assert jax.tree.structure(unstack_layers(stack_layers(abstract, cfg), cfg)) == jax.tree.structure(abstract)
    # numpy values: bit for bit, leaf order independent of dict order
    rng = np.random.default_rng(0)
    values = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), nn.meta.unbox(abstract))
    stacked = stack_layers(values, cfg)
    assert stacked["params"]["encoder"]["layers"]["fc1"]["kernel"].shape[0] == cfg.encoder_layers
    np.testing.assert_array_equal(stacked["params"]["decoder"]["layers"]["fc2"]["bias"][1],
                                  values["params"]["decoder"]["layers_1"]["fc2"]["bias"])
    np.testing.assert_array_equal(stacked["batch_stats"]["encoder"]["embed_images"]["layer2_rest"]["bn1"]["mean"][0],
                                  values["batch_stats"]["encoder"]["embed_images"]["layer2_1"]["bn1"]["mean"])
    back = unstack_layers(stacked, cfg)
    _assert_same_tree(back, values)
    assert isinstance(jax.tree.leaves(stacked)[0], np.ndarray)  # numpy stays numpy (nothing moved to a device)


def test_layout_converts_optimizer_states_and_checks_the_config(variables):
    v = variables
    opt = optax.adamw(1e-3)
    state = opt.init(v["params"])
    stacked = stack_layers(state, CFG)
    adam = stacked[0]
    assert adam.mu["encoder"]["layers"]["fc1"]["kernel"].shape[0] == CFG.encoder_layers
    _assert_same_tree(stacked, opt.init(stack_layers(v["params"], CFG)))
    _assert_same_tree(unstack_layers(stacked, CFG), state)
    with pytest.raises(ValueError, match="layers_2"):
        stack_layers(v, CFG.replace(encoder_layers=3))
    with pytest.raises(ValueError, match="leading axis of 3"):
        unstack_layers(stack_layers(v, CFG), CFG.replace(decoder_layers=3))


def test_traced_drop_path_rate_is_the_static_one():
    """DropPath with its rate as a traced scan input draws the very mask the static rate draws (both
    under jit: eagerly, x / 0.7 is a division, while XLA multiplies by the constant's reciprocal)."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 7, 8)), jnp.float32)
    for mode in ("token", "sample"):
        rngs = {"dropout": jax.random.PRNGKey(3)}
        static = jax.jit(lambda: DropPath(0.3, mode).apply({}, x, False, rngs=rngs))()
        traced = jax.jit(lambda r: DropPath(0.0, mode).apply({}, x, False, r, rngs=rngs))(jnp.float32(0.3))
        np.testing.assert_array_equal(traced, static)
        zero = jax.jit(lambda r: DropPath(0.0, mode).apply({}, x, False, r, rngs=rngs))(jnp.float32(0.0))
        np.testing.assert_array_equal(zero, x)


# ---- numbers -------------------------------------------------------------------------------------

def test_forward_matches_unrolled(variables):
    """Deterministic and train mode (no rng consumers: dropout rates 0) within 1e-5; and with one
    relative-position table shared by all layers (``share_attn_bias``: built once, broadcast)."""
    images, src, prev, _ = _batch()
    stacked = stack_layers(variables, CFG)
    for cfg, train in ((CFG.replace(**DROPS), False), (CFG.replace(dropout=0.0), True)):
        fn = lambda scan, v: jax.jit(lambda v: OFA(cfg, scan=scan).apply(v, images, src, prev, train=train))(v)
        ref, got = fn(False, variables), fn(True, stacked)
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0, err_msg=f"train={train}")
    shared = CFG.replace(share_attn_bias=True)
    v = _random_variables(shared, 2)
    fn = lambda scan, v: jax.jit(lambda v: OFA(shared, scan=scan).apply(v, images, src, prev))(v)
    np.testing.assert_allclose(fn(True, stack_layers(v, shared)), fn(False, v), atol=1e-5, rtol=0)


def test_train_mode_draws_masks_in_the_scan():
    """With dropout and drop path on, the scanned model's train mode is random and reproducible."""
    cfg = CFG.replace(**DROPS)
    v = nn.meta.unbox(init_params(cfg, scan=True))
    images, src, prev, _ = _batch()
    fn = jax.jit(lambda v, key, train: OFA(cfg, scan=True).apply(v, images, src, prev, train=train,
                                                                  rngs={"dropout": key}), static_argnums=2)
    det = fn(v, jax.random.PRNGKey(0), False)
    r1, r2, r3 = (fn(v, jax.random.PRNGKey(k), True) for k in (0, 0, 1))
    np.testing.assert_array_equal(r1, r2)
    assert not np.allclose(r1, det) and not np.allclose(r1, r3)


def _loss_and_grads(cfg, scan, remat, frozen_bn, v, key=7, fused_attention=False):
    images, src, prev, tgt = _batch()
    model = OFA(cfg, remat=remat, frozen_bn=frozen_bn, scan=scan, fused_attention=fused_attention)

    def loss(params):
        logits, upd = model.apply({"params": params, "batch_stats": v["batch_stats"]}, images, src, prev, train=True,
                                  rngs={"dropout": jax.random.PRNGKey(key)}, mutable=["batch_stats"])
        loss_sum, _, n = losses.label_smoothed_nll(logits, tgt, tgt != 1, 0.1)
        return loss_sum / n, upd["batch_stats"]

    (value, stats), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(v["params"])
    return value, grads, stats


def _assert_grads_close(grads, ref, what):
    flat_ref = jax.tree_util.tree_leaves_with_path(ref)
    flat = jax.tree.leaves(grads)
    assert jax.tree.structure(grads) == jax.tree.structure(ref)
    top = max(float(jnp.max(jnp.abs(g))) for _, g in flat_ref)
    for (path, g0), g in zip(flat_ref, flat):
        # 1e-5 of the leaf's own scale; plus float noise on gradients that are zero in exact arithmetic
        # (k_proj biases: a softmax does not see a shift shared by all keys)
        atol = 1e-5 * float(jnp.max(jnp.abs(g0))) + 1e-7 * top
        np.testing.assert_allclose(g, g0, atol=atol, rtol=0, err_msg=f"{what}: {jax.tree_util.keystr(path)}")


# train-bn: slow (~20 s); CI keeps frozen BatchNorm, the fine-tuning default (train_defaults.py).
@pytest.mark.parametrize("frozen_bn", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["frozen-bn", "train-bn"])
def test_gradients_match_unrolled(variables, frozen_bn):
    """Train mode without rng consumers: loss, gradients (unstacked back) and BatchNorm updates."""
    cfg = CFG.replace(dropout=0.0)
    ref_loss, ref_grads, ref_stats = _loss_and_grads(cfg, False, "none", frozen_bn, variables)
    loss, grads, stats = _loss_and_grads(cfg, True, "none", frozen_bn, stack_layers(variables, cfg))
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    _assert_grads_close(unstack_layers(grads, cfg), ref_grads, "scan")
    _assert_same_tree(unstack_layers(stats, cfg), ref_stats, exact=False, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("frozen_bn,modes", [(True, ("layers", "full")), (False, ("full",))])
def test_remat_with_scan_same_loss_and_grads(frozen_bn, modes):
    """Remat inside the scans: every dropout and drop path on, the same masks in the recomputation."""
    cfg = CFG.replace(**DROPS)
    v = stack_layers(_random_variables(cfg, 3), cfg)
    ref_loss, ref_grads, ref_stats = _loss_and_grads(cfg, True, "none", frozen_bn, v)
    for mode in modes:
        loss, grads, stats = _loss_and_grads(cfg, True, mode, frozen_bn, v)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
        _assert_grads_close(grads, ref_grads, mode)
        _assert_same_tree(stats, ref_stats, exact=False, rtol=1e-6)


@pytest.mark.parametrize("mode", ["none", "layers", "full"])
def test_remat_checkpoints_the_scan_bodies(mode):
    """Tracing only (the numbers: the slow test above). "layers" recomputes the encoder's and decoder's
    scan bodies (policy None), "full" also the three ResNet stages'; without remat the transformer
    bodies keep their projections' outputs only (see ``model._scan_layers``), the ResNet ones all."""
    abstract = nn.meta.unbox(jax.eval_shape(lambda: init_params(CFG, scan=True)))
    images, src = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32), jax.ShapeDtypeStruct((1, 4), jnp.int32)
    fn = lambda v, i, s: OFA(CFG, scan=True, remat=mode).apply(v, i, s, s, train=True,
                                                                rngs={"dropout": jax.random.PRNGKey(0)})
    policies = []

    def checkpoints(jaxpr):
        for e in jaxpr.eqns:
            if e.primitive.name.startswith(("remat", "checkpoint")):
                yield e.params["policy"]
            for sub in jax.extend.core.jaxprs_in_params(e.params):
                yield from checkpoints(sub)

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "scan":
                policies.append(list(checkpoints(eqn.params["jaxpr"].jaxpr)))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(abstract, images, src).jaxpr)
    resnet, transformer = policies[:3], policies[3:]  # traced in this order: ResNet, encoder, decoder
    projections = jax.checkpoint_policies.dots_with_no_batch_dims_saveable
    assert transformer == [[projections]] * 2 if mode == "none" else [[None]] * 2
    assert resnet == ([[None]] * 3 if mode == "full" else [[]] * 3)


def test_beam_search_matches_unrolled():
    """Beam search (cached decode steps over the stacked layers) reads the same tokens as the unrolled
    model and as the PyTorch reference, on the decode fixture's weights."""
    from ofa_jax.decoding import GenerationConfig, make_generate_fn
    from ofa_jax.preprocess import normalize_uint8
    from reference_weights import decode_case
    from tools.convert_weights import state_dict_to_variables

    sd, data, meta, cfg = decode_case()
    variables, _ = state_dict_to_variables(sd, cfg)
    s = meta["settings"]["beam5"]
    gen = GenerationConfig(beam_size=s["beam_size"], max_len_b=s["max_len_b"], min_len=s["min_len"],
                           no_repeat_ngram_size=s["no_repeat_ngram_size"])
    images = np.stack([normalize_uint8(p) for p in data["pixels"]])
    src = data["beam5/src_tokens"]
    ref = jax.device_get(make_generate_fn(OFA(cfg), gen)(variables, images, src))
    out = jax.device_get(make_generate_fn(OFA(cfg, scan=True), gen)(stack_layers(variables, cfg), images, src))
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    np.testing.assert_array_equal(out.lengths, ref.lengths)
    np.testing.assert_allclose(out.scores, ref.scores, atol=1e-5)
    ref_tokens = data["beam5/tokens"]
    np.testing.assert_array_equal(out.tokens[:, :, : ref_tokens.shape[2]], ref_tokens)
