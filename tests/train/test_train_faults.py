"""Training faults: NaN/Inf -> stop with a good checkpoint or skip; disk full while saving -> one clear
error, previous checkpoint intact, resume works; empty/tiny data -> clear error; messy labels and
unreadable records -> skipped/counted in the log and metrics.jsonl."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from helpers import CONFIG, ROOT, TINY_CLI, cli_args, tiny_config
from ofa_jax import train
from ofa_jax.checkpointing import Checkpointer, CheckpointWriteError
from ofa_jax.data.report import DataError
from ofa_jax.data.sources import ListSource

from test_checkpoint_faults import file_size_limit


# one encoder and one decoder layer: the same code paths, less to compile
SMALL = {"model.overrides": {"dropout": 0.1, "encoder_layers": 1, "decoder_layers": 1}}


def _restore(workdir, cfg, step):
    s = train.build(cfg, 512)
    ck = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    state, _ = ck.restore(step, s.abstract_state, data=False)
    ck.close()
    return jax.device_get(state)


def _records(wd):
    with open(os.path.join(wd, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_nan_stop_saves_the_last_good_state(tmp_path, capsys):
    cfg = tiny_config(**{"total_steps": 6, "ckpt.every": 2, "debug.nan_loss_at_steps": (3,), **SMALL})
    with pytest.raises(FloatingPointError, match="non-finite loss or gradient at step 3"):
        train.train_and_evaluate(cfg, str(tmp_path))
    out = capsys.readouterr().out
    assert ("error: non-finite loss or gradient at step 3 (update not applied); saved checkpoint step 3 (finite "
            "parameters); stopping. Set --config.nan_policy=skip") in out
    assert sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()) == [2, 3]
    two, three = _restore(tmp_path, cfg, 2), _restore(tmp_path, cfg, 3)
    # step 3's update was not applied: parameters and optimizer state are those after step 2
    for a, b in zip(jax.tree_util.tree_leaves((two.params, two.opt_state)),
                    jax.tree_util.tree_leaves((three.params, three.opt_state))):
        assert np.all(np.isfinite(b)) and np.array_equal(a, b)
    assert int(three.step) == 3 and int(three.nonfinite) == 1


def _png(seed=0, size=(40, 16)):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _messy_source():
    img = _png()
    texts = ["12", "3☃", "", "一二三四五六", "45", "6", "78", "90"]  # OOV, empty, over-long (max 4 tokens)
    recs = [{"id": str(i), "image": img, "text": t} for i, t in enumerate(texts)]
    recs[5]["image"] = b"not an image"
    return ListSource(recs)


@pytest.mark.slow  # a second training run; the pipeline's counts are checked in CI by tests/data/test_data_faults.py
def test_nan_skip_and_data_report(tmp_path, capsys):
    """nan_policy=skip: a NaN loss at step 2 and an infinite gradient at step 4 are skipped and logged;
    the run finishes. The messy data (8 records = one batch = one epoch per step) is counted exactly."""
    cfg = tiny_config(**{"total_steps": 5, "nan_policy": "skip", "debug.nan_loss_at_steps": (2,), **SMALL,
                         "debug.inf_grad_at_steps": (4,)})
    out = train.train_and_evaluate(cfg, str(tmp_path), train_source=_messy_source())
    assert out["step"] == 5 and out["stopped"] is None
    assert out["train"]["skipped_nonfinite"] == 2 and np.isfinite(out["train"]["loss"])
    o, e = capsys.readouterr()
    assert "warning: non-finite loss or gradient at step 2: update skipped (1 skipped in this run so far)" in o
    assert "warning: non-finite loss or gradient at step 4: update skipped (2 skipped in this run so far)" in o
    assert "warning: skipping unreadable record: record 5: <12 bytes>: not a readable image" in e
    data = [r for r in _records(tmp_path) if "data/records_seen" in r][-1]
    assert data == {"step": 5, "data/records_seen": 40, "data/truncated": 5, "data/oov_tokens": 5,
                    "data/empty_label": 5, "data/bad_record": 5}
    assert ("data: 1 labels truncated to max_target_tokens, 1 out-of-vocabulary tokens (<unk>), 1 empty labels, "
            "1 unreadable records skipped (of 8 records read so far)") in o
    state = _restore(tmp_path, cfg, 5)
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(state.params))


@pytest.mark.slow  # two training runs; the Checkpointer-level test (test_checkpoint_faults.py) runs in CI
def test_disk_full_while_saving_then_resume(tmp_path, monkeypatch):
    cfg = tiny_config(**{"total_steps": 4, "ckpt.every": 2})
    real_save = Checkpointer.save

    def save(self, step, *a, **kw):
        if step == 4:  # the disk fills up before the second checkpoint
            with file_size_limit(256 * 1024):
                return real_save(self, step, *a, **kw)
        return real_save(self, step, *a, **kw)

    monkeypatch.setattr(Checkpointer, "save", save)
    with pytest.raises(CheckpointWriteError) as info:
        train.train_and_evaluate(cfg, str(tmp_path))
    assert str(info.value).startswith(f"could not write checkpoint step 4 in {tmp_path / 'checkpoints'}: "
                                      "File too large (EFBIG); the earlier checkpoints (2) are intact")
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
    monkeypatch.setattr(Checkpointer, "save", real_save)  # space is back: the same command resumes
    out = train.train_and_evaluate(cfg, str(tmp_path))
    assert out["step"] == 4
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]


def test_empty_and_tiny_datasets_are_clear_errors(tmp_path):
    cfg = tiny_config()  # batch 8
    with pytest.raises(DataError, match=r"training data .* \(split train\) is empty$"):
        train.train_and_evaluate(cfg, str(tmp_path / "a"), train_source=ListSource([]))
    three = ListSource([{"id": str(i), "image": _png(i), "text": "12"} for i in range(3)])
    with pytest.raises(DataError, match=r"has 3 records, fewer than one batch: batch_size 8 needs at least 8 "):
        train.train_and_evaluate(cfg, str(tmp_path / "b"), train_source=three)
    with pytest.raises(DataError, match=r"validation data .* is empty; set --config.data.val= to train without"):
        train.train_and_evaluate(cfg, str(tmp_path / "c"), val_source=ListSource([]))
    with pytest.raises(DataError, match="nan_policy must be 'stop' or 'skip'"):
        train.train_and_evaluate(tiny_config(nan_policy="ignore"), str(tmp_path / "d"))


def test_cli_data_and_config_errors_are_one_line(tmp_path):
    missing = tmp_path / "missing"
    for overrides, expect in (({"data.train": f"folder:{missing}"}, f"error: training data folder:{missing} (split train): "),
                              ({"optim.freeze": "^encodr/"}, "error: optim.freeze='^encodr/' matches no parameter")):
        p = subprocess.run([sys.executable, "-m", "ofa_jax.train", "--config", CONFIG, "--workdir", str(tmp_path / "wd"),
                            *cli_args({**TINY_CLI, **overrides})], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
        err = p.stderr.strip().splitlines()
        assert p.returncode == 2, p.stderr[-3000:]
        assert "Traceback" not in p.stderr and err[-1].startswith(expect), p.stderr[-2000:]


def test_config_errors_name_the_setting(tmp_path):
    """Config values that cannot work raise ``ConfigError`` (one ``error:`` line from the CLI, exit 2)."""
    with pytest.raises(train.ConfigError, match=r"end_lr \(0.001\) must be smaller than lr \(0.0001\)"):
        train.make_optimizer(tiny_config(**{"optim.lr": 1e-4, "optim.end_lr": 1e-3}), 10)
    # the architecture comes from init.model_dir; overrides that change a tensor's shape cannot load it
    shipped = os.path.join(ROOT, "ofa_jax", "models", "ofa-ocr-zh-small")
    cfg = tiny_config(**{"init.model_dir": shipped, "model.overrides": {"encoder_ffn_dim": 512}})
    with pytest.raises(train.ConfigError, match="ofa-ocr-zh-small: (shape .* where the model has|parameters do not match)"):
        train.initial_state(cfg, train.build(cfg, None), lambda m: None)
