"""tools/offline_gpu_run: what prepare.sh packs (the package list) and what run.sh runs (the probe's use of
``ofa_jax.train``, and under ``-m slow`` the whole script on this CPU with the shrunken dry-run config)."""
import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "offline_gpu_run")
_spec = importlib.util.spec_from_file_location("offline_wheels", os.path.join(TOOL, "wheels.py"))
wheels = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(wheels)


def test_wheels_are_ofa_jax_requirements_less_what_the_host_has(tmp_path):
    """The closure of ofa-jax's requirements as installed here, pinned, without ofa-jax itself; a host's
    `pip list --format=freeze` removes what it already has."""
    listed = {wheels.canonical(n): v for n, v in wheels.needed("ofa-jax", ("synth",))}
    for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "tensorflow-datasets", "pillow",
                 "numpy", "ml-collections"):
        assert name in listed, name
    assert "ofa-jax" not in listed
    import importlib.metadata as md

    assert listed["jax"] == md.version("jax")
    host = tmp_path / "host.txt"
    host.write_text("jax==0.1\nJAXlib==0.1\n# a comment\nnumpy\n")
    have = wheels.read_have(str(host))
    assert have == {"jax", "jaxlib", "numpy"}
    rest = {wheels.canonical(n) for n, _ in wheels.needed("ofa-jax", ("synth",), have)}
    assert rest == set(listed) - have


def test_probe_uses_the_train_interface():
    """probe.py times the real train step through ``ofa_jax.train``'s names: they must exist."""
    from ofa_jax import train

    src = open(os.path.join(TOOL, "probe.py"), encoding="utf-8").read()
    used = set(re.findall(r"\btrain\.(\w+)", src))
    assert {"build", "make_train_step", "ShardedIterator"} <= used
    assert [n for n in sorted(used) if not hasattr(train, n)] == []


@pytest.mark.slow
def test_run_sh_dry_run_on_cpu(tmp_path):
    """The README's CPU dry run: probe, replay training from the shipped model, export, scoring (~3 min)."""
    env = {**os.environ, "SKIP_PIP": "1", "CHECK_FONTS": "0", "PY": sys.executable,
           "CONFIG": "tools/offline_gpu_run/dryrun_config.py", "TRAIN_S": "90", "STEP_S": "20", "PROBE_B": "2",
           "EVAL_N": "16", "MIN_STEPS": "5", "OUT": str(tmp_path / "out"), "WORKDIR": str(tmp_path / "run"),
           "PACK": str(tmp_path / "no_pack")}
    p = subprocess.run(["bash", "tools/offline_gpu_run/run.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = tmp_path / "out"
    assert (out / "model" / "params.safetensors").exists() and (out / "metrics.jsonl").exists()
    assert (out / "eval.jsonl").read_text().count("\n") == 16
    assert (out / "indep_val.jsonl").read_text().count("\n") == 16  # the independent dev set, plain
