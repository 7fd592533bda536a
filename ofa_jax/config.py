"""OFA architecture config: the presets and every OFAConfig switch the released checkpoints use.

One frozen dataclass is the single source of truth for the model, the converter and the trainer.
Field names follow ModelScope's ``OFAConfig`` so ``config.json`` files map one to one; fields that
ModelScope has but OCR checkpoints never turn on (ViT backbones, gamma features, OFA-Sys mode) are
rejected with a clear message instead of being silently ignored. Entangled positions (also off in
the checkpoints) are supported, parity-tested against ModelScope.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

# ResNet depth -> number of Bottleneck blocks in the three stages OFA uses (no stage 4).
# ModelScope builds resnet18/34 with Bottleneck blocks too, so they are listed the same way.
RESNET_LAYERS = {
    "resnet18": (2, 2, 2),
    "resnet34": (3, 4, 6),
    "resnet50": (3, 4, 6),
    "resnet101": (3, 4, 23),
    "resnet152": (3, 8, 36),
}

CHINESE_VOCAB_SIZE = 30325


@dataclasses.dataclass(frozen=True)
class OFAConfig:
    vocab_size: int = CHINESE_VOCAB_SIZE
    d_model: int = 768
    encoder_layers: int = 6
    decoder_layers: int = 6
    encoder_attention_heads: int = 12
    decoder_attention_heads: int = 12
    encoder_ffn_dim: int = 3072
    decoder_ffn_dim: int = 3072
    resnet_type: str = "resnet101"
    max_position_embeddings: int = 1024
    token_bucket_size: int = 256
    image_bucket_size: int = 42
    attn_scale_factor: float = 2.0
    normformer: bool = True
    scale_heads: bool = True  # the per-head ``c_attn`` scale (NormFormer)
    encoder_normalize_before: bool = True
    decoder_normalize_before: bool = True
    layernorm_embedding: bool = True
    patch_layernorm_embedding: bool = True
    code_layernorm_embedding: bool = True
    add_type_embedding: bool = True
    share_attn_bias: bool = False
    scale_embedding: bool = False
    share_decoder_input_output_embed: bool = True
    # Also add the position embeddings to the image/token embeddings (ModelScope's
    # ``entangle_position_embedding``; off in every released OFA, where positions enter only as
    # attention biases). Tried for from-scratch line models: it did not speed up learning where the
    # k-th glyph is (ofa_jax/models/ofa-ocr-zh-small/README.md, "What shaped this recipe"), so our
    # configs leave it off.
    entangle_position_embedding: bool = False
    activation_function: str = "gelu"
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    encoder_drop_path_rate: float = 0.0
    decoder_drop_path_rate: float = 0.0
    resnet_drop_path_rate: float = 0.0
    # ModelScope's DropPath draws one mask of shape (1, T, 1): whole token positions are dropped for
    # every sample of the batch at once. "token" reproduces that (parity with the reference trainer);
    # "sample" is the usual per-sample stochastic depth.
    drop_path_mode: str = "token"
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2

    def __post_init__(self):
        if self.resnet_type not in RESNET_LAYERS:
            raise ValueError(f"unknown resnet_type {self.resnet_type!r}; expected one of {sorted(RESNET_LAYERS)}")
        for n in ("encoder", "decoder"):
            d, h = self.d_model, getattr(self, f"{n}_attention_heads")
            if d % h:
                raise ValueError(f"d_model={d} is not divisible by {n}_attention_heads={h}")
        if self.activation_function not in ("gelu", "relu"):
            raise ValueError(f"unsupported activation_function {self.activation_function!r}")
        if self.drop_path_mode not in ("token", "sample"):
            raise ValueError(f"drop_path_mode must be 'token' or 'sample', got {self.drop_path_mode!r}")

    @property
    def resnet_layers(self) -> tuple[int, int, int]:
        return RESNET_LAYERS[self.resnet_type]

    @property
    def max_image_size(self) -> int:
        """Largest image side (pixels) the image relative-position buckets cover (stride 16)."""
        return self.image_bucket_size * 16

    def replace(self, **kw) -> "OFAConfig":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OFAConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown OFAConfig fields: {', '.join(unknown)}")
        return cls(**d)

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")

    @classmethod
    def load(cls, path: str) -> "OFAConfig":
        with open(path) as f:
            return cls.from_dict(json.load(f))

    # ---- ModelScope config.json <-> OFAConfig ------------------------------------------------
    @classmethod
    def from_modelscope(cls, d: dict[str, Any]) -> "OFAConfig":
        """Builds a config from a ModelScope/transformers ``config.json`` dict."""
        unsupported = {
            "use_ofasys": False, "use_gamma_feature": False, "disable_entangle": False,
            "use_image_feature": True, "interpolate_position": False,
        }
        for key, ok in unsupported.items():
            if key in d and bool(d[key]) != ok:
                raise ValueError(f"config.json sets {key}={d[key]!r}, which ofa-jax does not support "
                                 "(not used by the OFA OCR checkpoints)")
        if d.get("encoder_layerdrop", 0.0) or d.get("decoder_layerdrop", 0.0):
            raise ValueError("config.json sets encoder/decoder_layerdrop > 0, which ofa-jax does not support")
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name in d and f.name != "scale_heads":
                kw[f.name] = d[f.name]
        return cls(**kw)

    def to_modelscope(self) -> dict[str, Any]:
        """The ``config.json`` dict ModelScope's ``OFAConfig(**d)`` accepts for this architecture."""
        d = {k: v for k, v in self.to_dict().items() if k not in ("scale_heads", "drop_path_mode")}
        d.update(model_type="ofa", architectures=["OFAModel"], use_ofasys=False, use_image_feature=True,
                 decoder_start_token_id=self.bos_token_id, forced_eos_token_id=self.eos_token_id)
        if not self.scale_heads:
            raise ValueError("ModelScope OFA always has per-head scales (c_attn); scale_heads=False cannot be exported")
        return d


def _preset(d, layers, dec_layers, heads, resnet, **kw):
    return OFAConfig(d_model=d, encoder_layers=layers, decoder_layers=dec_layers,
                     encoder_attention_heads=heads, decoder_attention_heads=heads,
                     encoder_ffn_dim=4 * d, decoder_ffn_dim=4 * d, resnet_type=resnet, **kw)


# Sizes from OFA-Sys/OFA models/ofa/ofa.py (*_architecture). "micro" is ours: a test-sized model
# with every code path of the real ones (Bottleneck ResNet stages, NormFormer, both bucket kinds).
PRESETS = {
    "micro": _preset(64, 2, 2, 4, "resnet18"),
    "tiny": _preset(256, 4, 4, 4, "resnet50"),
    "medium": _preset(512, 4, 4, 8, "resnet101"),
    "base": _preset(768, 6, 6, 12, "resnet101"),
    "large": _preset(1024, 12, 12, 16, "resnet152"),
    "huge": _preset(1280, 24, 12, 16, "resnet152"),
}


def get_config(name_or_path: str, **overrides) -> OFAConfig:
    """A preset by name, or a config from an ofa-jax ``config.json`` / model dir."""
    if name_or_path in PRESETS:
        cfg = PRESETS[name_or_path]
    elif os.path.isdir(name_or_path):
        cfg = OFAConfig.load(os.path.join(name_or_path, "config.json"))
    elif os.path.isfile(name_or_path):
        cfg = OFAConfig.load(name_or_path)
    else:
        raise ValueError(f"{name_or_path!r} is neither a preset ({', '.join(PRESETS)}) nor a config file")
    return cfg.replace(**overrides) if overrides else cfg
