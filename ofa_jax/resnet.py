"""OFA's image backbone: torchvision-style ResNet (Bottleneck, stride in the 3x3 conv), three stages.

Images are NHWC. The output is stride 16 with 1024 channels (480x480 -> 30x30 patches). Parameter
names mirror the PyTorch module (``layer3_22/conv2``, ``downsample_conv``...) so the converter table
stays a readable one-to-one list.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ofa_jax.config import OFAConfig
from ofa_jax.remat import remat

_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # kaiming_normal(fan_out, relu)


class Conv1x1(nn.Module):
    """A 1x1 convolution as a matrix product (same ``kernel`` parameter as ``nn.Conv``: (1, 1, in, out)).

    Why: XLA:CPU computes the gradients of a 1x1 ``conv_general_dilated`` ~3.5x slower than those of
    the equivalent dot (bench/RESULTS_train.md); the forward is the same speed. Stride s keeps every
    s-th pixel, as the strided 1x1 convolution does.
    """
    features: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.with_logical_partitioning(_conv_init, ("conv_h", "conv_w", "conv_in", "conv_out")),
                            (1, 1, x.shape[-1], self.features), jnp.float32)
        if self.stride > 1:
            x = x[:, ::self.stride, ::self.stride]
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        return jnp.einsum("bhwc,cf->bhwf", x, kernel[0, 0])


def _conv(features, kernel, stride, padding, name, dtype):
    if kernel == 1 and padding == 0:
        return Conv1x1(features, stride, dtype=dtype, name=name)
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=[(padding, padding)] * 2,
                   use_bias=False, dtype=dtype, name=name,
                   kernel_init=nn.with_logical_partitioning(_conv_init, ("conv_h", "conv_w", "conv_in", "conv_out")))


def _bn(name, frozen, dtype):
    # torch BatchNorm2d: eps 1e-5, running = 0.9 * running + 0.1 * batch.
    return nn.BatchNorm(use_running_average=frozen, momentum=0.9, epsilon=1e-5, dtype=dtype, name=name,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("conv_out",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)))


class DropPath(nn.Module):
    """Stochastic depth on a residual branch.

    mode "sample": one draw per sample, mask (B, 1, ..., 1) -- ResNet blocks (timm semantics) and the
    usual transformer variant. mode "token": ModelScope's transformer DropPath, one (1, T, 1) mask for
    the whole batch (x is (B, T, D)).
    """
    rate: float
    mode: str = "sample"

    @nn.compact
    def __call__(self, x, deterministic: bool):
        if deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (1, x.shape[1], 1) if self.mode == "token" else (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


class Bottleneck(nn.Module):
    planes: int
    stride: int = 1
    downsample: bool = False
    drop_path_rate: float = 0.0
    frozen_bn: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        frozen = self.frozen_bn or not train
        out = nn.relu(_bn("bn1", frozen, self.dtype)(_conv(self.planes, 1, 1, 0, "conv1", self.dtype)(x)))
        out = nn.relu(_bn("bn2", frozen, self.dtype)(_conv(self.planes, 3, self.stride, 1, "conv2", self.dtype)(out)))
        out = _bn("bn3", frozen, self.dtype)(_conv(self.planes * 4, 1, 1, 0, "conv3", self.dtype)(out))
        identity = x
        if self.downsample:
            identity = _conv(self.planes * 4, 1, self.stride, 0, "downsample_conv", self.dtype)(x)
            identity = _bn("downsample_bn", frozen, self.dtype)(identity)
        out = DropPath(self.drop_path_rate, "sample", name="drop_path")(out, not train)
        return nn.relu(identity + out)


def block_drop_path_rates(rate: float, blocks: int) -> list[float]:
    """torch.linspace(0, rate, blocks) in float32, as the reference computes it per stage."""
    return [float(v) for v in np.linspace(0.0, rate, blocks, dtype=np.float32)]


class ResNet(nn.Module):
    config: OFAConfig
    frozen_bn: bool = True
    dtype: Any = jnp.float32
    remat_blocks: bool = False  # recompute each Bottleneck block in the backward pass (gradient checkpointing)

    @nn.compact
    def __call__(self, images, train: bool = False):
        """images: (B, H, W, 3) -> (B, ceil(H/16), ceil(W/16), 1024)."""
        frozen = self.frozen_bn or not train
        x = _conv(64, 7, 2, 3, "conv1", self.dtype)(images.astype(self.dtype))
        x = nn.relu(_bn("bn1", frozen, self.dtype)(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        run = lambda blk, x: blk(x, train)
        if self.remat_blocks:
            run = remat(run)
        for stage, (planes, blocks, stride) in enumerate(zip((64, 128, 256), self.config.resnet_layers, (1, 2, 2)), 1):
            rates = block_drop_path_rates(self.config.resnet_drop_path_rate, blocks)
            for i in range(blocks):
                # The first block of a stage has no drop path in the reference (it ignores dpr[0]).
                blk = Bottleneck(planes, stride if i == 0 else 1, downsample=(i == 0),
                                 drop_path_rate=rates[i] if i else 0.0, frozen_bn=self.frozen_bn, dtype=self.dtype,
                                 name=f"layer{stage}_{i}")
                x = run(blk, x)
        return x
