"""Fused attention on TPU: the encoder's self-attention as Pallas kernels that keep the scores on chip.

Why: at 480x480 the encoder attends over N = 912 positions (900 image patches + the prompt). Unfused,
a train step writes the (B, H, N, N) float32 scores and probabilities of every layer to HBM and reads
them back about ten times (forward, the checkpointed recomputation, backward): half of base's HBM
traffic per step (``python -m ofa_jax.aot --top 30``), which makes the step memory-bound. A fused
kernel keeps a block of scores in vector memory and never writes them.

OFA adds a position bias (absolute + relative, per head, the same for every line) and the padding
mask to the scores. JAX's flash-attention kernel (``jax.experimental.pallas.ops.tpu.flash_attention``)
takes an additive bias with a batch axis, so the (H, N, N) bias had to be broadcast to (B, H, N, N),
read in each pass and its gradient summed over the batch outside: with it, the attention's bias was
7.7 of base's 36.5 GB per step. Our kernels take the bias without a batch axis and the mask as one
row per line. Their grid is (heads, query blocks, lines), lines innermost: a bias block stays in
vector memory while every line of the device's batch uses it, and the backward kernel sums the bias
gradient there, so the bias and its gradient cross HBM once per pass (keys and values are read
once per query block instead). All keys fit one block (N up
to ``MAX_KEYS``; longer sequences go to JAX's kernel): the softmax is computed whole, and the
backward kernel recomputes it rather than saving statistics. Sequences are padded to 128 lanes
(912 -> 1024): padded keys are masked, padded queries discarded. The result equals
``ofa_jax.model.attention`` up to float rounding (tests run the kernels in Pallas' TPU interpret
mode on the CPU; ``python -m ofa_jax.aot`` compiles them for TPUs).

TPU only (the kernels are Mosaic code); no attention dropout (OFA's presets use none).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

LANES = 128
# The kernel's own masking constant: large and negative, finite, so a fully masked row stays finite.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def _padded(n: int) -> int:
    return -(-n // LANES) * LANES


def _block(n: int, limit: int = 512) -> int:
    """The largest multiple of 128 that divides ``n`` (a multiple of 128), at most ``limit``."""
    return max(b for b in range(LANES, min(n, limit) + 1, LANES) if n % b == 0)


MAX_KEYS = 2048  # keys held whole in one block; longer sequences use JAX's kernel
BLOCK_Q = 256    # query rows per block at N <= 1024; fewer beyond, so the (rows, N) float32 scores,
                 # probabilities and their gradients stay within vector memory


def _scores(q, k, bias, kmask):
    """(bq, D) x (S, D) -> (bq, S) float32 logits, position bias and key mask added."""
    s = jax.lax.dot_general(q, k, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
    return s + bias[0].astype(jnp.float32) + kmask


def _fwd_kernel(q_ref, k_ref, v_ref, bias_ref, kmask_ref, o_ref):
    s = _scores(q_ref[0, 0], k_ref[0, 0], bias_ref[...], kmask_ref[0])
    p = jnp.exp(s - jnp.max(s, axis=1, keepdims=True))
    o = jnp.dot(p.astype(v_ref.dtype), v_ref[0, 0], preferred_element_type=jnp.float32)
    o_ref[0, 0] = (o / jnp.sum(p, axis=1, keepdims=True)).astype(o_ref.dtype)


def _bwd_kernel(q_ref, k_ref, v_ref, bias_ref, kmask_ref, do_ref, dq_ref, dk_ref, dv_ref, dbias_ref):
    q, k, v, do = q_ref[0, 0], k_ref[0, 0], v_ref[0, 0], do_ref[0, 0]
    s = _scores(q, k, bias_ref[...], kmask_ref[0])
    p = jnp.exp(s - jnp.max(s, axis=1, keepdims=True))
    p = p / jnp.sum(p, axis=1, keepdims=True)
    dp = jax.lax.dot_general(do, v, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
    ds = p * (dp - jnp.sum(p * dp, axis=1, keepdims=True))
    dq_ref[0, 0] = jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32).astype(dq_ref.dtype)
    # This query block's share of dk and dv; the shares are summed outside (a few per line).
    dk_ref[0, 0, 0] = jnp.dot(ds.T.astype(q.dtype), q, preferred_element_type=jnp.float32)
    dv_ref[0, 0, 0] = jnp.dot(p.T.astype(do.dtype), do, preferred_element_type=jnp.float32)

    @pl.when(pl.program_id(2) == 0)
    def _():
        dbias_ref[...] = jnp.zeros(dbias_ref.shape, dbias_ref.dtype)

    dbias_ref[0] += ds  # the block index stays while the lines go by: summed over the batch in place


def _grid(qh, kh):
    """Grid (heads, query blocks, lines) and the block specs of q-like, k-like, bias, key mask."""
    b, h, tp, d = qh.shape
    sp = kh.shape[2]
    bq = _block(tp, max(LANES, min(BLOCK_Q, BLOCK_Q * 1024 // sp)))
    return ((h, tp // bq, b),
            pl.BlockSpec((1, 1, bq, d), lambda h, i, b: (b, h, i, 0)),
            pl.BlockSpec((1, 1, sp, d), lambda h, i, b: (b, h, 0, 0)),
            pl.BlockSpec((1, bq, sp), lambda h, i, b: (h, i, 0)),
            pl.BlockSpec((1, 1, sp), lambda h, i, b: (b, 0, 0)))


# The lines axis revisits the bias gradient's block: "arbitrary" (sequential on one core).
_PARAMS = dict(dimension_semantics=("parallel", "parallel", "arbitrary"))


@jax.custom_vjp
def _shared_bias_attention(qh, kh, vh, bias, kmask):
    """(B,H,Tp,D) queries, (B,H,Sp,D) keys and values, ``bias`` (H,Tp,Sp), ``kmask`` (B,1,Sp) additive."""
    grid, q_spec, kv_spec, bias_spec, kmask_spec = _grid(qh, kh)
    return pl.pallas_call(_fwd_kernel, grid=grid, in_specs=[q_spec, kv_spec, kv_spec, bias_spec, kmask_spec],
                          out_specs=q_spec, out_shape=jax.ShapeDtypeStruct(qh.shape, vh.dtype),
                          compiler_params=pltpu.CompilerParams(**_PARAMS), name="ofa_attention_fwd")(qh, kh, vh, bias, kmask)


def _shared_bias_fwd(qh, kh, vh, bias, kmask):
    return _shared_bias_attention(qh, kh, vh, bias, kmask), (qh, kh, vh, bias, kmask)


def _shared_bias_bwd(res, do):
    qh, kh, vh, bias, kmask = res
    grid, q_spec, kv_spec, bias_spec, kmask_spec = _grid(qh, kh)
    (b, h, tp, d), sp, nq = qh.shape, kh.shape[2], grid[1]
    share = pl.BlockSpec((1, 1, 1, sp, d), lambda h, i, b: (b, h, i, 0, 0))
    shares = jax.ShapeDtypeStruct((b, h, nq, sp, d), jnp.float32)
    dq, dk, dv, dbias = pl.pallas_call(
        _bwd_kernel, grid=grid, in_specs=[q_spec, kv_spec, kv_spec, bias_spec, kmask_spec, q_spec],
        out_specs=[q_spec, share, share, bias_spec],
        out_shape=[jax.ShapeDtypeStruct(qh.shape, qh.dtype), shares, shares,
                   jax.ShapeDtypeStruct(bias.shape, jnp.float32)],
        compiler_params=pltpu.CompilerParams(**_PARAMS), name="ofa_attention_bwd")(qh, kh, vh, bias, kmask, do)
    return (dq, dk.sum(2).astype(kh.dtype), dv.sum(2).astype(vh.dtype), dbias.astype(bias.dtype),
            jnp.zeros_like(kmask))


_shared_bias_attention.defvjp(_shared_bias_fwd, _shared_bias_bwd)


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
    b, t, h, _ = q.shape
    s = k.shape[1]
    tp, sp = _padded(t), _padded(s)
    heads_first = lambda x, n: jnp.pad(jnp.swapaxes(x, 1, 2), ((0, 0), (0, 0), (0, n - x.shape[1]), (0, 0)))
    if sp <= MAX_KEYS:
        kmask = jnp.pad(jnp.where(mask.reshape(b, 1, s), 0.0, MASK_VALUE), ((0, 0), (0, 0), (0, sp - s)),
                        constant_values=MASK_VALUE)
        # In the compute dtype: with bfloat16 compute the bias is rounded to bfloat16 like q and k.
        bias = jnp.pad(bias.astype(jnp.promote_types(q.dtype, jnp.bfloat16)), ((0, 0), (0, tp - t), (0, sp - s)))
        out = _shared_bias_attention(heads_first(q, tp), heads_first(k, sp), heads_first(v, sp), bias, kmask)
        return jnp.swapaxes(out[:, :, :t], 1, 2).astype(v.dtype)
    from jax.experimental.pallas.ops.tpu import flash_attention as fa

    # JAX's kernel: its bias has a batch axis (B,H,T,S), in the compute dtype as above.
    ab = jnp.where(mask, bias[None], MASK_VALUE).astype(jnp.promote_types(q.dtype, jnp.bfloat16))
    ab = jnp.pad(ab, ((0, 0), (0, 0), (0, tp - t), (0, sp - s)), constant_values=MASK_VALUE)
    bq, bk = _block(tp), _block(sp)
    blocks = fa.BlockSizes(block_q=bq, block_k_major=bk, block_k=bk, block_b=1,
                           block_q_major_dkv=bq, block_k_major_dkv=bk, block_k_dkv=bk, block_q_dkv=bq,
                           block_k_major_dq=bk, block_k_dq=bk, block_q_dq=bq)
    out = fa.flash_attention(heads_first(q, tp), heads_first(k, sp), heads_first(v, sp), ab=ab, sm_scale=1.0,
                             block_sizes=blocks)
    return jnp.swapaxes(out[:, :, :t], 1, 2).astype(v.dtype)
