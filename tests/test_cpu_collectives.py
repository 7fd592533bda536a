"""XLA:CPU with several devices: what makes jaxlib's CPU client deadlock (and XLA then abort the
process), and that our loops stay clear of it."""
import os
import subprocess
import sys
from importlib.metadata import version

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JAXLIB = tuple(int(x) for x in version("jaxlib").split(".")[:3])
in_range = pytest.mark.skipif(not (0, 10, 1) <= JAXLIB < (0, 12, 0), reason="another jaxlib than the ones measured")

# jaxlib's CPU client with several devices (here 8 fake ones) deadlocks when more collective programs
# are in flight than a device's in-flight limit (32) while one of them is still running: the later
# programs' launches hold the device's slots and the pool's threads, the earlier one's cannot start,
# and after 60 s XLA aborts the process ("Termination timeout ... Exiting to ensure a consistent
# program state"). On a loaded host a slow device thread is enough: the suite's SIGABRT, in a reference
# decode written as hundreds of unsynchronised eager ops on sharded arrays. Our loops keep few programs
# in flight (training: train.loop.MAX_STEPS_IN_FLIGHT; decoding: each batch is fetched).
IN_FLIGHT = """
import sys, time
import numpy as np, jax, jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

mesh = Mesh(np.array(jax.devices()), ("d",))

def late(i):  # device 0's thread is 3 s late at the first program's all-gather
    if int(np.asarray(i).reshape(-1)[0]) == 0:
        time.sleep(3)
    return np.zeros((1,), np.float32)

def f(x):
    z = jax.pure_callback(late, jax.ShapeDtypeStruct((1,), jnp.float32), jax.lax.axis_index("d")[None])
    return jax.lax.all_gather(x + z, "d", tiled=True)

slow = jax.jit(jax.shard_map(f, mesh=mesh, in_specs=P("d"), out_specs=P(), check_vma=False))
x = jax.device_put(jnp.ones((8, 8)), NamedSharding(mesh, P("d")))
total = jax.jit(lambda a: a.sum(0), out_shardings=NamedSharding(mesh, P()))  # an all-reduce per call
total(x).block_until_ready(), slow(jnp.arange(8.0)).block_until_ready()  # compiled
first = slow(jnp.arange(8.0))
later = [total(x) for _ in range(int(sys.argv[1]))]  # dispatched, none waited for
print(float(sum(o[0] for o in later)))
"""


def _in_flight(n: int):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8")
    return subprocess.run([sys.executable, "-c", IN_FLIGHT, str(n)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_our_loops_keep_far_fewer_programs_in_flight_than_the_cpu_clients_limit():
    from ofa_jax.train import loop

    assert loop.MAX_STEPS_IN_FLIGHT <= 4  # the limit is 32 per device
    r = _in_flight(16)  # behind a slow program, 16 in flight complete
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == str(16 * 8.0), r.stderr[-2000:]


@pytest.mark.slow  # ~70 s: waits for XLA's 60 s rendezvous timeout
@in_range
def test_jaxlib_cpu_deadlock_past_32_collective_programs_in_flight_still_exists():
    """A canary: when a jaxlib fixes it, this fails, and the notes about it can go."""
    r = _in_flight(48)
    assert r.returncode == -6 and "Termination timeout" in r.stderr
