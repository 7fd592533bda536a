"""A run's checkpoint -> an ofa-jax model dir (``python -m ofa_jax.train ... --export OUT``)."""
from __future__ import annotations

import json
import os

import jax

import ofa_jax
from ofa_jax.train.runconfig import input_size
from ofa_jax.train.state import build, checkpointer


def saved_run_config(cfg, workdir: str):
    """The config the run in ``workdir`` trained with (its ``config.json``), else ``cfg``: exporting
    needs the run's model, optimizer and input size, not whatever flags the export command repeats."""
    import ml_collections

    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return cfg
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def export(cfg, workdir: str, out: str, which: str = "best", dtype: str = "float32") -> int:
    """Best (by validation metric; falls back to last) or last checkpoint -> an ofa-jax model dir.
    The model, optimizer, input size and generation defaults are the run's (`saved_run_config`)."""
    from ofa_jax.modeldir import load_model_dir, save_model_dir

    cfg = saved_run_config(cfg, workdir)
    ckpt = checkpointer(cfg, workdir)
    step = ckpt.best_step() if which == "best" else None
    if step is None:
        step = ckpt.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {ckpt.directory}")
    s = build(cfg, None if cfg.total_steps else 1)
    state, _ = ckpt.restore(step, s.abstract_state, data=False)
    ckpt.close()
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    if s.model.scan:  # a model dir has the per-layer layout whatever form trained it
        from ofa_jax.layout import unstack_layers

        variables = unstack_layers(variables, s.mcfg)
    vocab = os.path.join(os.path.dirname(os.path.abspath(ofa_jax.__file__)), "assets", "vocab_zh.txt")
    extras, generation = {}, {}
    if cfg.init.model_dir:  # keep what the init model dir had (unused image-code weights, generation defaults)
        md = load_model_dir(cfg.init.model_dir)
        extras, generation, vocab = md.extras, dict(md.generation), md.vocab_path
        generation.pop("views", None)  # test-time views are chosen per model (ofa_jax/views.py), not inherited
    size = input_size(cfg)
    generation.update(patch_image_size=size if isinstance(size, int) else list(size), prompt=cfg.prompt,
                      beam_size=int(cfg.eval.beam_size), max_len_b=int(cfg.eval.max_len))
    if jax.process_index() == 0:
        save_model_dir(out, s.mcfg, variables, vocab, generation=generation, extras=extras, dtype=dtype,
                       metadata={"source": "ofa_jax.train", "step": int(step), "which": which})
    return step
