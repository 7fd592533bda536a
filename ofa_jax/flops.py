"""Analytic FLOPs of OFA (2 FLOPs per multiply-add; matmuls and convolutions only).

The numerator of MFU in the benchmarks and in ``ofa_jax.aot``: model FLOPs, counted once (no
recomputation from remat, no padding), as is usual for MFU."""
from __future__ import annotations

import math

from ofa_jax.config import OFAConfig


def resnet_flops(cfg: OFAConfig, h: int, w: int) -> float:
    total = 0.0

    def conv(hi, wi, cin, cout, k, stride, pad):
        nonlocal total
        ho, wo = (hi + 2 * pad - k) // stride + 1, (wi + 2 * pad - k) // stride + 1
        total += 2.0 * ho * wo * cin * cout * k * k
        return ho, wo

    h, w = conv(h, w, 3, 64, 7, 2, 3)
    h, w = math.ceil(h / 2), math.ceil(w / 2)  # max pool 3/2 pad 1
    cin = 64
    for planes, blocks, stride in zip((64, 128, 256), cfg.resnet_layers, (1, 2, 2)):
        for b in range(blocks):
            s = stride if b == 0 else 1
            conv(h, w, cin, planes, 1, 1, 0)
            h2, w2 = conv(h, w, planes, planes, 3, s, 1)
            conv(h2, w2, planes, planes * 4, 1, 1, 0)
            if b == 0:
                conv(h, w, cin, planes * 4, 1, s, 0)
            h, w, cin = h2, w2, planes * 4
    return total


def _hw(image):
    return (image, image) if isinstance(image, int) else tuple(image)


def encoder_flops(cfg: OFAConfig, image=480, src_len: int = 12) -> dict:
    """ResNet + transformer encoder for one image (``image``: side or (H, W)); ``L`` its sequence length."""
    d = cfg.d_model
    h, w = _hw(image)
    n_img = math.ceil(h / 16) * math.ceil(w / 16)
    L = n_img + src_len
    res = resnet_flops(cfg, h, w)
    enc = 2.0 * n_img * 1024 * d  # image_proj
    enc += 2 * 2.0 * L * d * d + 2.0 * L * L * d  # absolute position bias (computed once)
    per_layer = 4 * 2.0 * L * d * d + 2 * 2.0 * L * L * d + 2 * 2.0 * L * d * cfg.encoder_ffn_dim
    enc += cfg.encoder_layers * per_layer
    return {"resnet": res, "encoder": enc, "L": L}


def decode_flops(cfg: OFAConfig, image=480, src_len: int = 12, beam: int = 5, steps: int = 64) -> dict:
    """Beam search for one image: the encoder once, cross-attention K/V once, then ``steps`` decoder
    steps for ``beam`` hypotheses (self-attention over the whole cache length, as the cached step
    computes it) and their logits."""
    d, V = cfg.d_model, cfg.vocab_size
    e = encoder_flops(cfg, image, src_len)
    L = e["L"]
    cross_kv = cfg.decoder_layers * 2 * 2.0 * L * d * d
    per_layer = (4 * 2.0 * d * d + 2 * 2.0 * steps * d     # self-attention against the cache
                 + 2 * 2.0 * d * d + 2 * 2.0 * L * d      # cross-attention (q, out; scores, values)
                 + 2 * 2.0 * d * cfg.decoder_ffn_dim)
    step = beam * (cfg.decoder_layers * per_layer + 2.0 * d * V)
    dec = cross_kv + steps * step
    return {"resnet": e["resnet"], "encoder": e["encoder"], "decoder": dec,
            "total": e["resnet"] + e["encoder"] + dec}


def forward_flops(cfg: OFAConfig, image=480, src_len: int = 12, tgt_len: int = 32) -> dict:
    """Teacher-forced forward for one line (``image``: side or (H, W))."""
    d, V = cfg.d_model, cfg.vocab_size
    e = encoder_flops(cfg, image, src_len)
    L = e["L"]
    res, enc = e["resnet"], e["encoder"]
    T = tgt_len
    dec = 2 * 2.0 * T * d * d + 2.0 * T * T * d + 2.0 * T * d * d + 2.0 * L * d * d + 2.0 * T * L * d  # biases
    per_layer = (4 * 2.0 * T * d * d + 2 * 2.0 * T * T * d  # self-attention
                 + 2 * 2.0 * T * d * d + 2 * 2.0 * L * d * d + 2 * 2.0 * T * L * d  # cross-attention
                 + 2 * 2.0 * T * d * cfg.decoder_ffn_dim)
    dec += cfg.decoder_layers * per_layer + 2.0 * T * d * V
    return {"resnet": res, "encoder": enc, "decoder": dec, "total": res + enc + dec}
