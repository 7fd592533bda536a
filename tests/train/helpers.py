"""Small configs and runners shared by the training tests (micro preset, 64x64 images, synth data)."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "ocr_cpu_synthetic.py")
# The font is named so the pixels (and the float noise the exactness tests compare) do not depend on
# which other CJK fonts a machine has: wqy-microhei comes with the test extra (paperang-p2-fonts-cjk).
SYNTH = "synth:chars=0123456789,min=1,max=3,n=512,seed=0,fontmin=18,fontmax=28,font=wqy-microhei.ttc"


def tiny_config(**overrides):
    """The CPU config shrunk for tests; overrides use dotted keys: tiny_config(**{"mesh.data": 8})."""
    sys.path.insert(0, os.path.join(ROOT, "configs"))
    import ocr_cpu_synthetic

    c = ocr_cpu_synthetic.get_config()
    c.data.train = SYNTH
    c.data.val = ""
    c.data.image_size = 64
    c.data.max_target_tokens = 4
    c.data.augment = False
    c.batch_size = 8
    c.total_steps = 5
    c.model.overrides = {"dropout": 0.1}  # dropout on: masks must not depend on the sharding
    c.log.every = 1
    c.log.tensorboard = False
    c.ckpt.every = 1000
    c.ckpt.async_save = False
    c.mesh.data = -1
    c.mesh.num_devices = 1
    for k, v in overrides.items():
        node = c
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return c


def cli_args(overrides: dict) -> list:
    return [f"--config.{k}={v}" for k, v in overrides.items()]


TINY_CLI = {"data.train": SYNTH, "data.val": "", "data.image_size": 64, "data.max_target_tokens": 4,
            "data.augment": False, "batch_size": 8, "log.every": 1, "log.tensorboard": False,
            "ckpt.async_save": False, "mesh.num_devices": 1, "mesh.data": -1}


def run_cli(workdir, overrides: dict, extra=(), env=None, check=True, timeout=300, env_replace=None):
    """``python -m ofa_jax.train`` in a fresh process; ``env`` adds to this process's environment,
    ``env_replace`` replaces it."""
    cmd = [sys.executable, "-m", "ofa_jax.train", "--config", CONFIG, "--workdir", str(workdir),
           *cli_args({**TINY_CLI, **overrides}), *extra]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                       env={**(os.environ if env_replace is None else env_replace), **(env or {})})
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    return p


def train_losses(workdir):
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if "train/loss" in r:
                out[r["step"]] = r["train/loss"]
    return [out[k] for k in sorted(out)]
