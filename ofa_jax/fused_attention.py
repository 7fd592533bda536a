"""Fused attention on TPU: the encoder's self-attention through JAX's Pallas flash-attention kernel.

Why: at 480x480 the encoder attends over N = 912 positions (900 image patches + the prompt). Unfused,
a train step writes the (B, H, N, N) float32 scores and probabilities of every layer to HBM and reads
them back about ten times (forward, the checkpointed recomputation, backward): half of base's HBM
traffic per step (``python -m ofa_jax.aot --top 30``), which makes the step memory-bound. The kernel
(``jax.experimental.pallas.ops.tpu.flash_attention``) keeps a block of scores in vector memory and
never writes them.

OFA adds a position bias (absolute + relative, per head) and the padding mask to the scores. Both
enter as the kernel's additive ``ab`` operand, which has a batch axis: the (H, N, N) bias is broadcast
to (B, H, N, N) once per layer, and its gradient comes back in that shape and is summed over the
batch, so the position tables keep training. The kernel's key blocks are multiples of 128 lanes, so N
is padded to the next multiple (912 -> 1024): padded keys are masked in ``ab``, padded queries are
discarded. The result equals ``ofa_jax.model.attention`` up to float rounding (tests run the kernel
in Pallas' TPU interpret mode on the CPU).

TPU only (the kernel is Mosaic code); no attention dropout (OFA's presets use none).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

LANES = 128
# The kernel's own masking constant: large and negative, finite, so a fully masked row stays finite.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def _padded(n: int) -> int:
    return -(-n // LANES) * LANES


def _block(n: int, limit: int = 512) -> int:
    """The largest multiple of 128 that divides ``n`` (a multiple of 128), at most ``limit``."""
    return max(b for b in range(LANES, min(n, limit) + 1, LANES) if n % b == 0)


def attention(q, k, v, bias, mask):
    """Drop-in for ``ofa_jax.model.attention`` without dropout.

    q (B,T,H,D) already scaled, k/v (B,S,H,D); ``bias`` (H,T,S) or None (sample-independent, as OFA's
    position biases are); ``mask`` broadcastable to (B,1,1,S), True = attend, or None.

    Under a mesh (``partitioning.activations_on``) the kernel runs per device on its batch slice
    (and its heads, with a ``tensor`` axis) inside a ``shard_map``: XLA cannot partition a Mosaic call.
    """
    from ofa_jax.partitioning import activations_mesh

    b, t, h, _ = q.shape
    s = k.shape[1]
    bias = jnp.zeros((h, t, s), jnp.float32) if bias is None else jnp.broadcast_to(bias.astype(jnp.float32), (h, t, s))
    mask = jnp.ones((b, 1, 1, s), bool) if mask is None else jnp.broadcast_to(mask, (b, 1, 1, s))
    mesh = activations_mesh()
    if mesh is None or mesh.size == 1:
        return _attention(q, k, v, bias, mask)
    from jax.sharding import PartitionSpec as P

    batch = tuple(a for a in ("data", "fsdp") if mesh.shape.get(a, 1) > 1) or None
    heads = "tensor" if mesh.shape.get("tensor", 1) > 1 and h % mesh.shape["tensor"] == 0 else None
    qkv = P(batch, None, heads, None)
    return jax.shard_map(_attention, mesh=mesh, in_specs=(qkv, qkv, qkv, P(heads, None, None), P(batch)),
                         out_specs=qkv, check_vma=False)(q, k, v, bias, mask)


def _attention(q, k, v, bias, mask):
    from jax.experimental.pallas.ops.tpu import flash_attention as fa

    b, t, h, _ = q.shape
    s = k.shape[1]
    tp, sp = _padded(t), _padded(s)
    # (B,H,T,S): the kernel's bias has a batch axis. In the compute dtype: with bfloat16 compute the
    # bias is rounded to bfloat16 like q and k, which halves the bytes it and its gradient move.
    ab = jnp.where(mask, bias[None], MASK_VALUE).astype(jnp.promote_types(q.dtype, jnp.bfloat16))
    ab = jnp.pad(ab, ((0, 0), (0, 0), (0, tp - t), (0, sp - s)), constant_values=MASK_VALUE)
    heads_first = lambda x, n: jnp.pad(jnp.swapaxes(x, 1, 2), ((0, 0), (0, 0), (0, n - x.shape[1]), (0, 0)))
    bq, bk = _block(tp), _block(sp)
    blocks = fa.BlockSizes(block_q=bq, block_k_major=bk, block_k=bk, block_b=1,
                           block_q_major_dkv=bq, block_k_major_dkv=bk, block_k_dkv=bk, block_q_dkv=bq,
                           block_k_major_dq=bk, block_k_dq=bk, block_q_dq=bq)
    out = fa.flash_attention(heads_first(q, tp), heads_first(k, sp), heads_first(v, sp), ab=ab, sm_scale=1.0,
                             block_sizes=blocks)
    return jnp.swapaxes(out[:, :, :t], 1, 2).astype(v.dtype)
