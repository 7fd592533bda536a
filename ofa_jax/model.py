"""The OFA ResNet-transformer as Flax linen modules: one definition for training, decoding, conversion.

Layout follows ModelScope's ``modeling_ofa.py`` (the parity reference); parameter names mirror its
state-dict keys so ``tools/convert_weights`` is a plain table. Differences that do not change the
numbers:

* Attention biases that do not depend on the sample (absolute-position bias, relative buckets)
  are computed once per call without a batch axis and broadcast; the reference materialises
  batch x heads x L^2 copies per layer.
* The decoder runs teacher-forced (``decode``) or one step at a time against an explicit
  :class:`DecodeCache` pytree (``init_cache`` / ``decode_step``): self-attention K/V are appended,
  cross-attention K/V are projected once per image and shared by all hypotheses of that image.
* Layers are unrolled Python loops by default: per-layer parameter names stay identical to the
  PyTorch ones (the converter needs no stacking) and per-layer drop-path rates stay plain floats.
  Compile time is paid once per shape and kept by JAX's persistent compilation cache (see
  ``ofa_jax.recognizer.enable_compilation_cache``); bench/RESULTS.md reports it per preset.
* ``OFA(scan=True)`` runs the encoder layers, the teacher-forced decoder layers and the repeated
  ResNet blocks of each stage as ``nn.scan`` loops over parameters stacked on a leading "layers"
  axis, so XLA compiles one layer instead of all of them: compile time flat in depth, for the big
  presets on TPU/GPU (base's train-mode gradient at 480x480 compiled for one v5e chip: 611 s
  unrolled, 284 s scanned). Same numbers as the unrolled model on the same weights
  (``ofa_jax.layout.stack_layers`` converts; model dirs and checkpoints keep the per-layer layout),
  but dropout masks come from other rng streams. Not the default: XLA:CPU runs convolutions inside a
  loop body slower, and decode steps (few layers, run many times) gain nothing from it.

Mixed precision, the one place it is decided: ``OFA(dtype=jnp.bfloat16)`` computes the matrix
products and convolutions in bfloat16 while parameters (and in training the AdamW state) stay
float32; attention scores are accumulated in float32 (``preferred_element_type``) and their softmax
runs in float32, LayerNorm computes in float32 (its float32 scale/bias promote the input), the
position biases are float32 (``_f32``), and the logits are returned in float32 for the log-softmax
and the loss. ``cast_params`` additionally stores inference weights in bfloat16. On the shipped
model, bfloat16 decoding reads 99.25% of the 2,000 held-out test lines as float32 does, with the
same accuracy (``bench/mixed_precision.py``).

Fused attention (``OFA(fused_attention=True)``, TPU only): the encoder's self-attention runs as Pallas
kernels, so its (B, H, N, N) scores never reach HBM; ``ofa_jax.fused_attention`` says how OFA's
position bias gets in, once per head rather than once per line. The decoder's attention (N ~ 64) stays XLA's.

Gradient checkpointing (``OFA.remat``): "layers" recomputes each encoder/decoder layer in the
backward pass instead of storing its activations, "full" also each ResNet Bottleneck block; the
numbers are unchanged (the same ops run again; dropout masks come from the same rng). It is
``ofa_jax.remat``, not ``nn.remat``: XLA:CPU drops ``jax.checkpoint``'s barriers and merges the
recomputation back into the forward pass.

Every parameter carries logical axis names (``nn.with_logical_partitioning``); ``ofa_jax.partitioning``
maps them to mesh axes. Weights unused by OCR (image-code generation in the decoder) are not model
parameters; the model dir keeps them verbatim so export to PyTorch is lossless.
"""
from __future__ import annotations

import functools
from typing import Any, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from ofa_jax import buckets
from ofa_jax.config import OFAConfig
from ofa_jax.partitioning import constrain_batch
from ofa_jax.remat import remat as _remat
from ofa_jax.resnet import DropPath, ResNet, block_drop_path_rates

Array = jax.Array
_xavier = nn.initializers.xavier_uniform()
_torch_linear = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")  # nn.Linear default init


def _dense(features, axes, name, dtype, init=_torch_linear, use_bias=True):
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, name=name,
                    kernel_init=nn.with_logical_partitioning(init, axes),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)))


def _layer_norm(name, axis="embed"):
    # Exact two-pass variance: the fast E[x^2]-E[x]^2 form costs ~1e-5 of parity.
    return nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name=name, dtype=None,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones, (axis,)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axis,)))


def _embed(num, features, name, axes=("vocab", "embed"), std=None, zero=False, dtype=jnp.float32):
    init = nn.initializers.zeros if zero else nn.initializers.normal(std if std is not None else features ** -0.5)
    return nn.Embed(num, features, name=name, dtype=dtype, embedding_init=nn.with_logical_partitioning(init, axes))


REMAT_MODES = ("none", "layers", "full")


def check_remat(mode: str) -> str:
    if mode not in REMAT_MODES:
        raise ValueError(f"remat must be one of {', '.join(REMAT_MODES)}, got {mode!r}")
    return mode


def _activation(name):
    return {"gelu": functools.partial(nn.gelu, approximate=False), "relu": nn.relu}[name]


def attention(q, k, v, bias, mask, dropout: Optional[nn.Dropout] = None, deterministic=True):
    """Scaled (already) q (B,T,H,D) against k/v (B,S,H,D); bias broadcasts to (B,H,T,S); mask True=keep."""
    logits = jnp.einsum("bthd,bshd->bhts", q, k, preferred_element_type=jnp.promote_types(q.dtype, jnp.float32))
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    probs = jax.nn.softmax(logits, axis=-1)
    if dropout is not None:
        probs = dropout(probs, deterministic=deterministic)
    return jnp.einsum("bhts,bshd->bthd", probs.astype(v.dtype), v)


class OFAAttention(nn.Module):
    config: OFAConfig
    num_heads: int
    dtype: Any = jnp.float32
    fused: bool = False  # ofa_jax.fused_attention (TPU): scores never leave vector memory

    def setup(self):
        d, dt = self.config.d_model, self.dtype
        self.head_dim = d // self.num_heads
        self.scaling = float(self.head_dim * self.config.attn_scale_factor) ** -0.5
        self.q_proj = _dense(d, ("embed", "heads"), "q_proj", dt)
        self.k_proj = _dense(d, ("embed", "heads"), "k_proj", dt)
        self.v_proj = _dense(d, ("embed", "heads"), "v_proj", dt)
        self.out_proj = _dense(d, ("heads", "embed"), "out_proj", dt)
        if self.config.scale_heads:
            self.c_attn = self.param("c_attn", nn.with_logical_partitioning(nn.initializers.ones, ("head_scale",)),
                                     (self.num_heads,))
        self.attn_dropout = nn.Dropout(self.config.attention_dropout)
        if self.fused and self.config.attention_dropout:
            raise ValueError("fused attention has no attention dropout: set attention_dropout=0 or fused_attention=False")

    def _split(self, x):
        return x.reshape(x.shape[:-1] + (self.num_heads, self.head_dim))

    def project_kv(self, x):
        """(B,S,d) -> k, v of shape (B,S,H,D)."""
        return self._split(self.k_proj(x)), self._split(self.v_proj(x))

    def attend_heads_first(self, x, kt, vt, bias):
        """Decode-step cross-attention against K (B,H,D,N) and V (B,H,N,D) laid out once per image.

        ``bias`` (B,H,K|1,N) already holds the padding mask as a large negative number: on XLA:CPU a
        separate ``where(mask, ...)`` next to the bias add was fused into a kernel ~6x slower than
        the whole attention.
        """
        q = self._split(self.q_proj(x) * self.scaling)  # (B,K,H,D)
        logits = jnp.einsum("bkhd,bhdn->bhkn", q, kt, preferred_element_type=jnp.promote_types(q.dtype, jnp.float32))
        logits = logits + bias  # padding mask folded in (see Decoder.init_cache)
        probs = jax.nn.softmax(logits, axis=-1).astype(vt.dtype)
        out = jnp.einsum("bhkn,bhnd->bkhd", probs, vt)
        if self.config.scale_heads:
            out = out * self.c_attn[:, None].astype(out.dtype)
        return self.out_proj(out.reshape(out.shape[:-2] + (-1,)))

    def __call__(self, x, k, v, bias, mask, deterministic=True):
        q = self._split(self.q_proj(x) * self.scaling)
        if self.fused:
            from ofa_jax import fused_attention
            out = fused_attention.attention(q, k, v, bias, mask)
        else:
            out = attention(q, k, v, bias, mask, self.attn_dropout, deterministic)
        if self.config.scale_heads:
            out = out * self.c_attn[:, None].astype(out.dtype)
        return self.out_proj(out.reshape(out.shape[:-2] + (-1,)))


class _Layer(nn.Module):
    """What encoder and decoder layers share: the residual block and the (NormFormer) FFN."""
    config: OFAConfig
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32

    def _setup_ffn(self, ffn_dim):
        c = self.config
        if c.normformer:
            self.ffn_layer_norm = _layer_norm("ffn_layer_norm", "mlp")
        self.fc1 = _dense(ffn_dim, ("embed", "mlp"), "fc1", self.dtype)
        self.fc2 = _dense(c.d_model, ("mlp", "embed"), "fc2", self.dtype)
        self.final_layer_norm = _layer_norm("final_layer_norm")
        self.dropout = nn.Dropout(c.dropout)
        self.activation_dropout = nn.Dropout(c.activation_dropout)
        self.drop_path = DropPath(self.drop_path_rate, c.drop_path_mode)

    def _block(self, x, ln, mid_ln, fn, det, pre, rate=None):
        """``x + DropPath(dropout(mid_ln(fn(ln(x)))))`` (pre-LN), or LN after the residual (post-LN).

        ``rate``: the drop-path rate as a (traced) scan input, overriding the field (scanned stacks)."""
        residual = x
        h = fn(ln(x) if pre else x)
        if mid_ln is not None:
            h = mid_ln(h)
        x = residual + self.drop_path(self.dropout(h, deterministic=det), det, rate)
        return x if pre else ln(x)

    def _ffn(self, h, det):
        h = self.activation_dropout(_activation(self.config.activation_function)(self.fc1(h)), deterministic=det)
        if self.config.normformer:
            h = self.ffn_layer_norm(h)
        return self.fc2(h)


class EncoderLayer(_Layer):
    fused_attention: bool = False

    def setup(self):
        c = self.config
        self.self_attn = OFAAttention(c, c.encoder_attention_heads, self.dtype, self.fused_attention)
        self.self_attn_layer_norm = _layer_norm("self_attn_layer_norm")
        if c.normformer:
            self.self_attn_mid_layer_norm = _layer_norm("self_attn_mid_layer_norm")
        self._setup_ffn(c.encoder_ffn_dim)

    def __call__(self, x, bias, mask, deterministic=True, drop_path_rate=None):
        c, det, pre = self.config, deterministic, self.config.encoder_normalize_before

        def attn(h):
            k, v = self.self_attn.project_kv(h)
            return self.self_attn(h, k, v, bias, mask, det)

        x = self._block(x, self.self_attn_layer_norm, self.self_attn_mid_layer_norm if c.normformer else None,
                        attn, det, pre, drop_path_rate)
        x = self._block(x, self.final_layer_norm, None, lambda h: self._ffn(h, det), det, pre, drop_path_rate)
        return x.astype(self.dtype)


class DecoderLayer(_Layer):
    def setup(self):
        c = self.config
        self.self_attn = OFAAttention(c, c.decoder_attention_heads, self.dtype)
        self.self_attn_layer_norm = _layer_norm("self_attn_layer_norm")
        self.cross_attn = OFAAttention(c, c.decoder_attention_heads, self.dtype)
        self.cross_attn_layer_norm = _layer_norm("cross_attn_layer_norm")
        if c.normformer:
            self.self_attn_mid_layer_norm = _layer_norm("self_attn_mid_layer_norm")
            self.cross_attn_mid_layer_norm = _layer_norm("cross_attn_mid_layer_norm")
        self._setup_ffn(c.decoder_ffn_dim)

    def cross_kv(self, enc):
        return self.cross_attn.project_kv(enc)

    def __call__(self, x, self_kv, cross_kv, self_bias, cross_bias, self_mask, cross_mask, deterministic=True,
                 step_reshape=None, drop_path_rate=None):
        """x: (B,T,d). self_kv: None (project from x) or a function h -> (k, v) (decode-step cache).

        step_reshape: in a decode step x is (B, K, d) -- K hypotheses per image at one time step.
        Self-attention then runs per hypothesis ((B*K, 1, d) against its own cache) and
        cross-attention per image (K queries against the image's keys, projected once).
        """
        c, det, pre = self.config, deterministic, self.config.decoder_normalize_before
        normformer = c.normformer

        def self_fn(h):
            if step_reshape is None:
                k, v = self.self_attn.project_kv(h)
                return self.self_attn(h, k, v, self_bias, self_mask, det)
            b, kk, d = h.shape
            hq = h.reshape(b * kk, 1, d)
            k, v = self_kv(*self.self_attn.project_kv(hq))
            return self.self_attn(hq, k, v, self_bias, self_mask, det).reshape(b, kk, d)

        def cross_fn(h):
            if step_reshape is not None:  # cache layout: K (B,H,D,N), V (B,H,N,D); mask in the bias
                return self.cross_attn.attend_heads_first(h, cross_kv[0], cross_kv[1], cross_bias)
            return self.cross_attn(h, cross_kv[0], cross_kv[1], cross_bias, cross_mask, det)

        r = drop_path_rate
        x = self._block(x, self.self_attn_layer_norm, self.self_attn_mid_layer_norm if normformer else None,
                        self_fn, det, pre, r)
        x = self._block(x, self.cross_attn_layer_norm, self.cross_attn_mid_layer_norm if normformer else None,
                        cross_fn, det, pre, r)
        x = self._block(x, self.final_layer_norm, None, lambda h: self._ffn(h, det), det, pre, r)
        return x.astype(self.dtype)


@flax.struct.dataclass
class EncoderOutput:
    hidden: Array       # (B, N, d) encoder states, image patches first then text
    padding_mask: Array  # (B, N) True where padded
    pos_embed: Array    # (N, d) layer-normed absolute position embeddings (no batch axis)


@flax.struct.dataclass
class DecodeCache:
    """Decoder state for incremental decoding of K hypotheses per image.

    Per-layer tuples (not arrays stacked on a layer axis: slicing a layer out of a stacked cache
    copies it, which cost more than the attention itself on CPU). ``self_k/self_v[l]``:
    (B, K, T, H, D), appended at ``index``; ``cross_k[l]``: (B, H, D, N) and ``cross_v[l]``:
    (B, H, N, D), projected and laid out once per image. Reordering hypotheses (beam search)
    gathers along axis 1 of the self-attention entries only.
    """
    index: Array         # () int32: position of the next token
    self_k: tuple
    self_v: tuple
    cross_k: tuple
    cross_v: tuple
    self_bias: tuple     # (H, T, T) absolute + relative self-attention bias, per layer
    cross_bias: Array    # (B, H, T, N) with the encoder padding mask folded in

    @property
    def max_len(self):
        return self.self_k[0].shape[2]

    def reorder(self, beam_idx):
        """beam_idx: (B, K) int -- hypothesis k of image b continues from beam_idx[b, k]."""
        take = lambda a: jnp.take_along_axis(a, beam_idx[:, :, None, None, None], axis=1)
        return self.replace(self_k=tuple(map(take, self.self_k)), self_v=tuple(map(take, self.self_v)))


class _StackedTable(nn.Module):
    """``layers`` relative-position tables stacked: param ``embedding`` (layers, buckets, heads), the
    scanned form of ``*_rel_pos_table_list_{i}/embedding`` (zero-initialised like those)."""
    layers: int
    num: int
    features: int

    @nn.compact
    def __call__(self):
        init = nn.with_logical_partitioning(nn.initializers.zeros, ("layers", "rel_buckets", "rel_heads"))
        return self.param("embedding", init, (self.layers, self.num, self.features), jnp.float32)


def _rel_bias(table, idx):
    """(buckets, H) table at an index array (..., T, S) -> bias (H, T, S)."""
    return jnp.moveaxis(table[idx], -1, 0)


def _scan_layers(body, remat: bool, length: int, in_axes):
    """``nn.scan`` over ``body(layer, carry, *inputs)`` for a layer module whose parameters are stacked
    on a leading "layers" axis; each iteration draws its own init and dropout rngs.

    Remat is ``nn.remat`` (``jax.checkpoint``) on the body: inside a scan the recomputation runs in
    the backward loop's body, which no compiler can merge with the forward loop, so the barriers that
    XLA:CPU drops for the unrolled form (``ofa_jax.remat``) are not needed.

    Without remat the body still goes through ``jax.checkpoint``, with a policy that keeps the outputs
    of the matrix products without batch dimensions (projections, FFN) and recomputes the rest in the
    backward loop: attention scores and probabilities (products batched over heads), norms,
    activations, dropout masks. Why: a scan's forward loop hands every residual of its body to the
    backward loop as a stacked output, so all of them are materialised per layer, where the unrolled
    program lets XLA fuse the cheap ones into the backward pass. Tiny preset's gradient at 480x480,
    batch 8, compiled for one v5e chip: 2.40 GiB of temporaries unrolled; scanned 4.67 GiB saving
    everything, 3.46 GiB saving every matmul (the (B, H, N, N) scores), 2.58 GiB with this policy.
    """
    policy = None if remat else jax.checkpoint_policies.dots_with_no_batch_dims_saveable
    body = nn.remat(body, prevent_cse=False, policy=policy)
    return nn.scan(body, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                   in_axes=in_axes, length=length, metadata_params={nn.PARTITION_NAME: "layers"})


def _rates(rate: float, layers: int):
    """Per-layer drop-path rates as a scan input, or None (no DropPath, no rng) when the rate is 0."""
    return jnp.asarray(block_drop_path_rates(rate, layers), jnp.float32) if rate else None


class Encoder(nn.Module):
    config: OFAConfig
    embed_tokens: nn.Embed
    frozen_bn: bool = True
    dtype: Any = jnp.float32
    remat: str = "none"
    scan: bool = False
    fused_attention: bool = False

    def setup(self):
        c, d, h = self.config, self.config.d_model, self.config.encoder_attention_heads
        self.embed_images = ResNet(c, self.frozen_bn, self.dtype, remat_blocks=self.remat == "full", scan=self.scan)
        self.image_proj = _dense(d, ("image_channels", "embed"), "image_proj", self.dtype, init=_xavier)
        if c.add_type_embedding:
            self.type_embedding = _embed(2, d, "type_embedding", ("type_vocab", "embed"))
        if c.layernorm_embedding:
            self.layernorm_embedding = _layer_norm("layernorm_embedding")
        if c.patch_layernorm_embedding:
            self.patch_layernorm_embedding = _layer_norm("patch_layernorm_embedding")
        self.embed_positions = _embed(c.max_position_embeddings + 2, d, "embed_positions", ("positions", "embed"))
        self.embed_image_positions = _embed(c.image_bucket_size ** 2 + 1, d, "embed_image_positions",
                                            ("positions", "embed"))
        self.pos_ln = _layer_norm("pos_ln")
        self.image_pos_ln = _layer_norm("image_pos_ln")
        self.pos_q_linear = _dense(d, ("embed", "heads"), "pos_q_linear", None)
        self.pos_k_linear = _dense(d, ("embed", "heads"), "pos_k_linear", None)
        n_tok, n_img = 2 * c.token_bucket_size - 1, (2 * c.image_bucket_size - 1) ** 2 + 3
        if self.scan:  # one layer module, parameters stacked by the scan (encoder/layers/...)
            self.layers = EncoderLayer(c, 0.0, self.dtype, self.fused_attention)
        else:
            rates = block_drop_path_rates(c.encoder_drop_path_rate, c.encoder_layers)
            self.layers = [EncoderLayer(c, rates[i], self.dtype, self.fused_attention) for i in range(c.encoder_layers)]
        if c.encoder_normalize_before:
            self.layer_norm = _layer_norm("layer_norm")
        if self.scan and not c.share_attn_bias:
            self.token_rel_pos_table_list = _StackedTable(c.encoder_layers, n_tok, h)
            self.image_rel_pos_table_list = _StackedTable(c.encoder_layers, n_img, h)
        else:
            n_tables = 1 if c.share_attn_bias else c.encoder_layers
            self.token_rel_pos_table_list = [
                _embed(n_tok, h, f"token_rel_pos_table_list_{i}", ("rel_buckets", "rel_heads"), zero=True)
                for i in range(n_tables)]
            self.image_rel_pos_table_list = [
                _embed(n_img, h, f"image_rel_pos_table_list_{i}", ("rel_buckets", "rel_heads"), zero=True)
                for i in range(n_tables)]
        self.dropout = nn.Dropout(c.dropout)

    def __call__(self, images, tokens, image_valid=None, train: bool = False) -> EncoderOutput:
        """images (B,H,W,3) float in [-1,1]; tokens (B,L) int (pad=1); image_valid (B,) bool or None."""
        c, det = self.config, not train
        b, img_h, img_w, _ = images.shape
        if max(img_h, img_w) > c.max_image_size:
            raise ValueError(f"image {img_h}x{img_w} is larger than the {c.max_image_size}px the position buckets cover")
        if tokens.shape[1] > c.max_position_embeddings:
            raise ValueError(f"{tokens.shape[1]} text tokens exceed max_position_embeddings={c.max_position_embeddings}")
        feats = self.embed_images(images, train)
        gh, gw = feats.shape[1:3]
        n_img, n_txt = gh * gw, tokens.shape[1]
        img_x = self.image_proj(feats.reshape(b, n_img, feats.shape[-1]))
        scale = c.d_model ** 0.5 if c.scale_embedding else 1.0
        if scale != 1.0:
            img_x = img_x * scale
        img_pos_ids = buckets.image_position_ids(gh, gw, c.image_bucket_size)
        if c.entangle_position_embedding:
            img_x = img_x + self.embed_image_positions.embedding[img_pos_ids].astype(img_x.dtype)
        if c.add_type_embedding:
            img_x = img_x + self.type_embedding.embedding[1].astype(img_x.dtype)
        if c.patch_layernorm_embedding:
            img_x = self.patch_layernorm_embedding(img_x)
        img_x = self.dropout(img_x, deterministic=det)

        txt_x = _lookup(self.embed_tokens, tokens, c.pad_token_id) * scale
        if c.entangle_position_embedding:
            txt_x = txt_x + self.embed_positions.embedding[:n_txt].astype(txt_x.dtype)
        if c.add_type_embedding:
            txt_x = txt_x + self.type_embedding.embedding[0]
        if c.layernorm_embedding:
            txt_x = self.layernorm_embedding(txt_x)
        txt_x = self.dropout(txt_x, deterministic=det)

        x = jnp.concatenate([img_x.astype(self.dtype), txt_x.astype(self.dtype)], axis=1)
        img_pad = jnp.zeros((b, n_img), bool) if image_valid is None else jnp.broadcast_to(~image_valid[:, None], (b, n_img))
        padding_mask = jnp.concatenate([img_pad, tokens == c.pad_token_id], axis=1)
        x = jnp.where(padding_mask[..., None], jnp.zeros((), x.dtype), x)

        # Absolute positions enter only as an attention bias, shared by all layers and samples.
        pos_txt = self.pos_ln(_f32(self.embed_positions.embedding[:n_txt]))
        pos_img = self.image_pos_ln(_f32(self.embed_image_positions.embedding[img_pos_ids]))
        pos = jnp.concatenate([pos_img, pos_txt], axis=0)
        abs_bias = _abs_pos_bias(self.pos_q_linear(pos), self.pos_k_linear(pos), c.encoder_attention_heads,
                                 c.d_model, c.attn_scale_factor)
        tok_idx = buckets.token_bucket_table(c.token_bucket_size, c.max_position_embeddings)[:n_txt, :n_txt]
        img_idx = buckets.image_bucket_index(gh, gw, c.image_bucket_size)
        mask = (~padding_mask)[:, None, None, :]

        if self.scan:
            x = self._scanned_layers(x, abs_bias, tok_idx, img_idx, mask, det)
        else:
            def run(layer, x, bias, mask):  # arrays as arguments: a remat'd function must not close over them
                return layer(x, bias, mask, det)

            if self.remat != "none":
                run = _remat(run)
            for i, layer in enumerate(self.layers):
                t = 0 if c.share_attn_bias else i
                rel_txt = jnp.moveaxis(self.token_rel_pos_table_list[t].embedding[tok_idx], -1, 0)
                rel_img = jnp.moveaxis(self.image_rel_pos_table_list[t].embedding[img_idx], -1, 0)
                bias = abs_bias + _block_diag(rel_img, rel_txt)
                x = run(layer, x, bias, mask)
        if c.encoder_normalize_before:
            x = self.layer_norm(x).astype(self.dtype)
        return EncoderOutput(hidden=x, padding_mask=padding_mask, pos_embed=pos)

    def _scanned_layers(self, x, abs_bias, tok_idx, img_idx, mask, det):
        """All layers as one scan. The relative-position tables (L, buckets, H) are scan inputs and each
        layer's (H, N, N) bias is built inside the body: no (L, H, N, N) stack (N ~ 910 for base at 480px).
        With ``share_attn_bias`` the one bias is built here and broadcast."""
        c = self.config
        if c.share_attn_bias:
            tok_t = img_t = None
            abs_bias = abs_bias + _block_diag(_rel_bias(self.image_rel_pos_table_list[0].embedding, img_idx),
                                              _rel_bias(self.token_rel_pos_table_list[0].embedding, tok_idx))
        else:
            tok_t, img_t = self.token_rel_pos_table_list(), self.image_rel_pos_table_list()

        def body(layer, x, rate, tok_table, img_table, abs_bias, mask):
            bias = abs_bias
            if tok_table is not None:
                bias = abs_bias + _block_diag(_rel_bias(img_table, img_idx), _rel_bias(tok_table, tok_idx))
            return constrain_batch(layer(constrain_batch(x), bias, mask, det, rate)), None

        stack = _scan_layers(body, self.remat != "none", c.encoder_layers, (0, 0, 0, nn.broadcast, nn.broadcast))
        x, _ = stack(self.layers, x, _rates(c.encoder_drop_path_rate, c.encoder_layers), tok_t, img_t, abs_bias, mask)
        return x


class Decoder(nn.Module):
    config: OFAConfig
    embed_tokens: nn.Embed
    dtype: Any = jnp.float32
    remat: str = "none"   # teacher-forced __call__ only; decode steps never take gradients
    scan: bool = False    # teacher-forced __call__ as one scan; decode steps unrolled over the stacked layers

    def setup(self):
        c, d, h = self.config, self.config.d_model, self.config.decoder_attention_heads
        if c.layernorm_embedding:
            self.layernorm_embedding = _layer_norm("layernorm_embedding")
        self.embed_positions = _embed(c.max_position_embeddings + 2, d, "embed_positions", ("positions", "embed"))
        self.pos_ln = _layer_norm("pos_ln")
        self.self_pos_q_linear = _dense(d, ("embed", "heads"), "self_pos_q_linear", None)
        self.self_pos_k_linear = _dense(d, ("embed", "heads"), "self_pos_k_linear", None)
        self.cross_pos_q_linear = _dense(d, ("embed", "heads"), "cross_pos_q_linear", None)
        self.cross_pos_k_linear = _dense(d, ("embed", "heads"), "cross_pos_k_linear", None)
        if self.scan:
            self.layers = DecoderLayer(c, 0.0, self.dtype)
        else:
            rates = block_drop_path_rates(c.decoder_drop_path_rate, c.decoder_layers)
            self.layers = [DecoderLayer(c, rates[i], self.dtype) for i in range(c.decoder_layers)]
        if c.decoder_normalize_before:
            self.layer_norm = _layer_norm("layer_norm")
        if not c.share_decoder_input_output_embed:
            self.output_projection = _dense(c.vocab_size, ("embed", "vocab"), "output_projection", self.dtype,
                                            init=nn.initializers.normal(d ** -0.5), use_bias=False)
        if self.scan and not c.share_attn_bias:
            self.token_rel_pos_table_list = _StackedTable(c.decoder_layers, 2 * c.token_bucket_size - 1, h)
        else:
            n_tables = 1 if c.share_attn_bias else c.decoder_layers
            self.token_rel_pos_table_list = [
                _embed(2 * c.token_bucket_size - 1, h, f"token_rel_pos_table_list_{i}", ("rel_buckets", "rel_heads"),
                       zero=True)
                for i in range(n_tables)]
        self.dropout = nn.Dropout(c.dropout)

    def _layer(self, i: int):
        """Layer ``i`` as a callable ``fn(method, *args)``: the layer module itself when unrolled; in the
        scanned form the stacked module with its parameters sliced at ``i`` (decode steps stay an
        unrolled loop over layers with per-layer cache tuples, see :class:`DecodeCache`)."""
        if not self.scan:
            layer = self.layers[i]
            return lambda method, *a, **k: method(layer, *a, **k)
        take = lambda v: jax.tree.map(lambda a: a[i], v)
        return lambda method, *a, **k: nn.map_variables(
            lambda layer: method(layer, *a, **k), "params", trans_in_fn=take)(self.layers)

    def _biases(self, enc_pos, length):
        """Self (L,H,T,T) and cross (H,T,N) attention biases for positions 0..length-1."""
        c = self.config
        pos = self.pos_ln(_f32(self.embed_positions.embedding[:length]))
        heads, d, f = c.decoder_attention_heads, c.d_model, c.attn_scale_factor
        self_abs = _abs_pos_bias(self.self_pos_q_linear(pos), self.self_pos_k_linear(pos), heads, d, f)
        cross = _abs_pos_bias(self.cross_pos_q_linear(pos), self.cross_pos_k_linear(enc_pos), heads, d, f)
        idx = buckets.token_bucket_table(c.token_bucket_size, c.max_position_embeddings)[:length, :length]
        if self.scan and not c.share_attn_bias:  # the same sums, on the stacked tables
            return self_abs[None] + jnp.moveaxis(self.token_rel_pos_table_list()[:, idx], -1, 1), cross
        per_layer = [self_abs + jnp.moveaxis(self.token_rel_pos_table_list[0 if c.share_attn_bias else i]
                                             .embedding[idx], -1, 0) for i in range(c.decoder_layers)]
        return jnp.stack(per_layer), cross

    def _embed_tokens(self, tokens, det, positions):
        """tokens (B,T) at positions (T,) (teacher-forced: 0..T-1; a decode step: its index)."""
        c = self.config
        x = _lookup(self.embed_tokens, tokens, c.pad_token_id)
        if c.scale_embedding:
            x = x * c.d_model ** 0.5
        if c.entangle_position_embedding:
            x = x + self.embed_positions.embedding[positions].astype(x.dtype)
        if c.layernorm_embedding:
            x = self.layernorm_embedding(x)
        return self.dropout(x, deterministic=det).astype(self.dtype)

    def _logits(self, x):
        c = self.config
        if c.decoder_normalize_before:
            x = self.layer_norm(x)
        out_dtype = jnp.promote_types(self.dtype, jnp.float32)
        if c.share_decoder_input_output_embed:
            return self.embed_tokens.attend(x.astype(self.dtype)).astype(out_dtype)
        return self.output_projection(x).astype(out_dtype)

    def __call__(self, prev_tokens, enc: EncoderOutput, train: bool = False):
        """Teacher-forced: prev_tokens (B,T) -> logits (B,T,V) float32."""
        c, det = self.config, not train
        t = prev_tokens.shape[1]
        self_bias, cross_bias = self._biases(enc.pos_embed, t)
        causal = jnp.tril(jnp.ones((t, t), bool))
        self_mask = causal[None, None] & (prev_tokens != c.pad_token_id)[:, None, None, :]
        cross_mask = (~enc.padding_mask)[:, None, None, :]
        x = self._embed_tokens(prev_tokens, det, jnp.arange(t))
        if self.scan:
            def body(layer, x, rate, self_bias, hidden, cross_bias, self_mask, cross_mask):
                x = layer(constrain_batch(x), None, layer.cross_kv(hidden), self_bias, cross_bias, self_mask,
                          cross_mask, det, drop_path_rate=rate)
                return constrain_batch(x), None

            stack = _scan_layers(body, self.remat != "none", c.decoder_layers, (0, 0) + (nn.broadcast,) * 4)
            x, _ = stack(self.layers, x, _rates(c.decoder_drop_path_rate, c.decoder_layers), self_bias, enc.hidden,
                         cross_bias, self_mask, cross_mask)
            return self._logits(x)

        def run(layer, x, hidden, self_bias, cross_bias, self_mask, cross_mask):  # arrays as arguments (remat)
            return layer(x, None, layer.cross_kv(hidden), self_bias, cross_bias, self_mask, cross_mask, det)

        if self.remat != "none":
            run = _remat(run)
        for i, layer in enumerate(self.layers):
            x = run(layer, x, enc.hidden, self_bias[i], cross_bias, self_mask, cross_mask)
        return self._logits(x)

    def init_cache(self, enc: EncoderOutput, num_hyps: int, max_len: int) -> DecodeCache:
        c = self.config
        b, n, _ = enc.hidden.shape
        h = c.decoder_attention_heads
        hd = c.d_model // h
        self_bias, cross_bias = self._biases(enc.pos_embed, max_len)
        self_bias = [self_bias[i] for i in range(c.decoder_layers)]
        cks, cvs = zip(*[self._layer(i)(DecoderLayer.cross_kv, enc.hidden) for i in range(c.decoder_layers)])
        cks = [jnp.transpose(k, (0, 2, 3, 1)) for k in cks]  # (B,N,H,D) -> (B,H,D,N), once per image
        cvs = [jnp.transpose(v, (0, 2, 1, 3)) for v in cvs]  # (B,N,H,D) -> (B,H,N,D)
        zeros = tuple(jnp.zeros((b, num_hyps, max_len, h, hd), self.dtype) for _ in range(c.decoder_layers))
        # (B,H,T,N): the encoder padding mask folded into the bias once, as an additive -big
        cross_bias = jnp.where(enc.padding_mask[:, None, None, :], jnp.finfo(cross_bias.dtype).min, cross_bias[None])
        return DecodeCache(index=jnp.zeros((), jnp.int32), self_k=zeros, self_v=zeros, cross_k=tuple(cks),
                           cross_v=tuple(cvs), self_bias=tuple(self_bias), cross_bias=cross_bias)

    def step(self, tokens, cache: DecodeCache):
        """tokens (B,K) at position cache.index -> logits (B,K,V) float32, updated cache."""
        b, kk = tokens.shape
        idx, t_max = cache.index, cache.max_len
        x = self._embed_tokens(tokens, True, idx[None])
        causal = jnp.where(jnp.arange(t_max) <= idx, 0.0, jnp.finfo(jnp.float32).min)  # additive, see above
        cross_bias = jax.lax.dynamic_slice_in_dim(cache.cross_bias, idx, 1, axis=2)  # (B,H,1,N), mask folded in
        new_k, new_v = [], []
        for i in range(self.config.decoder_layers):
            self_bias = jax.lax.dynamic_slice_in_dim(cache.self_bias[i], idx, 1, axis=1) + causal  # (H,1,T)
            layer_k, layer_v = cache.self_k[i], cache.self_v[i]
            written = {}

            def self_kv(k, v, layer_k=layer_k, layer_v=layer_v, written=written):
                # k, v: (B*K, 1, H, D) for the current position.
                shape = (b * kk, t_max) + k.shape[2:]
                ks = jax.lax.dynamic_update_slice_in_dim(layer_k.reshape(shape), k.astype(layer_k.dtype), idx, axis=1)
                vs = jax.lax.dynamic_update_slice_in_dim(layer_v.reshape(shape), v.astype(layer_v.dtype), idx, axis=1)
                written["k"], written["v"] = ks.reshape(layer_k.shape), vs.reshape(layer_v.shape)
                return ks, vs

            x = self._layer(i)(DecoderLayer.__call__, x, self_kv, (cache.cross_k[i], cache.cross_v[i]), self_bias,
                               cross_bias, None, None, True, step_reshape=True)
            new_k.append(written["k"])
            new_v.append(written["v"])
        cache = cache.replace(index=idx + 1, self_k=tuple(new_k), self_v=tuple(new_v))
        return self._logits(x), cache


def _f32(x):
    """Position tables in float32 (at least): the position biases are computed in float32 even when the
    weights are stored in bfloat16 (``cast_params``)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def cast_params(variables, dtype=jnp.bfloat16):
    """Inference weights in ``dtype`` (half the memory with bfloat16); ``batch_stats`` stay float32.

    ``OFA(config)`` (float32 compute) runs on them unchanged: every op promotes its weight to float32,
    so activations, attention biases and logits stay float32 and only the weights are rounded.
    """
    out = dict(variables)
    out["params"] = jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a,
                                 variables["params"])
    return out


def apply_in_chunks(fn, chunk: int, *args):
    """``fn(*args)`` over the leading (batch) axis of ``args``, ``chunk`` rows at a time (``lax.map``).

    The same numbers as one call on the whole batch, with the activations of ``chunk`` rows alive at a
    time: on a CPU, batch 8 in chunks of 1 needs the temporaries of batch 1 and is not slower (the
    batch-1 working set stays in cache). A batch that is not a multiple of ``chunk`` is padded with
    copies of its last row. ``chunk`` 0 or >= batch: one call. Keep the batch unsplit when it is
    sharded over several devices (each device then runs its own rows).
    """
    b = args[0].shape[0]
    if not chunk or chunk >= b:
        return fn(*args)
    n = -(-b // chunk)
    pad = n * chunk - b
    xs = tuple((jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) if pad else a).reshape((n, chunk) + a.shape[1:])
               for a in args)
    out = jax.lax.map(lambda x: fn(*x), xs)
    return jax.tree.map(lambda o: o.reshape((n * chunk,) + o.shape[2:])[:b], out)


def _lookup(embed: nn.Embed, tokens, pad_id):
    """Embedding lookup; like torch's padding_idx, pad lookups pass no gradient to the table."""
    x = embed(tokens)
    return jnp.where((tokens == pad_id)[..., None], jax.lax.stop_gradient(x), x)


def _abs_pos_bias(q, k, heads, d_model, factor):
    """(Tq,d),(Tk,d) projected positions -> (H,Tq,Tk) bias, scaled like the reference."""
    scaling = float(d_model / heads * factor) ** -0.5
    q = q.reshape(q.shape[0], heads, -1) * scaling
    k = k.reshape(k.shape[0], heads, -1)
    return jnp.einsum("qhd,khd->hqk", q, k)


def _block_diag(a, b):
    """(H,n,n),(H,m,m) -> (H,n+m,n+m) with zeros off the diagonal blocks."""
    h, n, m = a.shape[0], a.shape[1], b.shape[1]
    top = jnp.concatenate([a, jnp.zeros((h, n, m), a.dtype)], axis=2)
    bottom = jnp.concatenate([jnp.zeros((h, m, n), b.dtype), b], axis=2)
    return jnp.concatenate([top, bottom], axis=1)


class OFA(nn.Module):
    """OFA encoder-decoder. ``__call__`` is the teacher-forced forward used in training.

    Methods for ``apply(..., method=...)``: ``encode``, ``decode``, ``init_cache``, ``decode_step``.
    """
    config: OFAConfig
    dtype: Any = jnp.float32       # compute dtype; parameters stay float32
    frozen_bn: bool = True         # BatchNorm uses running stats even in training (OFA fine-tuning default)
    remat: str = "none"            # gradient checkpointing: "none", "layers" (transformer layers), "full" (+ ResNet blocks)
    scan: bool = False             # layer stacks as nn.scan over stacked parameters (ofa_jax.layout.stack_layers)
    fused_attention: bool = False  # encoder self-attention as fused Pallas kernels (TPU only)

    def setup(self):
        c = self.config
        check_remat(self.remat)
        self.embed_tokens = _embed(c.vocab_size, c.d_model, "embed_tokens", dtype=self.dtype)
        self.encoder = Encoder(c, self.embed_tokens, self.frozen_bn, self.dtype, self.remat, self.scan,
                               self.fused_attention)
        self.decoder = Decoder(c, self.embed_tokens, self.dtype, self.remat, self.scan)

    def __call__(self, images, src_tokens, prev_tokens, image_valid=None, train: bool = False):
        enc = self.encoder(images, src_tokens, image_valid, train)
        return self.decoder(prev_tokens, enc, train)

    def encode(self, images, src_tokens, image_valid=None, train: bool = False) -> EncoderOutput:
        return self.encoder(images, src_tokens, image_valid, train)

    def decode(self, prev_tokens, enc: EncoderOutput, train: bool = False):
        return self.decoder(prev_tokens, enc, train)

    def init_cache(self, enc: EncoderOutput, num_hyps: int, max_len: int) -> DecodeCache:
        return self.decoder.init_cache(enc, num_hyps, max_len)

    def decode_step(self, tokens, cache: DecodeCache):
        return self.decoder.step(tokens, cache)

    def resnet_features(self, images):
        return self.encoder.embed_images(images, False)


def init_params(config: OFAConfig, rng=None, image_size=(64, 64), text_len=4, dtype=jnp.float32, scan: bool = False):
    """Randomly initialised variables ({'params', 'batch_stats'}), boxed with logical axis names.

    ``scan=True``: the layout of ``OFA(scan=True)`` (layer stacks on a leading "layers" axis; the same
    structure and shapes as ``ofa_jax.layout.stack_layers`` of the unrolled init, other random values)."""
    model = OFA(config, dtype, scan=scan)
    rng = jax.random.PRNGKey(0) if rng is None else rng
    images = jnp.zeros((1,) + tuple(image_size) + (3,), jnp.float32)
    tokens = jnp.ones((1, text_len), jnp.int32)
    return jax.jit(model.init)(rng, images, tokens, tokens)  # jit: eager init of a ResNet is ~10x slower


def abstract_variables(config: OFAConfig, scan: bool = False):
    """Shapes/dtypes of all variables without allocating them (for big presets)."""
    return jax.eval_shape(lambda: nn.meta.unbox(init_params(config, scan=scan)))
