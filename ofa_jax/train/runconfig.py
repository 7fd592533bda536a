"""What a run config means beyond its fields: the model it builds, the compute dtype, the number of
steps, the input size; and the error for a value that cannot work."""
from __future__ import annotations

import math
from typing import Optional

import jax.numpy as jnp

from ofa_jax.config import OFAConfig, get_config


class ConfigError(ValueError):
    """A config value that cannot work (or that does not fit the model dir or checkpoint it names): the
    command line prints it as one line and exits 2."""


def model_config(cfg) -> OFAConfig:
    """Architecture from the init model dir (if any) or the preset, plus ``model.overrides``."""
    base = cfg.init.model_dir or cfg.model.preset
    return get_config(base, **dict(cfg.model.get("overrides", {})))


def compute_dtype(name: str):
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


def resolve_total_steps(cfg, train_len: Optional[int]) -> int:
    if cfg.total_steps:
        return int(cfg.total_steps)
    if not cfg.get("num_epochs") or train_len is None:
        raise ConfigError("set config.total_steps (or config.num_epochs with a sized training source)")
    return int(math.ceil(cfg.num_epochs * train_len / cfg.batch_size))


def input_size(cfg):
    """``data.image_size`` (square, the reference's rule) or ``(data.image_height, data.image_size)``."""
    h, w = int(cfg.data.get("image_height", 0) or 0), int(cfg.data.image_size)
    return w if h in (0, w) else (h, w)
