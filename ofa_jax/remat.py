"""Gradient checkpointing that survives XLA:CPU.

``jax.checkpoint`` (``nn.remat``) keeps the recomputation in the backward pass apart from the forward
pass with ``optimization_barrier``s. XLA's CPU compiler removes those barriers early, and its CSE then
merges the recomputation with the forward pass: the activations stay alive exactly as without remat
(measured: identical temporary-buffer sizes for the tiny train step with and without ``nn.remat``).

``remat`` here is a lifted transform for a function ``f(module, *arrays)`` that keeps only the inputs
for the backward pass (``jax.custom_vjp``) and, in the backward pass, re-runs the forward on inputs
*tied to the incoming cotangent*: ``x + min(|g[0]|, 0)``. The tie is an exact zero (or NaN when the
cotangent already is), but no compiler can prove it, so the recomputation can neither be merged with
the forward pass nor scheduled before the cotangent exists, on any backend. Dropout masks are the
same in both passes (the rngs are inputs like the parameters).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax.core import lift
from flax.linen import transforms as _linen_transforms


def _inexact(a) -> bool:
    return hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.inexact)


def exact_zero(dep):
    """``min(|dep[0]|, 0)``: zero (NaN when ``dep`` is), but no compiler can prove it, so whatever it is
    added to waits for ``dep`` and cannot be merged with work that does not."""
    return jnp.minimum(jnp.abs(jnp.ravel(dep)[0]), 0)


def checkpoint_tied(fn):
    """``fn(*args)`` with its activations recomputed in the backward pass (see the module docstring).

    ``fn`` is traced once (``jax.closure_convert``) and that one program runs in both passes: tracing a
    Flax body twice would advance its rng counters and draw other dropout masks in the recomputation.
    """

    def traced_once(*args):
        pure, consts = jax.closure_convert(fn, *args)
        return _tied(pure)(*args, *consts)

    return traced_once


def _tied(fn):
    @jax.custom_vjp
    def f(*args):
        return fn(*args)

    def fwd(*args):
        return fn(*args), args

    def bwd(args, g):
        probe = next(leaf for leaf in jax.tree.leaves(g) if _inexact(leaf) and leaf.size)
        tie = exact_zero(probe)
        args = jax.tree.map(lambda a: a + tie.astype(a.dtype) if _inexact(a) else a, args)
        return jax.vjp(fn, *args)[1](g)

    f.defvjp(fwd, bwd)
    return f


def _lifted(fn, variables=True, rngs=True):
    def inner(scope_fn, repack_fn, variable_groups, rng_groups, *args):
        def body(variable_groups, rng_groups, *args):
            scope = scope_fn(variable_groups, rng_groups)
            return fn(scope, *args), repack_fn(scope)

        return checkpoint_tied(body)(variable_groups, rng_groups, *args)

    return lift.pack(inner, (variables,), (variables,), (rngs,), name="remat")


def remat(target):
    """Lifted :func:`checkpoint_tied` for ``target(module, *arrays)`` (non-array arguments: close over them)."""
    return _linen_transforms.lift_transform(_lifted, target)
