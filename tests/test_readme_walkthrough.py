"""The commands of the README and docs/ (```bash blocks), run as written, in page order
(``test_readme.PAGES``), in a scratch directory that holds the files they name: random-weight stand-ins
for the released checkpoints (a ModelScope dir and a fairseq ``.pt`` of the micro preset, so decoding
with them prints arbitrary text; the first decode uses the shipped model), the shipped example images,
and a label folder with train/val/test splits. Training commands get flags that make them small (2 steps of 2 images at
64x64); the two set-up commands (``pip install ...``, ``pytest``) are what ``.ci/run`` runs.
``test_readme.py`` checks the arguments of every command against the parsers; this runs them."""
import json
import os
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ofa_jax.data.metrics import normalize_benchmark
from test_convert import _fairseq_checkpoint, _modelscope_dir
from test_readme import readme_commands

pytestmark = pytest.mark.torch  # the ModelScope and fairseq checkpoints it converts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETUP = ("pip install", "python -m pytest")
# `ofa_jax.aot` compiles for a TPU topology (needs libtpu): the README's base model at 480x480 shrunk to
# micro at 64x64, absl taking the last value of a repeated flag.
SMALL_AOT = ["--config.model.preset=micro", "--config.data.image_size=64", "--config.data.max_target_tokens=8",
             "--config.batch_size=16", "--decode=micro", "--image_size=64", "--batch=16", "--max_len=8"]
SMALL_TRAIN = ["--config.total_steps=2", "--config.batch_size=2", "--config.data.image_size=64",
               "--config.data.max_target_tokens=8", "--config.eval.every=2", "--config.eval.max_examples=2",
               "--config.eval.batch_size=2", "--config.eval.beam_size=1", "--config.eval.max_len=4",
               "--config.ckpt.async_save=False", "--config.log.tensorboard=False", "--config.mesh.num_devices=1"]


def _label_folder(root):
    """path/to/folder: train/ val/ test/ with labels.jsonl, lines rendered in Pillow's default font."""
    from ofa_jax.data import render

    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        d = root / split
        d.mkdir(parents=True)
        rows = []
        for i in range(n):
            text = f"{split} {i}"
            img = render.render_line(text, render.PIL_DEFAULT, np.random.default_rng(i))
            img.save(d / f"{i}.png")
            rows.append(json.dumps({"file": f"{i}.png", "text": text}))
        (d / "labels.jsonl").write_text("\n".join(rows) + "\n")


@pytest.fixture
def scratch(tmp_path):
    os.symlink(os.path.join(ROOT, "configs"), tmp_path / "configs")
    shutil.copytree(os.path.join(ROOT, "examples"), tmp_path / "examples")
    ms_parent = tmp_path / "path" / "to"
    ms_parent.mkdir(parents=True)
    ms, sd = _modelscope_dir(ms_parent)
    ms.rename(ms_parent / "ofa_ocr-recognition_general_base_zh")
    _fairseq_checkpoint(tmp_path / "ocr_general_clean.pt", sd)
    shutil.copy(ms_parent / "ofa_ocr-recognition_general_base_zh" / "vocab.txt", tmp_path / "vocab.txt")
    pngs = sorted(p for p in os.listdir(tmp_path / "examples") if p.endswith((".png", ".jpg")))
    Image.open(tmp_path / "examples" / pngs[0]).save(tmp_path / "line1.png")
    Image.open(tmp_path / "examples" / pngs[1]).convert("RGB").save(tmp_path / "line2.jpg")
    for d in ("dir_of_images", "images"):
        (tmp_path / d).mkdir()
        for p in pngs[:3]:
            shutil.copy(tmp_path / "examples" / p, tmp_path / d / p)
    _label_folder(ms_parent / "folder")
    return tmp_path


def test_readme_commands_run_as_written(scratch):
    cmds = [c for c in readme_commands() if not c.startswith(SETUP)]
    # the decodes with --model (docs/decode.md) read the model a conversion (docs/convert.md) writes: convert first
    cmds.sort(key=lambda c: not c.startswith("python -m tools.convert_weights path/to"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
           "TFDS_DATA_DIR": str(scratch / "tfds"), "OFA_JAX_CACHE_DIR": str(scratch / "jax_cache")}
    import importlib.util

    if importlib.util.find_spec("libtpu") is None:  # CI installs it (.ci/run); tests/test_aot.py says why
        cmds = [c for c in cmds if not c.startswith("python -m ofa_jax.aot")]
    ran = []
    for cmd in cmds:
        words = [w.strip("[]") for w in shlex.split(cmd)]
        words = [sys.executable if w == "python" else w for w in words if w]
        if words[2] == "ofa_jax.train" and "--export" not in words:
            words += SMALL_TRAIN
        if words[2] == "ofa_jax.aot":
            words += [a for a in SMALL_AOT if "--config" in words or not a.startswith("--config")]
        p = subprocess.run(words, cwd=scratch, env=env, capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, f"{cmd}\nexit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
        ran.append((cmd, p))
    outputs = {cmd: p.stdout for cmd, p in ran}
    assert len(ran) == len(cmds) >= 11
    # what the commands left behind
    # the first set-up command's decode: the shipped model reads the shipped examples (the first six held-out
    # test lines, unselected; it misreads one glyph of one of them), in order, and says which model it is
    first = "python -m ofa_jax.decode examples/"
    decoded = dict(line.split("\t", 1) for line in outputs[first].splitlines())
    labels = dict(line.split("\t", 1) for line in (scratch / "examples" / "labels.tsv").read_text().splitlines())
    assert list(decoded) == [os.path.join("examples", n) for n in sorted(labels)]
    assert "using the bundled model ofa-ocr-zh-small" in dict(ran)[first].stderr
    right = sum(normalize_benchmark(decoded[os.path.join("examples", n)]) == normalize_benchmark(t)
                for n, t in labels.items())
    assert right >= len(labels) - 1, outputs[first]
    js = outputs["python -m ofa_jax.decode --json --beam 5 --max-len 64 --batch-size 16 images/"].splitlines()
    assert len(js) == 3 and all("text" in json.loads(line) for line in js)
    assert (scratch / "out" / "ms-dir" / "model.safetensors").exists()
    assert (scratch / "models" / "mine" / "params.safetensors").exists()
    assert json.loads((scratch / "models" / "mine" / "generation.json").read_text())["patch_image_size"] == 64
    ev = [c for c in outputs if c.startswith("python -m ofa_jax.evaluate")][0]
    assert "mine" in outputs[ev]
