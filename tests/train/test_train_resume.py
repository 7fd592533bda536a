"""kill -9 between checkpoints, resume: final parameters equal an uninterrupted run's, bit for bit,
and the resumed run reads its compiled step from the cache the first run wrote
(``config.compilation_cache``). Also: restore onto another mesh, SIGTERM saves and exits cleanly,
export -> decode."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from helpers import CONFIG, ROOT, TINY_CLI, cli_args, run_cli, tiny_config, train_losses
from ofa_jax import train
from ofa_jax.checkpointing import Checkpointer

# These runs get their cache from the config, not from $JAX_COMPILATION_CACHE_DIR (which would win).
RUN = {"total_steps": 6, "ckpt.every": 2, "mesh.num_devices": 2,
       "compilation_cache": os.environ["JAX_COMPILATION_CACHE_DIR"]}
CONFIG_CACHE_ENV = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}


def _final_params(workdir, cfg):
    s = train.build(cfg, 512)
    ck = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    step = ck.latest_step()
    state, _ = ck.restore(step, s.abstract_state, data=False)
    ck.close()
    return step, jax.device_get(state)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    wd = tmp_path_factory.mktemp("full")
    run_cli(wd, RUN, env_replace=CONFIG_CACHE_ENV)
    return wd


def test_kill9_and_resume_is_bit_identical(tmp_path, uninterrupted):
    wd = tmp_path / "killed"
    p = run_cli(wd, {**RUN, "debug.sigkill_at_step": 3}, check=False, env_replace=CONFIG_CACHE_ENV)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert sorted(int(d) for d in os.listdir(wd / "checkpoints") if d.isdigit()) == [2]
    resumed = run_cli(wd, RUN, env_replace={**CONFIG_CACHE_ENV, "JAX_LOG_COMPILES": "1"})
    assert "Persistent compilation cache hit for 'jit_step'" in resumed.stderr
    cfg = tiny_config(**RUN)
    step_a, a = _final_params(uninterrupted, cfg)
    step_b, b = _final_params(wd, cfg)
    assert step_a == step_b == 6
    flat_a, flat_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(flat_a) == len(flat_b)
    for x, y in zip(flat_a, flat_b):
        assert np.array_equal(np.asarray(x), np.asarray(y))
    # the resumed run logged the same losses for steps 4..6
    np.testing.assert_array_equal(train_losses(wd)[-3:], train_losses(uninterrupted)[-3:])


def test_restore_onto_another_mesh(uninterrupted):
    if jax.device_count() < 8:
        pytest.skip("needs 8 (fake) devices")
    _, ref = _final_params(uninterrupted, tiny_config(**RUN))
    cfg = tiny_config(**{**RUN, "mesh.num_devices": 8, "mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2})
    _, other = _final_params(uninterrupted, cfg)
    for x, y in zip(jax.tree_util.tree_leaves(ref), jax.tree_util.tree_leaves(other)):
        assert np.array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_signal_saves_and_exits(tmp_path, how):
    """Preemption (SIGTERM to the trainer) and Ctrl-C (SIGINT to the terminal's whole process group,
    grain's data workers included) both save a checkpoint and exit 0, without a traceback."""
    wd = tmp_path / "term"
    workers = {"data.num_workers": 2} if how == "Ctrl-C" else {}
    cmd = [sys.executable, "-m", "ofa_jax.train", "--config", CONFIG, "--workdir", str(wd),
           *cli_args({**TINY_CLI, "total_steps": 100000, "ckpt.every": 100000, **workers})]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    deadline = time.time() + 240
    metrics = wd / "metrics.jsonl"
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.5)
    if how == "SIGTERM":
        p.send_signal(signal.SIGTERM)
    else:
        os.killpg(p.pid, signal.SIGINT)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out[-3000:]
    assert f"{'SIGINT' if how == 'Ctrl-C' else 'SIGTERM'}: saved step" in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    steps = [int(d) for d in os.listdir(wd / "checkpoints") if d.isdigit()]
    assert len(steps) == 1 and steps[0] >= 2


def test_second_ctrl_c_stops_at_once_and_handlers_come_back():
    from ofa_jax.train.loop import _Preemption

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    pre = _Preemption()
    pre.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs between bytecodes of the main thread
        assert pre.requested and pre.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        assert pre.abort  # the loop raises it again at the end of the step if it was swallowed
    finally:
        pre.uninstall()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_export_then_decode(tmp_path, uninterrupted):
    out = tmp_path / "model"
    run_cli(uninterrupted, RUN, extra=["--export", str(out), "--export_which", "last"])
    for name in ("config.json", "params.safetensors", "vocab.txt", "generation.json"):
        assert (out / name).exists()
    gen = json.loads((out / "generation.json").read_text())
    assert gen["patch_image_size"] == 64
    from ofa_jax.data.render import find_cjk_fonts, render_line
    img = render_line("12", find_cjk_fonts()[0], np.random.default_rng(0))
    img.save(tmp_path / "line.png")
    p = subprocess.run([sys.executable, "-m", "ofa_jax.decode", "--model", str(out), "--json", "--greedy",
                        str(tmp_path / "line.png")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "text" in json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # two more training runs in subprocesses
def test_kill_during_save_resumes_from_last_complete_step(tmp_path, uninterrupted):
    """SIGKILL while step 4's (async) checkpoint is being written: step 4 stays an Orbax tmp directory,
    never a step; the next run says so, resumes from step 2 and ends bit-identical to an uninterrupted run."""
    wd = tmp_path / "killed_in_save"
    p = run_cli(wd, {**RUN, "ckpt.async_save": True, "debug.sigkill_during_save_at_step": 4}, check=False)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    names = os.listdir(wd / "checkpoints")
    assert "2" in names and "4" not in names and any(n.startswith("4.orbax-checkpoint-tmp") for n in names), names
    p = run_cli(wd, RUN)
    assert "resume: ignoring incomplete checkpoint(s) 4.orbax-checkpoint-tmp" in p.stdout
    assert "resume: step 2 from" in p.stdout
    cfg = tiny_config(**RUN)
    step_a, a = _final_params(uninterrupted, cfg)
    step_b, b = _final_params(wd, cfg)
    assert step_a == step_b == 6
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert np.array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow  # three training runs (220 s on 2 cores); replay's state restore is exact at the data
# level (tests/data/test_data_replay.py) and kill -9 + resume end to end above
def test_replay_kill9_and_resume_is_bit_identical(tmp_path):
    """With the replay buffer (lines prepared by 2 worker processes, each drawn twice on average) a run
    killed with -9 and resumed ends with the uninterrupted run's parameters, bit for bit."""
    run = {**RUN, "data.replay_reuse": 2, "data.replay_window": 32, "data.num_workers": 2,
           "data.replay_dir": str(tmp_path / "buf")}
    full = tmp_path / "full"
    p = run_cli(full, run)
    assert "replay: each line drawn 2 times on average (4 new lines per step of 8), window 32 lines" in p.stdout + p.stderr
    wd = tmp_path / "killed"
    p = run_cli(wd, {**run, "debug.sigkill_at_step": 3}, check=False)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    run_cli(wd, run)
    cfg = tiny_config(**run)
    (step_a, a), (step_b, b) = _final_params(full, cfg), _final_params(wd, cfg)
    assert step_a == step_b == 6
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert np.array_equal(np.asarray(x), np.asarray(y))
    assert train_losses(wd)[-3:] == train_losses(full)[-3:]
    assert os.listdir(tmp_path / "buf") == []  # the killed run's buffer is removed by the next run


def test_loop_keeps_at_most_two_steps_in_flight(monkeypatch):
    """The loop waits for the step two back before fetching the next batch, so a SIGTERM's checkpoint waits
    for at most two queued steps (not all those since the last log) and queued batches do not pile up."""
    waited = []
    monkeypatch.setattr(train.loop.jax, "block_until_ready", lambda x: waited.append(x) or x)
    pending = []  # metrics since the last log, as the loop keeps them
    for i in range(5):
        pending.append({"step": i})
        train._throttle(pending)
        in_flight = [m for m in pending if m not in waited]
        assert len(in_flight) == min(i + 1, train.MAX_STEPS_IN_FLIGHT)
    assert [w["step"] for w in waited] == [0, 1, 2]
    assert [m["step"] for m in in_flight] == [3, 4]
