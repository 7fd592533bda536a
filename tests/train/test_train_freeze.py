"""``optim.freeze``: the matched parameters keep their values, the others train; bad patterns are errors."""
import jax
import numpy as np
import pytest

from ofa_jax import modeldir, train

from helpers import tiny_config


def _params(model_dir):
    return modeldir.flatten(modeldir.load_model_dir(str(model_dir)).variables["params"])


def test_freeze_encoder_trains_only_the_rest(tmp_path):
    base = tiny_config(total_steps=1, **{"model.overrides": {"dropout": 0.0}})
    train.train_and_evaluate(base, str(tmp_path / "a"))
    train.export(base, str(tmp_path / "a"), str(tmp_path / "init"), which="last")

    cfg = tiny_config(total_steps=3, **{"model.overrides": {"dropout": 0.0}, "optim.freeze": "^encoder/",
                                        "optim.lr": 1e-3, "init.model_dir": str(tmp_path / "init")})
    train.train_and_evaluate(cfg, str(tmp_path / "b"))
    train.export(cfg, str(tmp_path / "b"), str(tmp_path / "out"), which="last")
    before, after = _params(tmp_path / "init"), _params(tmp_path / "out")
    assert before.keys() == after.keys()
    enc = [k for k in before if k.startswith("encoder/")]
    rest = [k for k in before if not k.startswith("encoder/")]
    assert enc and rest
    for k in enc:  # bit-identical: no update and no weight decay
        np.testing.assert_array_equal(np.asarray(after[k]), np.asarray(before[k]), err_msg=k)
    moved = [k for k in rest if not np.array_equal(np.asarray(after[k]), np.asarray(before[k]))]
    assert "embed_tokens/embedding" in moved and any(k.startswith("decoder/layers_0/") for k in moved)


def test_frozen_parameters_have_no_adam_state():
    cfg = tiny_config(**{"optim.freeze": "^encoder/embed_images/"})
    tx, _ = train.make_optimizer(cfg, 10)
    params = {"encoder": {"embed_images": {"conv1": {"kernel": np.ones((3, 3), np.float32)}},
                          "layer_norm": {"scale": np.ones(4, np.float32)}}}
    sizes = [x.size for x in jax.tree.leaves(tx.init(params)) if np.ndim(x)]
    assert sorted(sizes) == [4, 4]  # mu and nu of the layer norm only


@pytest.mark.parametrize("pattern, message", [("^encodr/", "matches no parameter"),
                                              (".", "matches every parameter"),
                                              ("(", "not a regular expression")])
def test_bad_freeze_patterns_are_errors(pattern, message):
    params = {"encoder": {"w": np.ones(2)}, "decoder": {"w": np.ones(2)}}
    with pytest.raises(ValueError, match=message):
        train.check_freeze(tiny_config(**{"optim.freeze": pattern}), params)


def test_freeze_summary_counts_parameters():
    params = {"encoder": {"w": np.ones((2, 3))}, "decoder": {"w": np.ones(4)}}
    msg = train.check_freeze(tiny_config(**{"optim.freeze": "^encoder/"}), params)
    assert "0.00 M of 0.00 M" in msg and "1 of 2 tensors" in msg
    assert train.check_freeze(tiny_config(), params) is None
