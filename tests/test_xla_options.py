"""XLA:CPU settings: YNNPACK library fusions kept to dots and convolutions, in our programs
(``ofa_jax.xla_options``) and, once ofa_jax is imported, in every program of the process; and a
collective's rendezvous that waits for a late device thread instead of aborting the process
(ofa_jax/__init__.py)."""
import json
import os
import subprocess
import sys
from importlib.metadata import version

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JAXLIB = tuple(int(x) for x in version("jaxlib").split(".")[:3])
in_range = pytest.mark.skipif(not (0, 10, 1) <= JAXLIB < (0, 12, 0), reason="a jaxlib ofa_jax sets no XLA:CPU flags for")

PROBE = """
import json, sys
if sys.argv[1] == "import": import ofa_jax
import os, jax, jax.numpy as jnp
x = jnp.ones((64, 64), jnp.float32)
ynn = lambda f: "__ynn_fusion" in jax.jit(f).lower(x).compile().as_text()
print(json.dumps({"reduce": ynn(lambda a: (a * 2).sum(0)), "dot": ynn(lambda a: a @ a),
                  "eager": bool(jnp.sum(x * 2, 0)[0] == 128), "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}))
"""


def _probe(mode: str, xla_flags: str) -> dict:
    env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@in_range
def test_importing_ofa_jax_keeps_ynnpack_to_dots_and_convolutions_in_every_program():
    plain = _probe("plain", "--xla_force_host_platform_device_count=2")
    assert plain["reduce"] and plain["dot"]  # jaxlib's default: reductions go to YNNPACK too
    after = _probe("import", "--xla_force_host_platform_device_count=2")
    assert not after["reduce"] and after["dot"] and after["eager"]
    assert after["XLA_FLAGS"].startswith("--xla_force_host_platform_device_count=2 ")  # the user's flags kept


@in_range
def test_a_users_own_ynn_setting_wins():
    after = _probe("import", "--xla_cpu_experimental_ynn_fusion_type=")  # empty: no YNNPACK fusions at all
    assert after["XLA_FLAGS"].startswith("--xla_cpu_experimental_ynn_fusion_type= ")
    assert after["XLA_FLAGS"].count("ynn_fusion_type") == 1
    assert not after["reduce"] and not after["dot"]


# Eight CPU devices all-gather after device 0's thread sleeps (a stand-in for a thread starved on a
# loaded host): XLA:CPU warns after --xla_cpu_collective_call_warn_stuck_timeout_seconds and aborts
# the process (SIGABRT) once the terminate timeout has passed too.
STRAGGLER = """
import sys, time
if sys.argv[1] == "import": import ofa_jax
import numpy as np, jax, jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

def late(i):
    if int(np.asarray(i).reshape(-1)[0]) == 0:
        time.sleep(float(sys.argv[2]))
    return np.zeros((1,), np.float32)

def f(x):
    z = jax.pure_callback(late, jax.ShapeDtypeStruct((1,), jnp.float32), jax.lax.axis_index("d")[None])
    return jax.lax.all_gather(x + z, "d", tiled=True)

mesh = Mesh(np.array(jax.devices()), ("d",))
print(jax.jit(jax.shard_map(f, mesh=mesh, in_specs=P("d"), out_specs=P(), check_vma=False))(jnp.arange(8.0)).sum())
"""


def _straggler(mode: str, late_s: float, xla_flags: str):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=8 "
                         "--xla_cpu_collective_call_warn_stuck_timeout_seconds=1 " + xla_flags)
    return subprocess.run([sys.executable, "-c", STRAGGLER, mode, str(late_s)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@in_range
def test_a_late_device_thread_aborts_only_past_the_terminate_timeout_the_user_chose():
    r = _straggler("import", 4, "--xla_cpu_collective_call_terminate_timeout_seconds=1")
    assert r.returncode == -6 and "Termination timeout" in r.stderr  # SIGABRT: the flag governs it


@in_range
def test_a_device_thread_late_by_a_minute_does_not_abort_the_process():
    """Before: 20 s + 40 s and the interpreter died (SIGABRT), as the test suite did on a loaded host."""
    r = _straggler("import", 45, "")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "28.0"
