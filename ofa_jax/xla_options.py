"""Compiler options for our jitted programs: ``jax.jit(fn, compiler_options=compiler_options())``.

Why: on CPU, jaxlib 0.10's XLA hands reductions to YNNPACK ("ynn_fusion" in a profile), which sums
the columns of a (912, 3072) array in ~30 ms where XLA's own loop takes ~0.7 ms. In the base train
step these are the LayerNorm and bias gradients: ~16% of the step (docs/performance.md). We keep
YNNPACK for what it is fast at, matrix products and convolutions. Other backends get no options,
and a jaxlib that does not know the option (older or newer) is probed once and left at its defaults.
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

_CPU = {"xla_cpu_experimental_ynn_fusion_type":
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"}


@functools.lru_cache(maxsize=None)
def _accepted(backend: str) -> bool:
    if backend != "cpu":
        return False
    try:
        jax.jit(lambda x: x.sum(0), compiler_options=_CPU).lower(jnp.zeros((2, 2), jnp.float32)).compile()
        return True
    except Exception:  # unknown option or value in this jaxlib: keep its defaults
        return False


def compiler_options(backend: Optional[str] = None) -> dict[str, str]:
    """Options for programs compiled for ``backend`` (default: this process's default backend); {}
    where there is nothing to set. Pass the target platform when it is not this process's (a TPU
    program compiled ahead of time on a CPU host): CPU options must not reach a TPU/GPU compiler."""
    return dict(_CPU) if _accepted(backend or jax.default_backend()) else {}
