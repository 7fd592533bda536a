"""The command-line tools as a user runs them: each command in a fresh ``python -m`` process, spelled
as the README spells it, from the repository root (where ``tools/`` lives). A pytest process has
already imported jax, torch and the rest, so calling ``main()`` in it hides import-order bugs: the
bf16 export crash (numpy knows ``bfloat16`` only once ``ml_dtypes`` is imported) passed every in-process
test. Quick checks here; the README's full walkthrough is ``test_readme_walkthrough.py``."""
import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

from ofa_jax.data.metrics import normalize_benchmark
from ofa_jax.modeldir import flatten, load_model_dir
from ofa_jax.recognizer import BUNDLED_MODEL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = "ofa_jax/models/ofa-ocr-zh-small"  # as the README names it, relative to the repository root
needs_shipped = pytest.mark.skipif(not os.path.isdir(BUNDLED_MODEL), reason="the shipped model is absent")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """What a user's shell has: one CPU device (conftest fakes 8 for the sharding tests), a private
    compilation cache and TFDS dir."""
    base = tmp_path_factory.mktemp("fresh_cli")
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", "")).strip()
    return {**os.environ, "XLA_FLAGS": flags, "OFA_JAX_CACHE_DIR": str(base / "jax_cache"),
            "TFDS_DATA_DIR": str(base / "tfds"), "PYTHONIOENCODING": "utf-8"}


def run(cmd, env, cwd=ROOT, timeout=600):
    """``cmd`` as written in the README (``python -m ...``), run with this interpreter in a new process."""
    words = shlex.split(cmd)
    assert words[:2] == ["python", "-m"], cmd
    p = subprocess.run([sys.executable] + words[1:], cwd=cwd, env=env, capture_output=True, text=True,
                       encoding="utf-8", timeout=timeout)
    assert "Traceback" not in p.stderr, f"{cmd}\n{p.stderr[-3000:]}"
    return p


def one_error_line(p):
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (p.returncode, p.stderr)
    return lines[0]


@pytest.fixture
def hide_torch(tmp_path):
    """A PYTHONPATH entry whose sitecustomize makes ``import torch`` fail, as on a machine without it."""
    d = tmp_path / "no_torch"
    d.mkdir()
    (d / "sitecustomize.py").write_text('import sys\nsys.modules["torch"] = None\n')
    return str(d)


# ---------------------------------------------------------------------------------------------- convert


@pytest.mark.torch
@needs_shipped
def test_shipped_bf16_model_to_pytorch_and_back(env, tmp_path):
    """The shipped model's bfloat16 weights -> a ModelScope dir -> an ofa-jax dir again, bit for bit,
    each way in its own process (it died with ``TypeError: data type 'bfloat16' not understood``)."""
    ms, back = tmp_path / "ms-dir", tmp_path / "back"
    p = run(f"python -m tools.convert_weights --to-pytorch --allow-non-square {SHIPPED} {ms}", env)
    assert p.returncode == 0, p.stderr
    assert (ms / "pytorch_model.bin").is_file()
    assert json.loads((ms / "configuration.json").read_text())["model"]["patch_image_size"] == [32, 320]
    p = run(f"python -m tools.convert_weights {ms} {back}", env)
    assert p.returncode == 0, p.stderr
    a, b = load_model_dir(BUNDLED_MODEL), load_model_dir(str(back))
    assert a.config == b.config
    fa, fb = flatten(a.variables), flatten(b.variables)
    assert fa.keys() == fb.keys()  # (the export adds the image-code weights OCR does not use: b.extras)
    for k in fa:
        assert fa[k].dtype == fb[k].dtype and np.array_equal(fa[k].view(np.uint8), fb[k].view(np.uint8)), k
    assert b.generation["patch_image_size"] == [32, 320]


@needs_shipped
def test_non_square_export_is_refused_before_writing(env, tmp_path):
    """A 32x320 model cannot run in ModelScope's stock OCR pipeline: one line says why and what to do,
    and nothing is written."""
    out = tmp_path / "ms-dir"
    err = one_error_line(run(f"python -m tools.convert_weights --to-pytorch {SHIPPED} {out}", env))
    assert "32x320" in err and "not square" in err and "pipeline(Tasks.ocr_recognition)" in err
    assert "--allow-non-square" in err and "OfaForAllTasks" in err and "--config.data.image_size" in err
    assert not out.exists()


def test_print_table_into_a_reader_that_stops_early(env):
    """``--print-table base | head``: the table (110 kB) outruns the pipe; the command ends quietly."""
    p = subprocess.run(["bash", "-o", "pipefail", "-c", f"{shlex.quote(sys.executable)} -m tools.convert_weights "
                        "--print-table base | head -n 2"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert len(p.stdout.splitlines()) == 2


# ---------------------------------------------------------------------------------------------- decode


@needs_shipped
def test_decode_reads_the_example_without_noise(env, hide_torch):
    """``python -m ofa_jax.decode`` on a machine without torch: the text on stdout, and on stderr only
    the line naming the model (transformers' "PyTorch was not found" advice is not ours to print)."""
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [hide_torch, env.get("PYTHONPATH")]))}
    p = run("python -m ofa_jax.decode --views id examples/line_0.png", env)
    assert p.returncode == 0, p.stderr
    labels = dict(line.split("\t", 1) for line in open(os.path.join(ROOT, "examples", "labels.tsv"),
                                                         encoding="utf-8").read().splitlines())
    path, text = p.stdout.rstrip("\n").split("\t")
    assert path == "examples/line_0.png" and normalize_benchmark(text) == normalize_benchmark(labels["line_0.png"])
    stderr = [line for line in p.stderr.splitlines() if line.strip()]
    assert not any("[transformers]" in line or "PyTorch was not found" in line for line in stderr), p.stderr


# ---------------------------------------------------------------------------------------------- evaluate, data


@pytest.fixture
def folder(tmp_path):
    """path/to/folder: one unsplit set of two example lines (labels.tsv)."""
    d = tmp_path / "folder"
    d.mkdir()
    names = ["line_0.png", "line_5.png"]
    labels = dict(line.split("\t", 1) for line in open(os.path.join(ROOT, "examples", "labels.tsv"),
                                                         encoding="utf-8").read().splitlines())
    for n in names:
        (d / n).write_bytes(open(os.path.join(ROOT, "examples", n), "rb").read())
    (d / "labels.tsv").write_text("".join(f"{n}\t{labels[n]}\n" for n in names), encoding="utf-8")
    return d


def test_evaluate_bogus_split_of_an_unsplit_folder_is_one_line(env, folder):
    err = one_error_line(run(f"python -m ofa_jax.evaluate --data mine=folder:{folder} --split bogus", env))
    assert "'bogus'" in err and "train, val or test" in err


@needs_shipped
def test_evaluate_a_folder(env, folder):
    p = run(f"python -m ofa_jax.evaluate --data mine=folder:{folder} --split test --views id --json", env)
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout.splitlines()[-1])
    assert result["n"] == 2 and result["unreadable"] == 0 and result["data"] == "mine"


def test_data_build_a_folder(env, folder):
    p = run(f"python -m ofa_jax.data.build ocr_folder --folder {folder} --name mydata", env)
    assert p.returncode == 0, p.stderr
    built = json.loads(p.stdout.splitlines()[-1])
    assert built["dataset"] == "ocr_folder/mydata" and built["splits"] == {"train": 2}


# ---------------------------------------------------------------------------------------------- --help


@pytest.mark.parametrize("module", ["ofa_jax.decode", "ofa_jax.evaluate", "ofa_jax.train", "ofa_jax.aot",
                                    "ofa_jax.data.build", "tools.convert_weights"])
def test_help(env, module):
    p = run(f"python -m {module} --help", env)
    assert p.returncode == 0, p.stderr
    if module == "ofa_jax.train":  # absl prints the module docstring first
        assert "python -m ofa_jax.train --config" in p.stdout and "--workdir" in p.stdout
    elif module == "ofa_jax.aot":
        assert "python -m ofa_jax.aot --topology" in p.stdout and "--decode" in p.stdout
    else:
        assert p.stdout.startswith(f"usage: python -m {module} "), p.stdout[:200]
    if module == "ofa_jax.evaluate":
        assert "render:" in p.stdout


# ---------------------------------------------------------------------------------------------- train --export


@pytest.mark.slow
@pytest.mark.torch
@needs_shipped
def test_fine_tune_square_export_and_to_pytorch(env, tmp_path):
    """A few steps from the shipped (bfloat16) model at a square input, ``--export`` as bfloat16, then
    ``--to-pytorch`` as the README's ModelScope section writes it: square, so no flag is needed and
    configuration.json has one side (what the stock pipeline reads)."""
    run_dir, model, ms = tmp_path / "run", tmp_path / "mine", tmp_path / "ms-mine"
    common = (f"--config configs/ocr_base_fudanvi_scene.py --workdir {run_dir} "
              f"--config.init.model_dir={SHIPPED} --config.data.image_height=0 --config.data.image_size=64 "
              "--config.data.train=render:printed,max_chars=4,n=8 --config.data.val= "
              "--config.data.max_target_tokens=8 --config.total_steps=2 --config.batch_size=2 "
              "--config.eval.every=0 --config.ckpt.async_save=False --config.log.tensorboard=False "
              "--config.mesh.num_devices=1")
    p = run(f"python -m ofa_jax.train {common}", env)
    assert p.returncode == 0, p.stderr[-3000:]
    p = run(f"python -m ofa_jax.train {common} --export {model} --export_which last --export_dtype bfloat16", env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((model / "generation.json").read_text())["patch_image_size"] == 64
    p = run(f"python -m tools.convert_weights --to-pytorch {model} {ms}", env)
    assert p.returncode == 0, p.stderr
    assert json.loads((ms / "configuration.json").read_text())["model"]["patch_image_size"] == 64
