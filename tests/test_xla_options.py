"""XLA:CPU compiler options: YNNPACK library fusions kept to dots and convolutions, in our programs
(``ofa_jax.xla_options``) and, once ofa_jax is imported, in every program of the process (jaxlib
0.10.2's YNNPACK reduction fusions crash on worker threads for some shapes: ofa_jax/__init__.py)."""
import json
import os
import subprocess
import sys
from importlib.metadata import version

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JAXLIB = tuple(int(x) for x in version("jaxlib").split(".")[:3])
in_range = pytest.mark.skipif(not (0, 10, 1) <= JAXLIB < (0, 12, 0), reason="a jaxlib without YNNPACK fusions")

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
    assert after["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type="
    assert not after["reduce"] and not after["dot"]
