"""Every command in README.md is checked against the code: each ``python -m`` line's arguments go
through that tool's real argument parser (stopped right after parsing), train commands' config files
and ``--config.*`` keys exist, and the repo paths they name exist. The two set-up commands are run
as written by ``.ci/run`` (install, decode the shipped examples, run the tests); all the others by
``test_readme_walkthrough.py``."""
import argparse
import importlib
import os
import re
import shlex
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def readme_commands():
    text = open(README, encoding="utf-8").read()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        block = re.sub(r"\\\n\s*", " ", block)
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if not line or line.startswith("#"):
                continue
            cmds.extend(c.strip() for c in line.split("&&"))
    return cmds


def python_m_commands():
    out = []
    for cmd in readme_commands():
        words = [w.strip("[]") for w in shlex.split(cmd)]
        words = [w for w in words if w]
        while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value prefixes
            words.pop(0)
        if len(words) >= 3 and words[0] == "python" and words[1] == "-m":
            out.append((words[2], words[3:]))
    return out


def test_readme_has_the_two_setup_commands():
    """Exactly two set-up commands: install + decode the shipped samples, install + run the tests
    (the one `.ci/run` runs)."""
    text = open(README, encoding="utf-8").read()
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    blocks = [b.strip() for b in re.findall(r"```bash\n(.*?)```", setup, flags=re.S)]
    assert len(blocks) == 2
    assert blocks[0].startswith("pip install -e . && python -m ofa_jax.decode ") and blocks[0].endswith(" examples/")
    assert blocks[1] == 'pip install -e ".[test,convert,synth]" && python -m pytest -q'
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert "python -m pytest -q" in ci and '-e ".[test,convert,synth]"' in ci
    assert "\n" + blocks[0] + "\n" in ci  # the first, as written


class _Parsed(Exception):
    pass


@pytest.mark.parametrize("module,args", [c for c in python_m_commands() if c[0] not in ("ofa_jax.train", "ofa_jax.aot", "pytest")],
                         ids=lambda x: x if isinstance(x, str) else " ".join(x)[:60])
def test_command_parses(module, args, monkeypatch):
    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, a=None, namespace=None):
        real(self, a, namespace)  # exits with status 2 on an unknown option or a missing argument
        raise _Parsed()

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.chdir(ROOT)
    mod = importlib.import_module(module if module != "tools.convert_weights" else "tools.convert_weights.__main__")
    with pytest.raises(_Parsed):
        mod.main(args)


def _check_absl_args(args, known, switches):
    """absl-style arguments: ``--config FILE`` exists, each ``--config.a.b`` is a field of that config,
    every other flag is in ``known`` (``switches`` take no value). Returns the config."""
    sys.path.insert(0, os.path.join(ROOT, "configs"))
    cfg = None
    it = iter(args)
    for a in it:
        key, eq, val = a.partition("=")
        if key == "--config":
            path = val if eq else next(it)
            assert os.path.isfile(os.path.join(ROOT, path)), path
            cfg = importlib.import_module(os.path.splitext(os.path.basename(path))[0]).get_config()
        elif key.startswith("--config."):
            node = cfg
            for part in key[len("--config."):].split("."):
                assert part in node, f"{key}: no such config field"
                node = node[part]
        else:
            assert key in known, f"unknown flag {key}"
            if not eq and key not in switches:
                next(it)
    return cfg


@pytest.mark.parametrize("args", [a for m, a in python_m_commands() if m == "ofa_jax.train"],
                         ids=lambda a: " ".join(a)[:60])
def test_train_command_config_and_keys_exist(args):
    known = {"--config", "--workdir", "--export", "--export_which", "--distributed", "--coordinator_address",
             "--num_processes", "--process_id"}
    assert _check_absl_args(args, known, ("--distributed",)) is not None


@pytest.mark.parametrize("args", [a for m, a in python_m_commands() if m == "ofa_jax.aot"],
                         ids=lambda a: " ".join(a)[:60])
def test_aot_command_flags_exist(args):
    """``ofa_jax.aot`` parses with absl (train's --config file and keys, its own flags)."""
    src = open(os.path.join(ROOT, "ofa_jax", "aot.py"), encoding="utf-8").read()
    known = {"--" + n for n in re.findall(r'DEFINE_\w+\(\s*"(\w+)"', src)}
    _check_absl_args(args, known, ("--json", "--scan"))
    assert "--topology" in args


def test_named_repo_paths_exist():
    text = open(README, encoding="utf-8").read()
    for path in set(re.findall(r"(?<![\w/.~-])((?:configs|notebooks|examples|bench|tools|ofa_jax)/[\w./-]*\w)", text)):
        if "*" in path or path.startswith("ofa_jax/models/"):
            continue
        assert os.path.exists(os.path.join(ROOT, path)), path


def test_modelscope_serving_section():
    """The section on serving a model fine-tuned here: the export command (run by the walkthrough),
    the square-only rule of the stock pipeline, the flag for line-shaped models and the reference check."""
    text = open(README, encoding="utf-8").read()
    section = text.split("## Serve a model fine-tuned here with ModelScope\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert block.strip().startswith("python -m tools.convert_weights --to-pytorch models/mine ")
    assert "pipeline(Tasks.ocr_recognition" in section and "--allow-non-square" in section
    assert "OfaForAllTasks" in section and "tools/reference/check_stock_pipeline.py" in section


def test_examples_lead_with_the_shipped_model():
    """A newcomer has the shipped model, not models/ofa-ocr-base: the first decode command and the
    first Python call use it (no --model, no path); converted checkpoints come after."""
    text = open(README, encoding="utf-8").read()
    section = text.split("## Recognise text\n", 1)[1].split("\n## ", 1)[0]
    decodes = [c for c in readme_commands() if c.startswith("python -m ofa_jax.decode") and c in section]
    assert decodes and "--model" not in decodes[0]
    assert any("--model models/ofa-ocr-base" in c for c in decodes[1:])
    (python,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert re.findall(r"from_pretrained\((.*?)\)", python)[0] == ""
