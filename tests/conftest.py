import os
import sys

# 8 fake CPU devices for the sharding tests; must be set before JAX is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

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


@pytest.fixture(scope="session")
def fixtures_dir():
    return FIXTURES
