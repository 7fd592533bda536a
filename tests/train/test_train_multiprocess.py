"""Two processes (jax.distributed on localhost, CPU collectives) give the single-process losses.

Every random consumer is on (dropout, attention dropout, drop-path in the ResNet, encoder and
decoder): the masks are drawn inside the jitted step from ``fold_in(PRNGKey(seed + 1), step)`` with
JAX's partitionable threefry (the default since JAX 0.5), so each device computes exactly its slice
of the global mask and the split into processes cannot change it. The losses match bit for bit.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from helpers import CONFIG, ROOT, TINY_CLI, cli_args, tiny_config, train_losses
from ofa_jax import train



def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# every consumer of the dropout rng
RANDOM = {"dropout": 0.1, "attention_dropout": 0.1, "resnet_drop_path_rate": 0.1, "encoder_drop_path_rate": 0.1,
          "decoder_drop_path_rate": 0.1}


# the replay buffer: each process draws from its own shard's window (one worker process each)
REPLAY = {"data.replay_reuse": 2, "data.replay_window": 16, "data.num_workers": 1}


# replay: 160 s more on 2 cores, so only with --runslow; its per-shard windows and resumable state are
# tested in tests/data/test_data_replay.py
@pytest.mark.slow  # two training processes under jax.distributed (~4-6 min on 2 cores); one-process meshes: test_train_sharding
@pytest.mark.parametrize("data", [{}, REPLAY], ids=["pipeline", "replay"])
def test_two_processes_match_one(tmp_path, data):
    wd = tmp_path / "mp"
    port = _free_port()
    overrides = {**TINY_CLI, **data, "total_steps": 5, "mesh.num_devices": 0, "model.overrides": json.dumps(RANDOM)}
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "ofa_jax.train", "--config", CONFIG, "--workdir", str(wd), *cli_args(overrides),
         f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    multi = train_losses(wd)
    with open(wd / "config.json") as f:  # the CLI override really turned the random consumers on
        assert json.load(f)["model"]["overrides"] == RANDOM

    # one process, two devices, the data split into the same two shards
    ref = tmp_path / "single"
    train.train_and_evaluate(tiny_config(**{**data, "mesh.num_devices": 2, "data.shards_per_process": 2,
                                            "model.overrides": RANDOM}), str(ref))
    single = train_losses(ref)
    assert len(multi) == len(single) == 5
    np.testing.assert_allclose(multi, single, atol=1e-5, rtol=0)
    assert os.path.isdir(wd / "checkpoints" / "5")
