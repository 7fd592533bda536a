"""config.model.scan: a scanned run starts from a per-layer model dir and steps as the unrolled one."""
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ofa_jax
from ofa_jax import train
from ofa_jax.config import PRESETS
from ofa_jax.layout import unstack_layers
from ofa_jax.model import init_params
from ofa_jax.modeldir import save_model_dir
from ofa_jax.preprocess import NORMALIZE_LUT

from helpers import tiny_config

VOCAB = os.path.join(os.path.dirname(ofa_jax.__file__), "assets", "vocab_zh.txt")
NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "encoder_drop_path_rate": 0.0,
              "decoder_drop_path_rate": 0.0, "resnet_drop_path_rate": 0.0}


@pytest.mark.slow  # two micro train-step compiles: ~2 min on 2 cores
def test_scanned_run_from_a_model_dir_steps_like_the_unrolled_one(tmp_path):
    cfg0 = PRESETS["micro"]
    variables = nn.meta.unbox(init_params(cfg0, jax.random.PRNGKey(3), image_size=(64, 64)))
    md = str(tmp_path / "init")
    save_model_dir(md, cfg0, variables, VOCAB, generation={"patch_image_size": 64})
    rng = np.random.default_rng(0)
    b, t = 8, 5
    target = rng.integers(4, 2000, (b, t)).astype(np.int32)
    batch = {"image": rng.integers(0, 256, (b, 64, 64, 3)).astype(np.uint8), "target": target,
             "prev_output_tokens": np.concatenate([np.zeros((b, 1), np.int32), target[:, :-1]], 1),
             "target_mask": np.ones((b, t), bool)}
    out = {}
    for scan in (False, True):
        cfg = tiny_config(**{"init.model_dir": md, "model.scan": scan, "model.overrides": NO_DROPOUT,
                             "optim.warmup_steps": 0})
        s = train.build(cfg, None)
        state = train.initial_state(cfg, s, lambda *_: None)
        src = np.asarray([[0, 5, 6, 7, 2]], np.int32)
        step = jax.jit(train.make_train_step(s.model, s.tx, cfg, src, jnp.asarray(NORMALIZE_LUT)))
        new, metrics = step(state, batch, jax.random.PRNGKey(0))
        params = jax.device_get(new.params)
        out[scan] = (jax.device_get(metrics), unstack_layers(params, s.mcfg) if scan else params)
        lr = float(cfg.optim.lr)
    (m0, p0), (m1, p1) = out[False], out[True]
    assert float(m1["loss"]) == pytest.approx(float(m0["loss"]), rel=1e-5)
    assert float(m1["grad_norm"]) == pytest.approx(float(m0["grad_norm"]), rel=1e-4)
    assert jax.tree.structure(p1) == jax.tree.structure(p0)  # unstacked: the model dir layout
    # One AdamW step from the same weights: the updates agree except where a gradient is ~0 and float
    # noise can flip its sign (an update of at most 2 lr).
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), p0, p1))
    assert max(diffs) <= 2.1 * lr
    assert sorted(diffs)[len(diffs) // 2] <= 1e-6  # and most tensors agree to float noise
