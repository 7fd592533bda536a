"""python -m ofa_jax.evaluate: table / JSON / predictions file, on a tiny random model and generated data."""
import json
import math
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))

from ocr_data_helpers import encoded_image, sample_records, write_label_folder  # noqa: E402

from ofa_jax import evaluate  # noqa: E402
from ofa_jax.data.metrics import compute_metrics  # noqa: E402
from ofa_jax.data.records import write_fudan_lmdb  # noqa: E402
from ofa_jax.recognizer import Result  # noqa: E402

BROKEN = b"\x89PNG\r\n\x1a\n not really an image"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import flax.linen as nn

    import ofa_jax
    from ofa_jax.config import PRESETS
    from ofa_jax.model import init_params
    from ofa_jax.modeldir import save_model_dir

    cfg = PRESETS["micro"]
    variables = nn.meta.unbox(init_params(cfg))
    vocab = os.path.join(os.path.dirname(os.path.abspath(ofa_jax.__file__)), "assets", "vocab_zh.txt")
    d = tmp_path_factory.mktemp("model")
    # 64x64 canvas keeps the test fast; the resize/pad rule is the same as at 480.
    save_model_dir(str(d), cfg, variables, vocab,
                   generation={"beam_size": 2, "max_len_b": 4, "patch_image_size": 64})
    return str(d)


@pytest.fixture
def datasets(tmp_path):
    folder_recs = sample_records(5)
    write_label_folder(tmp_path / "folder", folder_recs)
    lmdb_recs = sample_records(4, offset=100)
    lmdb_recs.insert(2, (BROKEN, "坏图"))
    write_fudan_lmdb(tmp_path / "lmdb", lmdb_recs, map_size=1 << 24)
    return {"folder": (f"folder:{tmp_path / 'folder'}", folder_recs),
            "lmdb": (f"lmdb:{tmp_path / 'lmdb'}", lmdb_recs)}


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_cli_two_datasets_table_json_and_predictions(model_dir, datasets, tmp_path, capsys):
    from ofa_jax.recognizer import Recognizer

    (fspec, frecs), (lspec, lrecs) = datasets["folder"], datasets["lmdb"]
    out_file = tmp_path / "preds.jsonl"
    rc = evaluate.main(["--model", model_dir, "--data", f"hand={fspec}", "--data", lspec, "--batch-size", "2",
                        "--json", "--output", str(out_file)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    lines = out.strip().split("\n")

    # table: header, one row per dataset, a pooled row, the normalisation
    assert lines[0].split() == ["data", "split", "N", "ACC", "%", "NED", "unread"]
    rows = {l.split()[0]: l.split() for l in lines[2:-2]}
    assert rows["hand"][1:3] == ["test", "5"] and rows["hand"][-1] == "0"
    assert rows[lspec][1:3] == ["test", "5"] and rows[lspec][-1] == "1"
    assert rows["all"][1] == "10" and rows["all"][-1] == "1"
    assert lines[-2].startswith("normalisation: benchmark")

    # the unreadable image is reported on stderr, not as a traceback
    assert "1 of 5 lines unreadable" in err and "Traceback" not in err

    # predictions file: every line, in order, with ground truth, prediction and correctness
    preds = read_jsonl(out_file)
    assert len(preds) == 10
    assert [p["data"] for p in preds] == ["hand"] * 5 + [lspec] * 5
    assert [p["gt"] for p in preds] == [t for _, t in frecs] + [t for _, t in lrecs]
    assert [p["id"] for p in preds[5:]] == [f"{k:09d}" for k in range(1, 6)]
    bad = preds[7]
    assert bad["pred"] is None and bad["correct"] is False and "not a readable image" in bad["error"]
    assert all(isinstance(p["pred"], str) and "error" not in p for i, p in enumerate(preds) if i != 7)

    # same predictions as the Recognizer API on the same bytes
    rec = Recognizer.from_pretrained(model_dir, batch_size=2)
    direct = rec([img for img, _ in frecs + lrecs])
    assert [r.text for r in direct] == [p["pred"] for p in preds]
    for r, p in zip(direct, preds):
        if r.ok:
            assert p["score"] == pytest.approx(r.score, abs=1e-5)
        else:
            assert p["error"] == r.error

    # JSON summary = metrics of those predictions (the unreadable line counts as wrong, distance 1)
    summary = json.loads(lines[-1])
    ok = [p for p in preds if p["pred"] is not None]
    m = compute_metrics([p["pred"] for p in ok], [p["gt"] for p in ok])
    assert summary["n"] == 10 and summary["unreadable"] == 1 and summary["normalization"] == "benchmark"
    assert summary["acc"] == pytest.approx(m["acc"] * 9 / 10)
    assert summary["ned"] == pytest.approx(1 - ((1 - m["ned"]) * 9 + 1) / 10)
    assert [d["data"] for d in summary["datasets"]] == ["hand", lspec]
    assert [d["n"] for d in summary["datasets"]] == [5, 5]
    assert [d["unreadable"] for d in summary["datasets"]] == [0, 1]
    assert [p["correct"] for p in preds] == [
        compute_metrics([p["pred"]], [p["gt"]])["acc"] == 1.0 if p["pred"] is not None else False for p in preds]


class FakeRecognizer:
    """Maps image bytes to known strings; BROKEN bytes come back as an error like the real one."""

    batch_size = 2

    def __init__(self, table):
        self.table = table
        self.calls = []

    def __call__(self, images):
        self.calls.append(len(images))
        return [Result(text=None, score=None, error="<bytes>: not a readable image") if img == BROKEN
                else Result(text=self.table[img], score=-0.5) for img in images]


# (ground truth, prediction): hand-checked under both normalisations
CASES = [
    ("你好世界", "你好世界"),      # exact
    ("ＡＢＣ", "abc"),            # full-width + case: same under both
    ("繁體", "繁体"),             # traditional -> simplified: same under both
    ("hello world", "helloworld"),  # benchmark keeps spaces: 1 edit of 11; ofa removes them: same
    ("abcd", "abxd"),             # 1 edit of 4 under both
    ("坏图", None),               # unreadable: wrong, distance 1
]


@pytest.fixture
def fake_setup(tmp_path, monkeypatch):
    recs, table = [], {}
    for i, (gt, pred) in enumerate(CASES):
        img = BROKEN if pred is None else encoded_image(i)
        table[img] = pred
        recs.append((img, gt))
    write_label_folder(tmp_path / "hand", recs)
    fake = FakeRecognizer(table)
    monkeypatch.setattr(evaluate, "load_recognizer", lambda args: fake)
    return f"folder:{tmp_path / 'hand'}", fake


@pytest.mark.parametrize("norm, acc, ned", [
    ("benchmark", 3 / 6, 1 - (1 / 11 + 1 / 4 + 1) / 6),
    ("ofa", 4 / 6, 1 - (1 / 4 + 1) / 6),
])
def test_metrics_come_from_the_predictions(fake_setup, tmp_path, capsys, norm, acc, ned):
    spec, fake = fake_setup
    out_file = tmp_path / "p.jsonl"
    rc = evaluate.main(["--data", spec, "--json", "--normalization", norm, "--output", str(out_file)])
    out, err = capsys.readouterr()
    assert rc == 0
    s = json.loads(out.strip().split("\n")[-1])
    assert s["n"] == 6 and s["unreadable"] == 1 and s["normalization"] == norm
    assert s["acc"] == pytest.approx(acc) and s["ned"] == pytest.approx(ned)
    assert f"{100 * acc:.2f}" in out and f"{ned:.4f}" in out and f"normalisation: {norm}" in out
    assert fake.calls == [2, 2, 2]  # streamed in recognizer-sized batches
    preds = read_jsonl(out_file)
    assert [(p["gt"], p["pred"]) for p in preds] == CASES
    assert sum(p["correct"] for p in preds) == round(acc * 6)


def test_limit_and_broken_lmdb_record(fake_setup, tmp_path, capsys, monkeypatch):
    spec, fake = fake_setup
    rc = evaluate.main(["--data", spec, "--limit", "3", "--json"])
    s = json.loads(capsys.readouterr().out.strip().split("\n")[-1])
    assert rc == 0 and s["n"] == 3 and s["acc"] == 1.0 and s["ned"] == 1.0

    # an LMDB claiming more samples than it holds: the missing record is wrong and reported
    import lmdb

    path = tmp_path / "short"
    img = encoded_image(0)
    write_fudan_lmdb(path, [(img, "你好世界")], map_size=1 << 24)
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"num-samples", b"2")
    env.close()
    rc = evaluate.main(["--data", f"lmdb:{path}", "--json"])
    out, err = capsys.readouterr()
    s = json.loads(out.strip().split("\n")[-1])
    assert rc == 0 and s["n"] == 2 and s["unreadable"] == 1 and s["acc"] == 0.5
    assert "record 1: cannot be read" in err


def test_bad_arguments_are_one_line_errors(model_dir, tmp_path, capsys):
    assert evaluate.main(["--model", model_dir, "--data", "nope:x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --data nope:x: ") and "\n" not in err
    assert evaluate.main(["--model", model_dir, "--data", f"lmdb:{tmp_path}"]) == 2
    assert "no data.mdb" in capsys.readouterr().err
    write_label_folder(tmp_path / "f", sample_records(1))
    assert evaluate.main(["--model", str(tmp_path / "missing"), "--data", f"folder:{tmp_path / 'f'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: model dir not found") and "\n" not in err


def test_parse_data_arg():
    assert evaluate.parse_data_arg("scene=lmdb:a/b") == ("scene", "lmdb:a/b")
    assert evaluate.parse_data_arg("lmdb:a=b") == ("lmdb:a=b", "lmdb:a=b")
    assert evaluate.parse_data_arg("folder:x") == ("folder:x", "folder:x")
    assert math.isnan(evaluate.LineMetrics().result()["acc"])


def test_rapidocr_engine_on_the_same_data(tmp_path, capsys):
    """The baseline goes through the same sources, metrics and error accounting as our model."""
    pytest.importorskip("rapidocr")
    import numpy as np
    from ofa_jax.data.render import encode_image, find_cjk_fonts, render_line

    font, rng = find_cjk_fonts()[0], np.random.default_rng(0)
    lines = ["今天天气很好", "我们去公园", "价格17元", "中国人民"]
    recs = [(encode_image(render_line(t, font, rng), "PNG"), t) for t in lines] + [(BROKEN, "坏图")]
    write_label_folder(tmp_path / "lines", recs)
    rc = evaluate.main(["--engine", "rapidocr", "--data", f"folder:{tmp_path / 'lines'}", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    summary = json.loads(out.strip().split("\n")[-1])
    assert summary["n"] == 5 and summary["unreadable"] == 1
    assert summary["acc"] >= 0.6  # clean rendered lines: PP-OCR reads (nearly) all 4 readable ones


def test_rapidocr_missing_is_one_line(monkeypatch, datasets, capsys):
    monkeypatch.setitem(sys.modules, "rapidocr", None)  # import fails as if not installed
    rc = evaluate.main(["--engine", "rapidocr", "--data", datasets["folder"][0]])
    err = capsys.readouterr().err
    assert rc == 2 and "pip install rapidocr" in err and "Traceback" not in err
