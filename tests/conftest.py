import atexit
import importlib.util
import os
import shutil
import sys
import tempfile

# CPU only, also where libtpu is installed (CI installs it for tests/test_aot.py, which compiles for
# TPU topologies without a TPU): otherwise every JAX process probes for a TPU and logs warnings.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# 8 fake CPU devices for the sharding tests; must be set before JAX is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# One persistent compilation cache for this session, inherited by the training subprocesses: a killed
# run and its resumption compile what the uninterrupted run compiled (130 s -> 60 s for the kill -9
# test on 2 cores). Fresh each session, so no test depends on what an earlier one left. The Recognizer
# and the CLIs point JAX at $OFA_JAX_CACHE_DIR, else at the user's ~/.cache/ofa_jax/jax_cache, which
# every other test session and ofa-jax command of that user reads and writes too: the session's cache.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="ofa_jax_tests_jax_cache_")
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.25")
os.environ.setdefault("OFA_JAX_CACHE_DIR", os.environ["JAX_COMPILATION_CACHE_DIR"])

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
if ROOT not in sys.path:  # `tools` is used from the repository root
    sys.path.insert(0, ROOT)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_configure(config):
    if config.getoption("--runslow"):
        config.option.markexpr = ""


# The README's test command installs no torch (its CUDA build is over 3 GB): tests that build or read
# PyTorch checkpoints are marked `torch` and skip, saying how to get a CPU build.
NEEDS_TORCH = "needs torch, which the test extras leave out: pip install torch --index-url https://download.pytorch.org/whl/cpu"


def pytest_collection_modifyitems(config, items):
    if importlib.util.find_spec("torch") is not None:
        return
    for item in items:
        if item.get_closest_marker("torch"):
            item.add_marker(pytest.mark.skip(reason=NEEDS_TORCH))


@pytest.fixture(scope="session")
def fixtures_dir():
    return FIXTURES
