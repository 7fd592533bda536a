"""HxW (line-shaped) inputs end to end: train with BatchNorm training, export, decode the same way."""
import json

import numpy as np
import pytest

from ofa_jax import train
from ofa_jax.preprocess import resize_and_pad_uint8

from helpers import tiny_config


def test_line_shaped_train_export_decode(tmp_path):
    cfg = tiny_config(total_steps=2, **{"data.image_height": 32, "data.image_size": 128, "model.train_bn": True,
                                         "model.overrides": {"dropout": 0.0}})
    wd, out = tmp_path / "run", tmp_path / "model"
    train.train_and_evaluate(cfg, str(wd))
    train.export(cfg, str(wd), str(out), which="last")
    gen = json.loads((out / "generation.json").read_text())
    assert gen["patch_image_size"] == [32, 128]

    from ofa_jax.data.render import find_cjk_fonts, render_line
    from ofa_jax.recognizer import Recognizer

    img = render_line("12", find_cjk_fonts()[0], np.random.default_rng(0))
    rec = Recognizer.from_pretrained(str(out), beam_size=1, max_len=4, batch_size=1, compilation_cache=False)
    assert rec.image_size == (32, 128)
    pixels = rec.preprocess(img)
    assert pixels.shape == (32, 128, 3) and np.array_equal(pixels, resize_and_pad_uint8(img, (32, 128)))
    (text, score), = rec.recognize_pixels(pixels[None])
    assert isinstance(text, str) and np.isfinite(score)
    # BatchNorm trained: the running statistics moved away from their initial (0, 1)
    stats = np.concatenate([np.ravel(v) for v in __import__("jax").tree_util.tree_leaves(
        rec.variables.get("batch_stats", {}))])
    assert stats.size and not np.allclose(stats, np.round(stats))


@pytest.mark.slow  # a second line-shaped run (~1.5 min); the bf16 export CLI: test_cli_fresh
def test_every_zero_means_at_the_end_and_bf16_export(tmp_path):
    """``eval.every``/``ckpt.every`` <= 0: validate and save only at the end (was a ZeroDivisionError);
    ``export(dtype="bfloat16")`` halves the float parameters and keeps BatchNorm statistics float32."""
    import ml_dtypes
    from safetensors.numpy import load_file

    from helpers import SYNTH

    cfg = tiny_config(total_steps=3, **{"data.val": SYNTH, "eval.every": 0, "eval.max_examples": 8,
                                         "eval.beam_size": 1, "eval.max_len": 4, "ckpt.every": 0})
    wd, out = tmp_path / "run", tmp_path / "model"
    train.train_and_evaluate(cfg, str(wd))
    recs = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "val/acc" in r] == [3]
    assert sorted(p.name for p in (wd / "checkpoints").iterdir() if p.name.isdigit()) == ["3"]
    train.export(cfg, str(wd), str(out), which="last", dtype="bfloat16")
    flat = load_file(str(out / "params.safetensors"))
    assert {a.dtype for k, a in flat.items() if k.startswith("params/")} == {np.dtype(ml_dtypes.bfloat16)}
    assert {a.dtype for k, a in flat.items() if k.startswith("batch_stats/")} <= {np.dtype(np.float32)}


def test_spell_alnum_reaches_the_training_pipeline():
    """``data.spell_alnum`` (off by default, the reference's targets) is passed to the pipeline."""
    assert train.train_pipeline_config(tiny_config(), 0, 1).spell_alnum is False
    cfg = tiny_config(**{"data.spell_alnum": True})
    assert train.train_pipeline_config(cfg, 0, 1).spell_alnum is True
