"""Per-layer <-> scanned variable layouts: what ``OFA(scan=True)`` reads, from what everything else keeps.

Model dirs, the converter and checkpoints keep the per-layer layout (``encoder/layers_3/fc1/kernel``,
``encoder/embed_images/layer3_7/conv2/kernel``: one name per PyTorch tensor). The scanned model
(``OFA(scan=True)``, compile time flat in depth) wants each repeated stack as one variable with a
leading layer axis. The two functions here convert between them; they only rename and stack/slice,
so a round trip is exact. The scanned layout:

* ``{encoder,decoder}/layers_{i}/...``                  -> ``{encoder,decoder}/layers/...``  (L, ...)
* ``{encoder,decoder}/{token,image}_rel_pos_table_list_{i}/embedding``
                                                        -> ``.../{token,image}_rel_pos_table_list/embedding``
  (L, buckets, heads); unless ``share_attn_bias`` (one table ``_0``, kept as is)
* ``encoder/embed_images/layer{s}_{i}/...`` for i >= 1   -> ``encoder/embed_images/layer{s}_rest/...``
  (n - 1, ...): block 0 of a stage has its own shapes (stride, downsample) and stays apart.

They are pure functions on nested dicts keyed like the model's variables and walk any nesting of
dicts, lists and tuples (named or not), so one call converts a whole variables tree
(``{"params", "batch_stats"}``), a bare params tree, or an optimizer state whose moments mirror the
params (optax's ``ScaleByAdamState``). Leaves may be numpy arrays (stacked with numpy: nothing moves to a
device), jax arrays or tracers, ``jax.ShapeDtypeStruct`` (abstract shapes) or ``nn.Partitioned`` boxes
(the stacked axis gets the logical name "layers", as ``nn.scan``'s ``metadata_params`` gives it).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.core import FrozenDict

from ofa_jax.config import OFAConfig

LAYERS_AXIS = "layers"


def _groups(config: OFAConfig) -> dict[str, list[tuple[str, list[str]]]]:
    """For the dict under each key: [(stacked name, per-layer names in order)]."""
    def stack(base, n, start=0, name=None):
        return (name or base, [f"{base}_{i}" for i in range(start, n)])

    enc, dec = config.encoder_layers, config.decoder_layers
    out = {"encoder": [stack("layers", enc)], "decoder": [stack("layers", dec)], "embed_images": []}
    if not config.share_attn_bias:
        out["encoder"] += [stack("token_rel_pos_table_list", enc), stack("image_rel_pos_table_list", enc)]
        out["decoder"] += [stack("token_rel_pos_table_list", dec)]
    for s, blocks in enumerate(config.resnet_layers, 1):
        if blocks > 1:
            out["embed_images"].append(stack(f"layer{s}", blocks, 1, f"layer{s}_rest"))
    return out


def _is_box(x) -> bool:
    return isinstance(x, nn.Partitioned)


def _stack_leaf(*xs):
    x0 = xs[0]
    if _is_box(x0):
        return x0.replace(value=_stack_leaf(*(x.value for x in xs)), names=(LAYERS_AXIS,) + tuple(x0.names))
    if isinstance(x0, jax.ShapeDtypeStruct):
        if any(x.shape != x0.shape or x.dtype != x0.dtype for x in xs):
            raise ValueError(f"cannot stack layers of different shapes {[x.shape for x in xs]}")
        return jax.ShapeDtypeStruct((len(xs),) + tuple(x0.shape), x0.dtype)
    if all(isinstance(x, np.ndarray | np.generic) for x in xs):
        return np.stack(xs)
    return jnp.stack(xs)


def _unstack_leaf(x, n: int, where: str):
    if _is_box(x):
        if not x.names or x.names[0] != LAYERS_AXIS:
            raise ValueError(f"{where}: expected the logical axis {LAYERS_AXIS!r} first, got {x.names}")
        return [x.replace(value=v, names=tuple(x.names[1:])) for v in _unstack_leaf(x.value, n, where)]
    shape = tuple(x.shape)
    if not shape or shape[0] != n:
        raise ValueError(f"{where}: expected a leading axis of {n} layers, got shape {shape}")
    if isinstance(x, jax.ShapeDtypeStruct):
        return [jax.ShapeDtypeStruct(shape[1:], x.dtype) for _ in range(n)]
    return [x[i] for i in range(n)]


def _convert(node, groups, key, path, to_scan: bool):
    if isinstance(node, Mapping):
        out = {k: _convert(v, groups, k, f"{path}/{k}" if path else str(k), to_scan) for k, v in node.items()}
        for stacked, members in groups.get(key, ()):
            (_stack_group if to_scan else _unstack_group)(out, stacked, members, path)
        return FrozenDict(out) if isinstance(node, FrozenDict) else out
    if isinstance(node, tuple) and hasattr(node, "_fields"):  # namedtuple (optax states)
        return type(node)(*(_convert(v, groups, None, path, to_scan) for v in node))
    if isinstance(node, list | tuple):
        return type(node)(_convert(v, groups, None, path, to_scan) for v in node)
    return node


def _stack_group(out: dict, stacked: str, members: list[str], path: str):
    present = [m for m in members if m in out]
    if not present:
        return
    if len(present) != len(members) or stacked in out:
        missing = [m for m in members if m not in out]
        raise ValueError(f"{path}: cannot stack {members[0]}..{members[-1]} into {stacked!r}: "
                         + (f"missing {missing}" if missing else f"{stacked!r} exists already")
                         + " (does the config match the variables?)")
    trees = [out.pop(m) for m in members]
    structure = jax.tree.structure(trees[0], is_leaf=_is_box)
    for m, t in zip(members, trees):
        if jax.tree.structure(t, is_leaf=_is_box) != structure:
            raise ValueError(f"{path}/{m}: its variables differ from {members[0]}'s")
    out[stacked] = jax.tree.map(_stack_leaf, *trees, is_leaf=_is_box)


def _unstack_group(out: dict, stacked: str, members: list[str], path: str):
    if stacked not in out:
        return
    clash = [m for m in members if m in out]
    if clash:
        raise ValueError(f"{path}: both {stacked!r} and per-layer {clash} present")
    tree = out.pop(stacked)
    leaves, treedef = jax.tree.flatten(tree, is_leaf=_is_box)
    where = f"{path}/{stacked}" if path else stacked
    sliced = [_unstack_leaf(leaf, len(members), where) for leaf in leaves]
    for i, m in enumerate(members):
        out[m] = jax.tree.unflatten(treedef, [s[i] for s in sliced])


def stack_layers(variables: Any, config: OFAConfig) -> Any:
    """Per-layer layout (model dirs, converter, checkpoints) -> the layout of ``OFA(config, scan=True)``.

    Stacks that are absent are left alone (e.g. a ``batch_stats`` tree has no transformer layers); a
    stack with some of its layers missing is an error naming them (usually a config that does not
    match the variables).
    """
    return _convert(variables, _groups(config), None, "", True)


def unstack_layers(variables: Any, config: OFAConfig) -> Any:
    """Inverse of :func:`stack_layers`: scanned layout -> per-layer layout (exactly, leaf by leaf)."""
    return _convert(variables, _groups(config), None, "", False)
