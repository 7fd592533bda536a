"""HxW (line-shaped) inputs end to end: train with BatchNorm training, export, decode the same way."""
import json

import numpy as np

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
