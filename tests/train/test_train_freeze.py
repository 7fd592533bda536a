"""``optim.freeze``: the matched parameters keep their values, the others train; bad patterns are errors."""
import jax
import numpy as np
import pytest

from ofa_jax import modeldir, train

from helpers import tiny_config


def _params(model_dir):
    return modeldir.flatten(modeldir.load_model_dir(str(model_dir)).variables["params"])


@pytest.mark.slow  # a training run (~1.5 min); frozen parameters' optimizer state: the next test
def test_freeze_encoder_trains_only_the_rest(tmp_path):
    # Also the optimizer state's structure: frozen parameters have no Adam state (optax MaskedNode), and
    # its shardings, checkpoint and restore must follow (the sharded run: the slow test below).
    cfg = tiny_config(total_steps=3, **{"model.overrides": {"dropout": 0.0}, "optim.freeze": "^encoder/",
                                        "optim.lr": 1e-3})
    init = train.initial_state(cfg, train.build(cfg, None), lambda m: None).params  # what the run starts from
    before = modeldir.flatten(jax.device_get(init))
    train.train_and_evaluate(cfg, str(tmp_path / "run"))
    train.export(cfg, str(tmp_path / "run"), str(tmp_path / "out"), which="last")
    after = _params(tmp_path / "out")
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


@pytest.mark.slow
def test_freeze_sharded_matches_one_device(tmp_path):
    """With frozen parameters a data x fsdp x tensor mesh trains as one device does (the optimizer
    state's shardings skip the MaskedNodes of frozen parameters)."""
    if jax.device_count() < 8:
        pytest.skip("needs 8 (fake) devices")
    from helpers import train_losses

    runs = []
    for i, mesh in enumerate(({}, {"mesh.num_devices": 8, "mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2})):
        cfg = tiny_config(total_steps=3, **{"optim.freeze": "^encoder/embed_images/", **mesh})
        train.train_and_evaluate(cfg, str(tmp_path / str(i)))
        runs.append(train_losses(tmp_path / str(i)))
    assert len(runs[0]) == 3 and runs[0][-1] != runs[0][0]
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-5, atol=0)
