"""OFA's image backbone: torchvision-style ResNet (Bottleneck, stride in the 3x3 conv), three stages.

Images are NHWC. The output is stride 16 with 1024 channels (480x480 -> 30x30 patches). Parameter
names mirror the PyTorch module (``layer3_22/conv2``, ``downsample_conv``...) so the converter table
stays a readable one-to-one list.

``ResNet(scan=True)``: in each stage, blocks 1..n-1 (same shapes; block 0 changes stride and width)
run as one ``nn.scan`` over parameters and BatchNorm statistics stacked on a leading "layers" axis,
named ``layer{stage}_rest`` (``ofa_jax.layout`` converts). resnet101's 23-block stage then compiles
as one block: compile time stays flat in depth. Not the default: XLA:CPU runs convolutions inside a
loop body slower than unrolled ones (tiny's train step at 32x320, batch 8: 1.05 s unrolled, 3.1 s
with every stack scanned, 0.92 s with only the transformer layers scanned), and the per-block names
are what the converter writes.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ofa_jax.config import OFAConfig
from ofa_jax.partitioning import constrain_batch
from ofa_jax.remat import remat

_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # kaiming_normal(fan_out, relu)


class Conv(nn.Module):
    """A bias-free convolution with ``nn.Conv``'s ``kernel`` parameter ((kh, kw, in, out), same init).

    1x1 kernels run as a matrix product: XLA:CPU computes the gradients of a 1x1
    ``conv_general_dilated`` ~3.5x slower than those of the equivalent dot (docs/performance.md);
    stride s keeps every s-th pixel, as the strided 1x1 convolution does. ``out_scale`` multiplies the
    kernel's output channels: a frozen BatchNorm folded into the convolution (``FrozenBN``).
    """
    features: int
    kernel_size: int = 1
    stride: int = 1
    padding: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, out_scale=None):
        k = self.kernel_size
        kernel = self.param("kernel", nn.with_logical_partitioning(_conv_init, ("conv_h", "conv_w", "conv_in", "conv_out")),
                            (k, k, x.shape[-1], self.features), jnp.float32)
        if out_scale is not None:
            kernel = kernel * out_scale
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        if k == 1 and self.padding == 0:
            if self.stride > 1:
                x = x[:, ::self.stride, ::self.stride]
            return jnp.einsum("bhwc,cf->bhwf", x, kernel[0, 0])
        return jax.lax.conv_general_dilated(x, kernel, (self.stride, self.stride), [(self.padding, self.padding)] * 2,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _conv(features, kernel, stride, padding, name, dtype):
    return Conv(features, kernel, stride, padding, dtype=dtype, name=name)


class FrozenBN(nn.Module):
    """A BatchNorm at its running statistics as (scale, shift) per channel, for folding into a conv.

    Same variables as ``nn.BatchNorm`` (params scale/bias, batch_stats mean/var), so checkpoints and
    ``train_bn`` switch freely. Why: applied after the convolution a frozen BatchNorm costs two passes
    over the activation (forward and backward) that XLA:CPU does not fuse into the convolution;
    folded, ``conv(x, w * s) + t`` equals ``(conv(x, w) - mean) * scale / sqrt(var + eps) + bias`` to
    rounding; the ResNet's training step is faster (docs/performance.md).
    """
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, features: int):
        mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), (features,)).value
        var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), (features,)).value
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("conv_out",)), (features,), jnp.float32)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)), (features,), jnp.float32)
        s = scale * jax.lax.rsqrt(var + self.epsilon)
        return s, bias - mean * s


def _conv_bn(x, features, kernel, stride, padding, conv_name, bn_name, frozen, dtype, train):
    """conv then BatchNorm; folded into the conv when training with frozen statistics.

    Only in training: the gain is in the backward pass, and unfolded the forward keeps the
    reference's order of rounding (fp32 encoder parity 7e-5 unfolded vs 1.3e-4 folded).
    """
    conv = _conv(features, kernel, stride, padding, conv_name, dtype)
    if frozen and train:
        s, t = FrozenBN(name=bn_name)(features)
        return conv(x, s) + t.astype(dtype)
    return _bn(bn_name, frozen, dtype)(conv(x))


def max_pool_3x3_s2(x):
    """torch ``MaxPool2d(3, 2, 1)``: the gradient goes to the first maximum of each window (row-major).

    Why not ``nn.max_pool``: XLA:CPU lowers its gradient (select-and-scatter) to a reduce-window over
    index arrays, ~3x the forward's time here; this backward is nine masked strided pads.
    """
    return _max_pool(x)


def _pool_windows(xp, ho, wo):
    return [jax.lax.slice(xp, (0, i, j, 0), (xp.shape[0], i + 2 * ho - 1, j + 2 * wo - 1, xp.shape[3]), (1, 2, 2, 1))
            for i in range(3) for j in range(3)]


@jax.custom_vjp
def _max_pool(x):
    return _max_pool_fwd(x)[0]


def _max_pool_fwd(x):
    y = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0)))
    return y, (x, y)


def _max_pool_bwd(res, g):
    x, y = res
    b, h, w, c = x.shape
    ho, wo = y.shape[1:3]
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    taken = jnp.zeros(y.shape, bool)
    dxp = jnp.zeros(xp.shape, g.dtype)
    for n, win in enumerate(_pool_windows(xp, ho, wo)):
        i, j = divmod(n, 3)
        hit = (win == y) & ~taken
        taken = taken | hit
        part = jnp.where(hit, g, jnp.zeros((), g.dtype))
        dxp = dxp + jax.lax.pad(part, jnp.zeros((), g.dtype),
                                ((0, 0, 0), (i, xp.shape[1] - i - 2 * ho + 1, 1), (j, xp.shape[2] - j - 2 * wo + 1, 1), (0, 0, 0)))
    return (dxp[:, 1:h + 1, 1:w + 1],)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


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

    ``rate`` passed to the call overrides the field and may be a traced scalar: in a scanned layer stack
    each layer's rate is a scan input. A traced rate of 0 keeps every position (uniform < 1) and
    divides by 1, so it equals the identity; only a static 0 skips drawing the mask.
    """
    rate: float = 0.0
    mode: str = "sample"

    @nn.compact
    def __call__(self, x, deterministic: bool, rate=None):
        if rate is None:
            rate = self.rate
        if deterministic or (isinstance(rate, (int, float)) and rate == 0.0):
            return x
        shape = (1, x.shape[1], 1) if self.mode == "token" else (x.shape[0],) + (1,) * (x.ndim - 1)
        if isinstance(rate, (int, float)):
            keep = 1.0 - rate
            mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
            return jnp.where(mask, x / keep, jnp.zeros_like(x))
        keep = 1.0 - jnp.asarray(rate, jnp.float32)
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
        return jnp.where(mask, x / keep.astype(x.dtype), jnp.zeros_like(x))


def _bottleneck(x, planes, stride, downsample, rate, frozen_bn, dtype, train):
    """The block's body; called inside a compact ``__call__`` (its submodules attach to that module)."""
    frozen = frozen_bn or not train
    out = nn.relu(_conv_bn(x, planes, 1, 1, 0, "conv1", "bn1", frozen, dtype, train))
    out = nn.relu(_conv_bn(out, planes, 3, stride, 1, "conv2", "bn2", frozen, dtype, train))
    out = _conv_bn(out, planes * 4, 1, 1, 0, "conv3", "bn3", frozen, dtype, train)
    identity = x
    if downsample:
        identity = _conv_bn(x, planes * 4, 1, stride, 0, "downsample_conv", "downsample_bn", frozen, dtype, train)
    if rate is not None:
        out = DropPath(0.0, "sample", name="drop_path")(out, not train, rate)
    return nn.relu(identity + out)


class Bottleneck(nn.Module):
    planes: int
    stride: int = 1
    downsample: bool = False
    drop_path_rate: float = 0.0
    frozen_bn: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        return _bottleneck(x, self.planes, self.stride, self.downsample, self.drop_path_rate, self.frozen_bn,
                           self.dtype, train)


class _ScanBottleneck(nn.Module):
    """Body of a stage's scan over blocks 1..n-1: carry x, scanned input the block's drop-path rate
    (None when the config's rate is 0: no rng drawn, as in the unrolled blocks)."""
    planes: int
    frozen_bn: bool = True
    dtype: Any = jnp.float32
    train: bool = False

    @nn.compact
    def __call__(self, x, rate):
        x = _bottleneck(constrain_batch(x), self.planes, 1, False, rate, self.frozen_bn, self.dtype, self.train)
        return constrain_batch(x), None


def block_drop_path_rates(rate: float, blocks: int) -> list[float]:
    """torch.linspace(0, rate, blocks) in float32, as the reference computes it per stage."""
    return [float(v) for v in np.linspace(0.0, rate, blocks, dtype=np.float32)]


class ResNet(nn.Module):
    config: OFAConfig
    frozen_bn: bool = True
    dtype: Any = jnp.float32
    remat_blocks: bool = False  # recompute each Bottleneck block in the backward pass (gradient checkpointing)
    scan: bool = False          # blocks 1..n-1 of each stage as one nn.scan (see the module docstring)

    @nn.compact
    def __call__(self, images, train: bool = False):
        """images: (B, H, W, 3) -> (B, ceil(H/16), ceil(W/16), 1024)."""
        frozen = self.frozen_bn or not train
        x = nn.relu(_conv_bn(images.astype(self.dtype), 64, 7, 2, 3, "conv1", "bn1", frozen, self.dtype, train))
        x = max_pool_3x3_s2(x)
        run = lambda blk, x: blk(x, train)
        if self.remat_blocks:
            run = remat(run)
        for stage, (planes, blocks, stride) in enumerate(zip((64, 128, 256), self.config.resnet_layers, (1, 2, 2)), 1):
            rates = block_drop_path_rates(self.config.resnet_drop_path_rate, blocks)
            for i in range(1 if self.scan else blocks):
                # The first block of a stage has no drop path in the reference (it ignores dpr[0]).
                blk = Bottleneck(planes, stride if i == 0 else 1, downsample=(i == 0),
                                 drop_path_rate=rates[i] if i else 0.0, frozen_bn=self.frozen_bn, dtype=self.dtype,
                                 name=f"layer{stage}_{i}")
                x = run(blk, x)
            if self.scan and blocks > 1:
                x = self._scan_blocks(x, planes, rates[1:], train, f"layer{stage}_rest")
        return x

    def _scan_blocks(self, x, planes, rates, train, name):
        body = _ScanBottleneck
        if self.remat_blocks:
            # jax.checkpoint is enough inside a scan: the recomputation runs in the backward loop's
            # body, which no compiler can merge with the forward loop (cf. ofa_jax.remat). Without
            # remat, no policy: keeping only the convolutions' outputs saved no memory here.
            body = nn.remat(body, prevent_cse=False)
        stack = nn.scan(body, variable_axes={"params": 0, "batch_stats": 0},
                        split_rngs={"params": True, "dropout": True}, in_axes=0, length=len(rates),
                        metadata_params={nn.PARTITION_NAME: "layers"})
        xs = jnp.asarray(rates, jnp.float32) if self.config.resnet_drop_path_rate else None
        x, _ = stack(planes, self.frozen_bn, self.dtype, train, name=name)(x, xs)
        return x
