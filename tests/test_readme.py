"""Every command in README.md and docs/ is checked against the code: each ``python -m`` line's arguments go
through that tool's real argument parser (stopped right after parsing), as do ``python bench/...``
lines; train and aot commands' config files and ``--config.*`` keys exist; ``bash`` scripts and the repo
paths the pages name exist, and their links resolve. ```` ```bash ```` blocks are run: the two set-up
commands by ``.ci/run`` (install, decode the shipped examples, run the tests), all the others by
``test_readme_walkthrough.py``. ```` ```sh ```` blocks (multi-host, long runs, the results pages' reproduce
commands) are checked here only. The results pages, the shipped model's card and the offline tool's
README are checked the same way."""
import argparse
import importlib
import os
import re
import runpy
import shlex
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
# The product pages, in the order the walkthrough runs their commands (convert before the decodes that
# read its output, fine-tune before serving its export).
DOC_PAGES = ["decode.md", "convert.md", "fine-tune.md", "accelerators.md", "data.md", "faults.md", "security.md",
             "performance.md"]
PAGES = [README] + [os.path.join(ROOT, "docs", p) for p in DOC_PAGES]
# docs/ pages whose commands are checked but not run here: pages.md's need the detector's conversion
# extras (its own command runs in tests/test_pages*.py and tests/test_detector.py).
DOCS_NOT_RUN = ["pages.md"]
# Pages whose commands are checked but not run.
REFERENCE_PAGES = [os.path.join(ROOT, "docs", p) for p in DOCS_NOT_RUN] + [os.path.join(ROOT, *p.split("/")) for p in (
    "bench/RESULTS.md", "bench/RESULTS_train.md", "ofa_jax/models/ofa-ocr-zh-small/README.md",
    "tools/offline_gpu_run/README.md")]
ALL_PAGES = PAGES + REFERENCE_PAGES


def _read(path):
    return open(path, encoding="utf-8").read()


def page_commands(path, langs=("bash",)):
    cmds = []
    for lang, block in re.findall(r"```(\w*)\n(.*?)```", _read(path), flags=re.S):
        if lang not in langs:
            continue
        block = re.sub(r"\\\n\s*", " ", block)
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if not line or line.startswith("#"):
                continue
            cmds.extend(c.strip() for c in line.split("&&"))
    return cmds


def readme_commands(langs=("bash",), pages=PAGES):
    """The commands of ``pages`` in page order (by default the ```bash ones: what the walkthrough runs)."""
    return [c for p in pages for c in page_commands(p, langs)]


def checked_commands():
    return readme_commands(("bash", "sh"), ALL_PAGES)


def _words(cmd):
    words = [w.strip("[]") for w in shlex.split(cmd)]
    words = [w for w in words if w]
    while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value prefixes
        words.pop(0)
    if words and words[0] == "sudo":
        words.pop(0)
    return words


def python_m_commands():
    out = []
    for cmd in checked_commands():
        words = _words(cmd)
        if len(words) >= 3 and words[0] == "python" and words[1] == "-m":
            out.append((words[2], words[3:]))
    return out


def python_script_commands():
    return [(w[1], w[2:]) for w in map(_words, checked_commands()) if len(w) >= 2 and w[0] == "python"
            and w[1].endswith(".py")]


def test_pages_are_all_checked():
    """Every page in docs/ is in DOC_PAGES or DOCS_NOT_RUN (so its commands are checked), and the README
    links to each."""
    assert sorted(os.listdir(os.path.join(ROOT, "docs"))) == sorted(DOC_PAGES + DOCS_NOT_RUN)
    readme = _read(README)
    for page in DOC_PAGES + DOCS_NOT_RUN:
        assert f"(docs/{page})" in readme, page


def test_readme_has_the_two_setup_commands():
    """Exactly two set-up commands: install + decode the shipped samples, install + run the tests
    (the one `.ci/run` runs)."""
    text = _read(README)
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    blocks = [b.strip() for b in re.findall(r"```bash\n(.*?)```", setup, flags=re.S)]
    assert len(blocks) == 2
    assert blocks[0].startswith("pip install -e . && python -m ofa_jax.decode ") and blocks[0].endswith(" examples/")
    assert blocks[1] == 'pip install -e ".[test,synth]" && python -m pytest -q'
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert "\npython -m pytest -q\n" in ci and "\n" + blocks[1].split(" && ")[0] + "\n" in ci  # as written
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
    mod = importlib.import_module(module)
    if not hasattr(mod, "main"):  # a package run as `python -m PKG`: its __main__
        mod = importlib.import_module(module + ".__main__")
    with pytest.raises(_Parsed):
        mod.main(args)


@pytest.mark.parametrize("script,args", python_script_commands(), ids=lambda x: x if isinstance(x, str) else " ".join(x)[:60])
def test_script_command_parses(script, args, monkeypatch):
    """``python bench/X.py ...``: the script's own argparse accepts the arguments (run up to parsing)."""
    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, a=None, namespace=None):
        real(self, a, namespace)
        raise _Parsed()

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", [script, *args])
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(_Parsed):
        runpy.run_path(os.path.join(ROOT, script), run_name="__main__")


def test_bash_scripts_exist():
    scripts = [w[1] for w in map(_words, checked_commands()) if len(w) >= 2 and w[0] == "bash"]
    assert scripts
    for path in scripts:
        assert os.path.isfile(os.path.join(ROOT, path)), path


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
    known = {"--config", "--workdir", "--export", "--export_which", "--export_dtype", "--distributed",
             "--coordinator_address", "--num_processes", "--process_id"}
    assert _check_absl_args(args, known, ("--distributed",)) is not None


@pytest.mark.parametrize("args", [a for m, a in python_m_commands() if m == "ofa_jax.aot"],
                         ids=lambda a: " ".join(a)[:60])
def test_aot_command_flags_exist(args):
    """``ofa_jax.aot`` parses with absl (train's --config file and keys, its own flags)."""
    src = open(os.path.join(ROOT, "ofa_jax", "aot.py"), encoding="utf-8").read()
    known = {"--" + n for n in re.findall(r'DEFINE_\w+\(\s*"(\w+)"', src)}
    _check_absl_args(args, known, ("--json", "--scan", "--compile_profile"))
    assert "--topology" in args


@pytest.mark.parametrize("page", ALL_PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_named_repo_paths_exist(page):
    text = _read(page)
    for path in set(re.findall(r"(?<![\w/.~-])((?:configs|notebooks|examples|bench|tools|ofa_jax|tests|docs)/[\w./*-]*\w)",
                               text)):
        if "*" in path or path.startswith("ofa_jax/models/"):
            continue
        assert os.path.exists(os.path.join(ROOT, path)), path


def _anchor(heading):
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", ALL_PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_links_resolve(page):
    """Relative links point at files that exist, and #anchors at headings they have."""
    for target in re.findall(r"\]\(([^)\s]+)\)", _read(page)):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        assert os.path.exists(dest), target
        if anchor:
            headings = re.findall(r"^#+ (.*)$", _read(dest), flags=re.M)
            assert anchor in {_anchor(h) for h in headings}, target


def test_modelscope_serving_section():
    """The section on serving a model fine-tuned here: the export command (run by the walkthrough),
    the square-only rule of the stock pipeline, the flag for line-shaped models and the reference check."""
    text = _read(os.path.join(ROOT, "docs", "fine-tune.md"))
    section = text.split("## Serve a model fine-tuned here with ModelScope\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert block.strip().startswith("python -m tools.convert_weights --to-pytorch models/mine ")
    assert "pipeline(Tasks.ocr_recognition" in section and "--allow-non-square" in section
    assert "OfaForAllTasks" in section and "tools/reference/check_stock_pipeline.py" in section


@pytest.mark.parametrize("page", [README, os.path.join(ROOT, "docs", "decode.md")], ids=os.path.basename)
def test_examples_lead_with_the_shipped_model(page):
    """A newcomer has the shipped model, not models/ofa-ocr-base: the first decode command and the
    first Python call use it (no --model, no path); converted checkpoints come after."""
    text = _read(page)
    section = text.split("## Recognise text\n", 1)[1].split("\n## ", 1)[0]
    decodes = [c for c in page_commands(page, ("bash", "sh")) if c.startswith("python -m ofa_jax.decode") and c in section]
    assert decodes and "--model" not in decodes[0]
    assert any("--model models/ofa-ocr-base" in c for c in decodes[1:])
    python = re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]
    assert re.findall(r"from_pretrained\((.*?)\)", python)[0] == ""
