"""The name table between PyTorch OFA state dicts and ofa-jax variables.

``table(cfg)`` lists one ``Row`` per PyTorch tensor in ModelScope naming, in module order; print it
with ``python -m tools.convert_weights --print-table PRESET`` and audit it line by line against
``modelscope/models/multi_modal/ofa/modeling_ofa.py``. OFA-Sys fairseq checkpoints differ only in a
few layer-internal names (``FAIRSEQ_RENAMES``). Every source key is either in the table, a
pass-through extra (weights OCR does not use, kept so export is lossless) or in ``DROPPED`` with
the reason; anything else is an error that names the keys.

Transforms: ``linear`` transposes (out, in) -> (in, out); ``conv`` is OIHW -> HWIO; ``copy`` as is.
"""
from __future__ import annotations

import dataclasses
import re

from ofa_jax.config import OFAConfig


@dataclasses.dataclass(frozen=True)
class Row:
    torch_key: str
    flax_path: str  # "<collection>/<module path>/<name>"
    kind: str       # "linear" | "conv" | "copy"


def _linear(t, f, bias=True):
    rows = [Row(f"{t}.weight", f"params/{f}/kernel", "linear")]
    return rows + ([Row(f"{t}.bias", f"params/{f}/bias", "copy")] if bias else [])


def _ln(t, f):
    return [Row(f"{t}.weight", f"params/{f}/scale", "copy"), Row(f"{t}.bias", f"params/{f}/bias", "copy")]


def _embedding(t, f):
    return [Row(f"{t}.weight", f"params/{f}/embedding", "copy")]


def _conv(t, f):
    return [Row(f"{t}.weight", f"params/{f}/kernel", "conv")]


def _bn(t, f):
    return [Row(f"{t}.weight", f"params/{f}/scale", "copy"), Row(f"{t}.bias", f"params/{f}/bias", "copy"),
            Row(f"{t}.running_mean", f"batch_stats/{f}/mean", "copy"),
            Row(f"{t}.running_var", f"batch_stats/{f}/var", "copy")]


def _attention(t, f, cfg):
    rows = []
    for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
        rows += _linear(f"{t}.{p}", f"{f}/{p}")
    if cfg.scale_heads:
        rows.append(Row(f"{t}.c_attn", f"params/{f}/c_attn", "copy"))
    return rows


def resnet_rows(cfg: OFAConfig):
    t, f = "encoder.embed_images", "encoder/embed_images"
    rows = _conv(f"{t}.conv1", f"{f}/conv1") + _bn(f"{t}.bn1", f"{f}/bn1")
    for stage, blocks in enumerate(cfg.resnet_layers, 1):
        for b in range(blocks):
            tb, fb = f"{t}.layer{stage}.{b}", f"{f}/layer{stage}_{b}"
            for j in (1, 2, 3):
                rows += _conv(f"{tb}.conv{j}", f"{fb}/conv{j}") + _bn(f"{tb}.bn{j}", f"{fb}/bn{j}")
            if b == 0:
                rows += _conv(f"{tb}.downsample.0", f"{fb}/downsample_conv")
                rows += _bn(f"{tb}.downsample.1", f"{fb}/downsample_bn")
    return rows


def encoder_layer_rows(cfg: OFAConfig, i: int):
    t, f = f"encoder.layers.{i}", f"encoder/layers_{i}"
    rows = _attention(f"{t}.self_attn", f"{f}/self_attn", cfg) + _ln(f"{t}.self_attn_layer_norm", f"{f}/self_attn_layer_norm")
    if cfg.normformer:
        rows += _ln(f"{t}.self_attn_mid_layer_norm", f"{f}/self_attn_mid_layer_norm")
        rows += _ln(f"{t}.ffn_layer_norm", f"{f}/ffn_layer_norm")
    rows += _linear(f"{t}.fc1", f"{f}/fc1") + _linear(f"{t}.fc2", f"{f}/fc2")
    return rows + _ln(f"{t}.final_layer_norm", f"{f}/final_layer_norm")


def decoder_layer_rows(cfg: OFAConfig, i: int):
    t, f = f"decoder.layers.{i}", f"decoder/layers_{i}"
    rows = _attention(f"{t}.self_attn", f"{f}/self_attn", cfg) + _ln(f"{t}.self_attn_layer_norm", f"{f}/self_attn_layer_norm")
    rows += _attention(f"{t}.cross_attn", f"{f}/cross_attn", cfg)
    rows += _ln(f"{t}.cross_attn_layer_norm", f"{f}/cross_attn_layer_norm")
    if cfg.normformer:
        rows += _ln(f"{t}.self_attn_mid_layer_norm", f"{f}/self_attn_mid_layer_norm")
        rows += _ln(f"{t}.cross_attn_mid_layer_norm", f"{f}/cross_attn_mid_layer_norm")
        rows += _ln(f"{t}.ffn_layer_norm", f"{f}/ffn_layer_norm")
    rows += _linear(f"{t}.fc1", f"{f}/fc1") + _linear(f"{t}.fc2", f"{f}/fc2")
    return rows + _ln(f"{t}.final_layer_norm", f"{f}/final_layer_norm")


def table(cfg: OFAConfig) -> list[Row]:
    """Every PyTorch key (ModelScope naming) that becomes an ofa-jax variable."""
    n_enc_tables = 1 if cfg.share_attn_bias else cfg.encoder_layers
    n_dec_tables = 1 if cfg.share_attn_bias else cfg.decoder_layers
    rows = _embedding("encoder.embed_tokens", "embed_tokens")
    # --- encoder ---
    rows += resnet_rows(cfg)
    rows += _linear("encoder.image_proj", "encoder/image_proj")
    if cfg.add_type_embedding:
        rows += _embedding("encoder.type_embedding", "encoder/type_embedding")
    if cfg.patch_layernorm_embedding:
        rows += _ln("encoder.patch_layernorm_embedding", "encoder/patch_layernorm_embedding")
    if cfg.layernorm_embedding:
        rows += _ln("encoder.layernorm_embedding", "encoder/layernorm_embedding")
    rows += _embedding("encoder.embed_positions", "encoder/embed_positions")
    rows += _embedding("encoder.embed_image_positions", "encoder/embed_image_positions")
    rows += _ln("encoder.pos_ln", "encoder/pos_ln") + _ln("encoder.image_pos_ln", "encoder/image_pos_ln")
    rows += _linear("encoder.pos_q_linear", "encoder/pos_q_linear") + _linear("encoder.pos_k_linear", "encoder/pos_k_linear")
    for i in range(cfg.encoder_layers):
        rows += encoder_layer_rows(cfg, i)
    if cfg.encoder_normalize_before:
        rows += _ln("encoder.layer_norm", "encoder/layer_norm")
    for i in range(n_enc_tables):
        rows += _embedding(f"encoder.token_rel_pos_table_list.{i}", f"encoder/token_rel_pos_table_list_{i}")
        rows += _embedding(f"encoder.image_rel_pos_table_list.{i}", f"encoder/image_rel_pos_table_list_{i}")
    # --- decoder ---
    if cfg.layernorm_embedding:
        rows += _ln("decoder.layernorm_embedding", "decoder/layernorm_embedding")
    rows += _embedding("decoder.embed_positions", "decoder/embed_positions")
    rows += _ln("decoder.pos_ln", "decoder/pos_ln")
    for p in ("self_pos_q_linear", "self_pos_k_linear", "cross_pos_q_linear", "cross_pos_k_linear"):
        rows += _linear(f"decoder.{p}", f"decoder/{p}")
    for i in range(cfg.decoder_layers):
        rows += decoder_layer_rows(cfg, i)
    if cfg.decoder_normalize_before:
        rows += _ln("decoder.layer_norm", "decoder/layer_norm")
    if not cfg.share_decoder_input_output_embed:
        rows += _linear("decoder.output_projection", "decoder/output_projection", bias=False)
    for i in range(n_dec_tables):
        rows += _embedding(f"decoder.token_rel_pos_table_list.{i}", f"decoder/token_rel_pos_table_list_{i}")
    return rows


def extra_keys(cfg: OFAConfig) -> list[str]:
    """Decoder weights for image-code generation: not used by OCR, kept verbatim in the model dir."""
    keys = ["decoder.embed_image_positions.weight", "decoder.image_pos_ln.weight", "decoder.image_pos_ln.bias"]
    if cfg.code_layernorm_embedding:
        keys += ["decoder.code_layernorm_embedding.weight", "decoder.code_layernorm_embedding.bias"]
    n = 1 if cfg.share_attn_bias else cfg.decoder_layers
    return keys + [f"decoder.image_rel_pos_table_list.{i}.weight" for i in range(n)]


# Source keys deliberately not converted, with the reason (regex, reason).
DROPPED = [
    (r"^(encoder|decoder)\.(token|image)_rp_bucket$", "relative-position bucket buffer; recomputed by ofa_jax.buckets"),
    (r"^decoder\.image_position_idx$", "image-code position buffer; recomputed on export"),
    (r"^decoder\.embed_tokens\.weight$", "alias of encoder.embed_tokens.weight (shared embedding)"),
    (r"^decoder\.output_projection\.weight$", "alias of encoder.embed_tokens.weight (tied output projection)"),
    (r"\.num_batches_tracked$", "BatchNorm step counter; unused when momentum is set"),
    (r"^(encoder|decoder)\.version$", "fairseq format version buffer"),
]
ALIASES = ("decoder.embed_tokens.weight", "decoder.output_projection.weight")


def dropped_reason(key: str):
    for pattern, reason in DROPPED:
        if re.search(pattern, key):
            return reason
    return None


# OFA-Sys fairseq layer-internal names vs ModelScope's (models/ofa/unify_transformer_layer.py):
# (stack, fairseq name, ModelScope name). Keys outside ``{stack}.layers.N.`` are named alike.
FAIRSEQ_NAMES = [
    ("encoder", "attn_ln", "self_attn_mid_layer_norm"),
    ("encoder", "ffn_layernorm", "ffn_layer_norm"),
    ("decoder", "self_attn_ln", "self_attn_mid_layer_norm"),
    ("decoder", "cross_attn_ln", "cross_attn_mid_layer_norm"),
    ("decoder", "ffn_layernorm", "ffn_layer_norm"),
    ("decoder", "encoder_attn_layer_norm", "cross_attn_layer_norm"),
    ("decoder", "encoder_attn", "cross_attn"),
]


def _rename(key: str, to_modelscope: bool) -> str:
    for stack, fairseq, modelscope in FAIRSEQ_NAMES:
        old, new = (fairseq, modelscope) if to_modelscope else (modelscope, fairseq)
        key = re.sub(rf"^({stack}\.layers\.\d+)\.{old}\.", rf"\1.{new}.", key)
    return key


def fairseq_to_modelscope_key(key: str) -> str:
    return _rename(key, to_modelscope=True)


def modelscope_to_fairseq_key(key: str) -> str:
    """Inverse of ``fairseq_to_modelscope_key`` (used to build test checkpoints)."""
    return _rename(key, to_modelscope=False)
