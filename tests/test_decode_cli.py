"""python -m ofa_jax.decode and the Recognizer API, on the reference-checked micro model."""
import json
import os

import jax
import numpy as np
import pytest

from ofa_jax.decode import main as decode_main
from ofa_jax.modeldir import save_model_dir
from ofa_jax.recognizer import Recognizer
from tools.convert_weights import state_dict_to_variables
from tools.convert_weights.convert import BUNDLED_VOCAB

from reference_weights import FIXTURES, decode_case


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    sd, data, meta, cfg = decode_case()
    variables, extras = state_dict_to_variables(sd, cfg)
    d = tmp_path_factory.mktemp("model")
    save_model_dir(str(d), cfg, variables, BUNDLED_VOCAB, generation=meta["settings"]["beam5"], extras=extras)
    images = [os.path.join(FIXTURES, "decode_images", n) for n in meta["images"]]
    return str(d), images, list(data["beam5/strings"]), list(data["beam1/strings"])


def test_cli_matches_modelscope_pipeline_and_survives_bad_input(model_dir, tmp_path, capsys):
    d, images, expected, _ = model_dir
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    paths = [images[0], str(bad), images[1], str(tmp_path / "missing.jpg"), images[2], images[3]]
    rc = decode_main(["--model", d, "--batch-size", "2", "--json"] + paths)
    out, err = capsys.readouterr()
    assert rc == 1
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert [r["path"] for r in rows] == paths
    assert [r.get("text") for r in rows if "error" not in r] == expected
    assert "error" in rows[1] and "error" in rows[3]
    err_lines = [l for l in err.splitlines() if l.startswith("error: ")]
    assert len(err_lines) == 2 and "Traceback" not in err
    assert "broken.png" in err_lines[0] and "missing.jpg" in err_lines[1]


def test_cli_tsv_greedy_and_directory(model_dir, capsys):
    d, images, _, expected_greedy = model_dir
    rc = decode_main(["--model", d, "--greedy", os.path.dirname(images[0])])
    out, _ = capsys.readouterr()
    assert rc == 0
    lines = out.strip().split("\n")
    assert [l.split("\t")[0] for l in lines] == images  # directory expanded, sorted
    assert [l.split("\t", 1)[1] for l in lines] == expected_greedy


def test_cli_missing_model_dir_is_one_line(tmp_path, capsys):
    rc = decode_main(["--model", str(tmp_path / "nope"), "x.png"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: model dir not found") and "\n" not in err


def test_recognizer_api_accepts_arrays_and_bytes(model_dir):
    d, images, expected, _ = model_dir
    r = Recognizer.from_pretrained(d, batch_size=4)
    from PIL import Image
    inputs = [open(images[0], "rb").read(), np.asarray(Image.open(images[1]).convert("RGB")), Image.open(images[2])]
    results = r(inputs)
    assert [x.text for x in results] == expected[:3]
    assert all(np.isfinite(x.score) for x in results)
    single = r(images[3])
    assert single.text == expected[3]


def test_sharded_decode_equals_single_device(model_dir):
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 (fake) devices")
    d, images, expected, _ = model_dir
    one = Recognizer.from_pretrained(d, batch_size=8, devices=jax.devices()[:1])
    eight = Recognizer.from_pretrained(d, batch_size=8, devices=jax.devices()[:8])
    inputs = images * 3  # 12 images: one full and one partial batch
    a, b = one(inputs), eight(inputs)
    assert [x.text for x in a] == [x.text for x in b] == expected * 3
    np.testing.assert_allclose([x.score for x in a], [x.score for x in b], atol=1e-5)
