"""Relative-position bucket tables (numpy, computed at trace time for static shapes).

They equal ModelScope's ``token_rp_bucket`` / ``image_rp_bucket`` buffers (tests check against the
reference), so checkpoints need not store them: they are ~66 MB of int64 in a PyTorch state dict.
"""
from __future__ import annotations

import functools
import math

import numpy as np


@functools.lru_cache(maxsize=8)
def token_bucket_table(bucket_size: int = 256, max_position: int = 1024) -> np.ndarray:
    """Index into the (2*bucket-1, heads) text table for query i, key j: log-bucketed i - j.

    Mirrors the reference's float32 arithmetic (``torch.log`` of a float32 ratio, divided by a
    Python float) so the ceil lands on the same integer at every boundary.
    """
    pos = np.arange(max_position, dtype=np.int64)
    rel = pos[:, None] - pos[None, :]
    sign = np.sign(rel)
    mid = bucket_size // 2
    abs_pos = np.where((rel < mid) & (rel > -mid), mid - 1, np.abs(rel))
    ratio = abs_pos.astype(np.float32) / np.float32(mid)
    log_pos = np.ceil(np.log(ratio) / np.float32(math.log((max_position - 1) / mid)) * np.float32(mid - 1)) + mid
    log_pos = log_pos.astype(np.int32)
    bucket = np.where(abs_pos <= mid, rel, log_pos * sign).astype(np.int64)
    out = bucket + bucket_size - 1
    out.setflags(write=False)
    return out


def image_bucket_index(h: int, w: int, bucket_size: int = 42) -> np.ndarray:
    """(h*w, h*w) index into the image table for patches in row-major order (no special rows).

    Patch (r, c) has position id ``1 + r*bucket + c``; the reference looks the pair up in its
    (bucket^2+1)^2 buffer, which reduces to this closed form for ids >= 1.
    """
    if h > bucket_size or w > bucket_size:
        raise ValueError(f"image grid {h}x{w} exceeds the {bucket_size}x{bucket_size} position buckets")
    r, c = np.divmod(np.arange(h * w), w)
    dr = r[:, None] - r[None, :] + bucket_size - 1
    dc = c[:, None] - c[None, :] + bucket_size - 1
    return (dr * (2 * bucket_size - 1) + dc).astype(np.int32)


def image_position_ids(h: int, w: int, bucket_size: int = 42) -> np.ndarray:
    """Row-major absolute position ids ``1 + r*bucket + c`` of an h x w patch grid."""
    r, c = np.divmod(np.arange(h * w), w)
    return (1 + r * bucket_size + c).astype(np.int32)


@functools.lru_cache(maxsize=2)
def image_bucket_table(bucket_size: int = 42) -> np.ndarray:
    """The reference's full ``image_rp_bucket`` buffer ((bucket^2+1)^2), for export to PyTorch."""
    n = bucket_size * bucket_size
    num_rel = (2 * bucket_size - 1) ** 2 + 3
    out = np.zeros((n + 1, n + 1), dtype=np.int64)
    out[1:, 1:] = image_bucket_index(bucket_size, bucket_size, bucket_size)
    out[0, :] = num_rel - 3
    out[:, 0] = num_rel - 2
    out[0, 0] = num_rel - 1
    out.setflags(write=False)
    return out
