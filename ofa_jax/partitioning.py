"""Logical axis names -> mesh axes: the one sharding table for training, decoding and evaluation.

Parameters declare logical names in the model (``nn.with_logical_partitioning``); this module maps
them onto a mesh with axes ``data`` (batch), ``fsdp`` (batch + parameter sharding, ZeRO-3 style)
and ``tensor`` (heads / MLP / vocab). A config overrides ``LOGICAL_AXIS_RULES`` only if it must.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_AXIS_RULES: tuple[tuple[str, object], ...] = (
    # activations
    ("batch", ("data", "fsdp")),
    ("length", None),
    # transformer parameters
    ("vocab", None),  # 30325 = 5^2 * 1213: divisible by no mesh size worth having
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("head_scale", None),
    ("positions", None),
    ("type_vocab", None),
    ("image_channels", None),
    ("rel_buckets", None),
    ("rel_heads", None),
    # ResNet: shard output channels over fsdp only (convs are small; tensor parallelism would cost
    # more in collectives than it saves)
    ("conv_h", None),
    ("conv_w", None),
    ("conv_in", None),
    ("conv_out", "fsdp"),
    # the stacked axis of scanned layers (OFA(scan=True)): each device holds every layer's slice
    ("layers", None),
)


def make_mesh(shape: Optional[dict] = None, devices: Optional[Sequence] = None) -> Mesh:
    """Mesh over ``devices`` (default: all) with axes data/fsdp/tensor; -1 takes the remaining devices.

    ``make_mesh({"data": -1})`` is pure data parallelism; ``{"data": 2, "fsdp": 2, "tensor": 2}`` 3-D.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = dict({"data": -1, "fsdp": 1, "tensor": 1}, **(shape or {}))
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"unknown mesh axes {sorted(unknown)}; use {MESH_AXES}")
    sizes = [shape[a] for a in MESH_AXES]
    if sizes.count(-1) > 1:
        raise ValueError("at most one mesh axis may be -1")
    fixed = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if len(devices) % fixed:
            raise ValueError(f"{len(devices)} devices do not divide into mesh {shape}")
        sizes[sizes.index(-1)] = len(devices) // fixed
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, have {len(devices)}")
    return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


def variable_shardings(boxed_variables, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
    """NamedSharding for every variable leaf (boxed params carry names; other collections replicate)."""
    specs = nn.get_partition_spec(boxed_variables)
    return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Leading (batch) axis split over data and fsdp, the rest replicated."""
    return NamedSharding(mesh, P(("data", "fsdp"), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


# The mesh the program being traced runs on, for `constrain_batch` (None: no constraints).
_ACTIVATIONS_MESH: contextvars.ContextVar = contextvars.ContextVar("ofa_jax_activations_mesh", default=None)


@contextlib.contextmanager
def activations_on(mesh: Optional[Mesh]):
    """While tracing a program for ``mesh``: `constrain_batch` pins activations to the batch split.
    Used inside the traced function (``jax.set_mesh`` cannot be), e.g. by ``train.make_train_step``."""
    token = _ACTIVATIONS_MESH.set(mesh)
    try:
        yield
    finally:
        _ACTIVATIONS_MESH.reset(token)


def activations_mesh() -> Optional[Mesh]:
    """The mesh set by `activations_on`, or None."""
    return _ACTIVATIONS_MESH.get()


def constrain_batch(x):
    """``x`` split over the batch (data x fsdp), the rest replicated, when a mesh is set by
    `activations_on`; else ``x`` unchanged.

    Why: inside a scanned stack (``OFA(scan=True)``) XLA's sharding propagation sees the stacked
    convolution kernels sharded on their output channels (``conv_out`` -> fsdp) and shards the
    activations that way too, splitting the batch over ``data`` only: for base at 8 lines per chip on
    v5e:4x4, 4x the activations per chip and 31 GB of temporaries (``python -m ofa_jax.aot``).
    Pinning the loop's carry to the batch split keeps the weights all-gathered instead, as unrolled.
    """
    mesh = _ACTIVATIONS_MESH.get()
    if mesh is None or mesh.size == 1:
        return x
    return jax.lax.with_sharding_constraint(x, batch_sharding(mesh, x.ndim))
