"""What ``pip install`` puts into site-packages: the ``ofa_jax`` package (with its assets and the
shipped model) and nothing else. ``tools/`` runs from a clone's root (``python -m tools.convert_weights``);
installed it would be a top-level package named ``tools``, shadowing or shadowed by any other."""
import os
import tomllib

import setuptools

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_only_ofa_jax_is_installed():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        tool = tomllib.load(f)["tool"]["setuptools"]
    find = tool["packages"]["find"]
    finder = setuptools.find_namespace_packages if find.get("namespaces", True) else setuptools.find_packages
    packages = finder(where=os.path.join(ROOT, find.get("where", ["."])[0]), include=find.get("include", ["*"]),
                      exclude=find.get("exclude", ()))
    assert {"ofa_jax", "ofa_jax.data", "ofa_jax.data.builders"} <= set(packages)
    assert [p for p in packages if p.split(".")[0] != "ofa_jax"] == []
    assert "models/*/*" in tool["package-data"]["ofa_jax"]  # the shipped model goes with it


def test_the_shipped_model_card_goes_with_the_model():
    """The model card (README.md in the model dir) is package data too: an installed model says what it is."""
    import fnmatch

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        patterns = tomllib.load(f)["tool"]["setuptools"]["package-data"]["ofa_jax"]
    card = "models/ofa-ocr-zh-small/README.md"
    assert os.path.isfile(os.path.join(ROOT, "ofa_jax", card))
    assert any(fnmatch.fnmatch(card, p) for p in patterns)


def _readme_test_install():
    """The extras of the README's test command (``pip install -e ".[a,b]" && python -m pytest -q``)."""
    import re

    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    cmd = [b for b in re.findall(r"```bash\n(.*?)```", setup, flags=re.S) if "pytest" in b][0]
    return re.match(r'pip install -e "\.\[([\w,-]+)\]" && python -m pytest -q$', cmd.strip()).group(1).split(",")


def test_the_readme_test_command_installs_no_torch():
    """torch's default Linux wheel is the CUDA build (over 3 GB with its nvidia-* wheels): the README's
    test command must not ask for it; the tests that need it skip (the next test)."""
    from packaging.requirements import Requirement

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    extras = _readme_test_install()
    assert {"test", "synth"} <= set(extras)
    reqs = project["dependencies"] + [r for e in extras for r in project["optional-dependencies"][e]]
    names = {Requirement(r).name.lower() for r in reqs}
    assert "pytest" in names and not names & {"torch", "torchvision", "modelscope"}, sorted(names)
    # an extra may name another (ofa-jax[convert]): none of the named ones does
    assert all(Requirement(r).name != "ofa-jax" for r in reqs)


TORCH_MODULES = ["tests/test_convert.py", "tests/test_robustness_convert.py", "tests/test_readme_walkthrough.py",
                 "tests/test_cli_fresh.py"]


def test_without_torch_the_torch_tests_skip_saying_how(tmp_path):
    """In a process where ``import torch`` fails, as after the README's test command: the modules that use
    torch collect, and each test marked ``torch`` is skipped with the CPU wheel's install line as the
    reason (.ci/run collects the whole suite without torch)."""
    import re
    import subprocess
    import sys

    (tmp_path / "sitecustomize.py").write_text('import sys\nsys.modules["torch"] = None\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-m", "torch",
                        *TORCH_MODULES], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert len(skips) >= len(TORCH_MODULES), out[-3000:]
    assert all("pip install torch --index-url https://download.pytorch.org/whl/cpu" in s for s in skips), skips
    summary = [line for line in p.stdout.splitlines() if line.strip()][-1]
    assert re.fullmatch(r"\d+ skipped, \d+ deselected in .*", summary), summary  # nothing ran, nothing broke


def test_a_native_abort_in_a_test_prints_its_reason(tmp_path):
    """The suite once died with ``Fatal Python error: Aborted`` and no word from the C++ code that aborted:
    pytest's per-test fd capture held XLA's message and went down with the process. With the project's
    pytest settings the message reaches the terminal beside faulthandler's Python stack."""
    import subprocess
    import sys

    (tmp_path / "test_abort.py").write_text(
        "import ctypes, os\n\n\ndef test_abort():\n"
        "    os.write(2, b'F0000 native.cc:1] Check failed: the reason\\n')\n    ctypes.CDLL(None).abort()\n")
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
                        os.path.join(ROOT, "pyproject.toml"), "--rootdir", str(tmp_path), str(tmp_path / "test_abort.py")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "Fatal Python error: Aborted" in p.stderr, p.stderr[-2000:]
    assert "Check failed: the reason" in p.stdout + p.stderr, p.stderr[-2000:]
