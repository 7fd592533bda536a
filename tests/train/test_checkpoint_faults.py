"""Checkpoint faults at the Checkpointer level (fast): disk full while saving, a step left half
written by a kill, a complete-looking step whose files were damaged afterwards.

Disk full is simulated at the OS level: ``RLIMIT_FSIZE`` makes every ``write`` beyond the limit fail
inside TensorStore's C++ writer (errno EFBIG instead of ENOSPC, the same failure path: a write call
returns an error in the middle of a save). SIGXFSZ is ignored so that the write fails instead of the
process being killed.
"""
import contextlib
import os
import resource
import shutil
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ofa_jax.checkpointing import Checkpointer, CheckpointReadError, CheckpointWriteError


def _state(seed):
    # random values: TensorStore compresses constant arrays to almost nothing
    return {"w": jax.random.normal(jax.random.PRNGKey(seed), (512, 512)), "step": jnp.int32(seed)}


ABSTRACT = {"w": jax.ShapeDtypeStruct((512, 512), jnp.float32), "step": jax.ShapeDtypeStruct((), jnp.int32)}


@contextlib.contextmanager
def file_size_limit(nbytes):
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


@pytest.mark.parametrize("async_save", [False, True])
def test_disk_full_while_saving(tmp_path, async_save):
    d = tmp_path / "ckpt"
    c = Checkpointer(str(d), keep_best=0, async_save=async_save)
    c.save(2, _state(2), {"pos": 2})
    c.wait()
    with file_size_limit(64 * 1024), pytest.raises(CheckpointWriteError) as info:
        c.save(4, _state(4), {"pos": 4})
        c.wait()  # an async save fails here (or at the next save / close)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"could not write checkpoint step 4 in {d}: File too large (EFBIG)")
    assert msg.endswith("the earlier checkpoints (2) are intact: fix the cause and rerun to resume from step 2")
    # the partial step is gone (space freed), the previous one restores bit for bit
    assert sorted(os.listdir(d)) == ["2"]
    c.close()
    c2 = Checkpointer(str(d), keep_best=0, async_save=False)
    step, state, data = c2.restore_latest(ABSTRACT)
    assert step == 2 and data == {"pos": 2}
    np.testing.assert_array_equal(np.asarray(state["w"]), np.asarray(_state(2)["w"]))
    # and saving works again once there is space
    c2.save(4, _state(4), {"pos": 4})
    c2.close()
    assert sorted(os.listdir(d)) == ["2", "4"]


def _two_steps(d):
    c = Checkpointer(str(d), keep_best=0, async_save=False)
    c.save(2, _state(2), {"pos": 2})
    c.save(4, _state(4), {"pos": 4})
    c.close()


def test_half_written_step_is_ignored(tmp_path):
    """What a kill in the middle of a save leaves (see test_train_resume for the real kill): the step's
    tmp directory with some of its files. It is never listed; the last complete step is restored."""
    d = tmp_path / "ckpt"
    _two_steps(d)
    partial = d / "4.orbax-checkpoint-tmp-1764000000000000"
    os.replace(d / "4", partial)
    for root, _, files in os.walk(partial):
        for f in files[::2]:
            os.remove(os.path.join(root, f))
    c = Checkpointer(str(d), keep_best=0, async_save=False)
    assert c.latest_step() == 2 and c.all_steps() == [2]
    step, _, data = c.restore_latest(ABSTRACT)
    assert step == 2 and data == {"pos": 2}
    c.save(4, _state(4), {"pos": 4})  # the resumed run writes step 4 again
    c.close()
    assert Checkpointer(str(d), keep_best=0).latest_step() == 4


def test_damaged_complete_step_falls_back_to_the_previous_one(tmp_path):
    d = tmp_path / "ckpt"
    _two_steps(d)
    data_dir = next(p for p, _, files in os.walk(d / "4" / "state") if os.path.basename(p) == "d")
    shutil.rmtree(data_dir)  # the array data of step 4 is lost (e.g. a non-atomic copy)
    lines = []
    c = Checkpointer(str(d), keep_best=0, async_save=False)
    step, state, data = c.restore_latest(ABSTRACT, log=lines.append)
    assert step == 2 and data == {"pos": 2}
    np.testing.assert_array_equal(np.asarray(state["w"]), np.asarray(_state(2)["w"]))
    assert len(lines) == 2 and lines[0].startswith(f"warning: checkpoint step 4 in {d} cannot be restored (")
    assert lines[0].endswith("trying step 2")
    assert lines[1] == "warning: step 2 restored; moved the unreadable step(s) 4 to corrupt-4 (kept for inspection)"
    assert sorted(os.listdir(d)) == ["2", "corrupt-4"] and c.all_steps() == [2]
    c.save(4, _state(4), {"pos": 4})  # the resumed run can write step 4 again
    c.close()


def test_no_restorable_checkpoint_is_one_clear_error(tmp_path):
    d = tmp_path / "ckpt"
    c = Checkpointer(str(d), keep_best=0, async_save=False)
    c.save(2, _state(2), {"pos": 2})
    c.close()
    for p, _, _ in os.walk(d / "2" / "state"):
        if os.path.basename(p) == "d":
            shutil.rmtree(p)
            break
    c = Checkpointer(str(d), keep_best=0, async_save=False)
    with pytest.raises(CheckpointReadError, match=f"no checkpoint in {d} can be restored \\(step 2; step 2: "):
        c.restore_latest(ABSTRACT)


def test_a_config_that_fits_no_checkpoint_moves_nothing(tmp_path):
    """Restarting a workdir with another model config: every step fails to restore. That is not
    damage: one clear error, and every checkpoint stays where it is."""
    d = tmp_path / "ckpt"
    _two_steps(d)
    other = {"w": jax.ShapeDtypeStruct((256, 512), jnp.float32), "step": jax.ShapeDtypeStruct((), jnp.int32)}
    c = Checkpointer(str(d), keep_best=0, async_save=False)
    lines = []
    with pytest.raises(CheckpointReadError) as info:
        c.restore_latest(other, log=lines.append)
    msg = str(info.value)
    assert msg.startswith(f"no checkpoint in {d} can be restored (step 4 and all older ones; step 2: ")
    assert msg.endswith("is the model config the run's? Nothing was moved or deleted") and "\n" not in msg
    assert sorted(os.listdir(d)) == ["2", "4"] and len(lines) == 1
