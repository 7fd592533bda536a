"""The PP-OCR DB text detector (PP-OCRv6 small: PPLCNetV4 backbone, RepLKFPN neck, DB head) as Flax
modules, in the inference form the released ONNX file holds: every BatchNorm is folded into the
convolution before it and every re-parameterisable block (RepDWConv, DilatedReparamBlock) is one
convolution, so each layer is a conv with a bias. Ported from the upstream network definition
(PaddleOCR ``rec_lcnetv4.py``/``db_fpn.py``/``det_db_head.py``, Apache-2.0) and checked op by op
against the ONNX graph by ``tools.convert_detector``.

Images are NHWC, BGR (the model was trained on OpenCV's channel order), normalised to [-1, 1].

Padding-invariant by construction: ``valid`` gives each image's real (h, w) inside a larger padded
array (both multiples of 32). Every convolution with a spatial extent reads zeros past the real
border, and the squeeze-excitation means average over the real pixels only, so the probability map
on the real region equals an unpadded run at (h, w). That is what lets pages of any size run in a
few fixed (jit-compiled) bucket shapes without changing a single box.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# (kernel, in, out, stride, squeeze-excitation) per block, as upstream's NET_CONFIG_DET["small"].
SMALL_STAGES = (
    ((3, 48, 48, 1, True), (3, 48, 48, 1, False)),
    ((3, 48, 96, 2, False), (3, 96, 96, 1, True), (3, 96, 96, 1, False)),
    ((3, 96, 192, 2, False), (3, 192, 192, 1, True), (3, 192, 192, 1, False), (3, 192, 192, 1, True),
     (3, 192, 192, 1, False)),
    ((3, 192, 384, 2, False), (3, 384, 384, 1, True), (3, 384, 384, 1, False)),
)


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
    """Architecture only (what ``config.json`` of a detector dir holds)."""
    stem_mid: int = 24
    stem_out: int = 48
    stages: tuple = SMALL_STAGES
    expand_ratio: int = 2
    neck_channels: int = 96
    neck_kernel: int = 7          # the large depthwise kernel of the neck's output convs
    se_reduction: int = 4
    backbone_se_slope: float = 1.0 / 6.0   # torch Hardsigmoid
    neck_se_slope: float = 0.2             # paddle's hardsigmoid in the neck's SE
    shortcut: bool = True

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["stages"] = [[list(b) for b in s] for s in self.stages]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DetectorConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown detector config keys {unknown}")
        d = dict(d)
        if "stages" in d:
            d["stages"] = tuple(tuple(tuple(b) for b in s) for s in d["stages"])
        return cls(**d)

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump({"architecture": "PP-OCR DB (PPLCNetV4 + RepLKFPN + DBHead)", **self.to_dict()}, f, indent=2)

    @classmethod
    def load(cls, path: str) -> "DetectorConfig":
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        if not isinstance(d, dict):
            raise ValueError("expected a JSON object")
        d.pop("architecture", None)
        return cls.from_dict(d)


def hard_sigmoid(x, slope):
    return jnp.clip(slope * x + 0.5, 0.0, 1.0)


def valid_mask(valid, shape, stride: int):
    """(B, H, W, 1) float mask of the real pixels at a feature stride; ``valid`` is (B, 2) int (h, w)."""
    h, w = shape[1], shape[2]
    vh = (valid[:, 0] // stride)[:, None, None, None]
    vw = (valid[:, 1] // stride)[:, None, None, None]
    ys = jnp.arange(h)[None, :, None, None]
    xs = jnp.arange(w)[None, None, :, None]
    return ((ys < vh) & (xs < vw)).astype(jnp.float32)


def masked_mean(x, mask):
    """Mean over the real pixels (global average pooling of an unpadded run)."""
    return (x * mask).sum(axis=(1, 2), keepdims=True) / jnp.maximum(mask.sum(axis=(1, 2), keepdims=True), 1.0)


def Conv(features: int, kernel: int = 1, stride: int = 1, groups: int = 1, pad: Optional[tuple] = None,
         bias: bool = True, name: Optional[str] = None) -> nn.Conv:
    """A convolution with folded BatchNorm (so with a bias unless upstream has none). ``pad``: (low,
    high) per side, default k // 2 each; (0, 1) for a 2x2 "SAME". HIGHEST precision: a GPU's default
    TF32 would cost the 1e-4 parity."""
    p = pad if pad is not None else (kernel // 2, kernel // 2)
    return nn.Conv(features, (kernel, kernel), strides=stride, padding=(p, p), feature_group_count=groups,
                   use_bias=bias, name=name, precision=jax.lax.Precision.HIGHEST)


class SE(nn.Module):
    """Squeeze-excitation: masked global mean -> 1x1 (ReLU) -> 1x1 -> hard sigmoid gate."""
    reduction: int
    slope: float

    @nn.compact
    def __call__(self, x, mask):
        c = x.shape[-1]
        s = masked_mean(x, mask)
        s = nn.relu(Conv(c // self.reduction, name="conv1")(s))
        return x * hard_sigmoid(Conv(c, name="conv2")(s), self.slope)


class Stem(nn.Module):
    """Stride-4 two-branch stem (PPHGNetV2's StemBlock): conv s2, then [2x2 convs | 2x2 max pool],
    concatenated, conv s2, 1x1."""
    mid: int
    out: int

    @nn.compact
    def __call__(self, x, valid):
        x = nn.relu(Conv(self.mid, 3, 2, name="stem1")(x))
        m2 = valid_mask(valid, x.shape, 2)
        x = x * m2   # zeros past the border: the 2x2 "SAME" convs and the pool read one pixel beyond
        b = nn.relu(Conv(self.mid // 2, 2, pad=(0, 1), name="stem2a")(x)) * m2
        b = nn.relu(Conv(self.mid, 2, pad=(0, 1), name="stem2b")(b))
        # 2x2 max pool, stride 1, padded at the bottom/right: inputs are ReLU outputs (>= 0), so a
        # zero pad gives the same maximum as ONNX's ignored pad.
        a = nn.max_pool(x, (2, 2), strides=(1, 1), padding=((0, 1), (0, 1)))
        x = jnp.concatenate([a, b], axis=-1) * m2
        x = nn.relu(Conv(self.mid, 3, 2, name="stem3")(x))
        return nn.relu(Conv(self.out, 1, name="stem4")(x))


class LCNetV4Block(nn.Module):
    """Token mixer (depthwise kxk, optional SE) then channel mixer (1x1 expand, GELU, 1x1 compress),
    residual when the shape is kept."""
    kernel: int
    out: int
    stride: int
    se: bool
    expand_ratio: int
    se_slope: float
    se_reduction: int

    @nn.compact
    def __call__(self, x, valid, stride_in: int):
        c = x.shape[-1]
        x = x * valid_mask(valid, x.shape, stride_in)
        x = Conv(c, self.kernel, self.stride, groups=c, name="dw")(x)
        if self.se:
            x = SE(self.se_reduction, self.se_slope, name="se")(x, valid_mask(valid, x.shape, stride_in * self.stride))
        y = Conv(c * self.expand_ratio, name="expand")(x)
        y = nn.gelu(y, approximate=False)
        y = Conv(self.out, name="compress")(y)
        return x + y if (self.stride == 1 and c == self.out) else y


class Backbone(nn.Module):
    cfg: DetectorConfig

    @nn.compact
    def __call__(self, x, valid):
        cfg = self.cfg
        x = Stem(cfg.stem_mid, cfg.stem_out, name="stem")(x, valid)
        stride, feats = 4, []
        for s, blocks in enumerate(cfg.stages, 1):
            for i, (k, _, out, st, se) in enumerate(blocks):
                x = LCNetV4Block(k, out, st, se, cfg.expand_ratio, cfg.backbone_se_slope, cfg.se_reduction,
                                 name=f"blocks_s{s}_{i}")(x, valid, stride)
                stride *= st
            feats.append((x, stride))
        return feats


def upsample(x, f: int):
    """Nearest-neighbour upsampling by an integer factor (ONNX Resize nearest/asymmetric/floor)."""
    return jnp.repeat(jnp.repeat(x, f, axis=1), f, axis=2)


class RSELayer(nn.Module):
    """1x1 conv (no bias) to the neck width, plus its SE-gated copy."""
    features: int
    cfg: DetectorConfig

    @nn.compact
    def __call__(self, x, mask):
        x = Conv(self.features, bias=False, name="in_conv")(x)
        s = SE(self.cfg.se_reduction, self.cfg.neck_se_slope, name="se")(x, mask)
        return x + s if self.cfg.shortcut else s


class OutConv(nn.Module):
    """The neck's output branch: large-kernel depthwise conv, 1x1 (no bias) to a quarter width, SE."""
    cfg: DetectorConfig

    @nn.compact
    def __call__(self, x, mask):
        c = x.shape[-1]
        x = Conv(c, self.cfg.neck_kernel, groups=c, name="dw")(x * mask)
        x = Conv(c // 4, bias=False, name="pw")(x)
        s = SE(self.cfg.se_reduction, self.cfg.neck_se_slope, name="se")(x, mask)
        return x + s if self.cfg.shortcut else s


class Neck(nn.Module):
    """RepLKFPN: top-down feature pyramid, each level to a quarter width, all upsampled to stride 4."""
    cfg: DetectorConfig

    @nn.compact
    def __call__(self, feats, valid):
        cfg = self.cfg
        masks = [valid_mask(valid, f.shape, s) for f, s in feats]
        ins = {i: RSELayer(cfg.neck_channels, cfg, name=f"ins_conv_{i}")(feats[i][0], masks[i]) for i in (3, 2, 1, 0)}
        out = {3: ins[3]}
        for i in (2, 1, 0):
            out[i] = ins[i] + upsample(out[i + 1], 2)
        p = {i: OutConv(cfg, name=f"inp_conv_{i}")(out[i], masks[i]) for i in (3, 2, 1, 0)}
        return jnp.concatenate([upsample(p[3], 8), upsample(p[2], 4), upsample(p[1], 2), p[0]], axis=-1), masks[0]


class ConvTranspose2x2(nn.Module):
    """Stride-2 2x2 transposed convolution with bias: each input pixel writes its own 2x2 output
    block, so it is one matrix product and a reshape (``kernel`` is (2, 2, in, out))."""
    features: int

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        k = self.param("kernel", nn.initializers.lecun_normal(), (2, 2, c, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        y = jnp.einsum("bhwc,pqco->bhpwqo", x, k, precision=jax.lax.Precision.HIGHEST)
        return y.reshape(b, 2 * h, 2 * w, self.features) + bias


class DBHead(nn.Module):
    """The DB shrink-map branch (the only one inference uses): 3x3 conv, two 2x transposed convs,
    sigmoid -> text probability at the input resolution."""

    @nn.compact
    def __call__(self, x, mask):
        c = x.shape[-1] // 4
        x = nn.relu(Conv(c, 3, name="conv1")(x * mask))
        x = nn.relu(ConvTranspose2x2(c, name="conv2")(x))
        return jax.nn.sigmoid(ConvTranspose2x2(1, name="conv3")(x))[..., 0]


class DBNet(nn.Module):
    """(B, H, W, 3) normalised BGR, (B, 2) real sizes -> (B, H, W) text probability (0 past the border)."""
    cfg: DetectorConfig

    @nn.compact
    def __call__(self, x, valid: Optional[Any] = None):
        if valid is None:
            valid = jnp.broadcast_to(jnp.asarray(x.shape[1:3], jnp.int32), (x.shape[0], 2))
        x = x * valid_mask(valid, x.shape, 1)
        feats = Backbone(self.cfg, name="backbone")(x, valid)
        fused, mask = Neck(self.cfg, name="neck")(feats, valid)
        prob = DBHead(name="head")(fused, mask)
        return prob * valid_mask(valid, x.shape, 1)[..., 0]


def abstract_params(cfg: DetectorConfig, shape: Sequence[int] = (1, 64, 64, 3)):
    return jax.eval_shape(lambda: DBNet(cfg).init(jax.random.PRNGKey(0), jnp.zeros(shape, jnp.float32)))
