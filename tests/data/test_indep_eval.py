"""bench/indep_eval.py as a user runs it: a fresh process on a few lines of the committed set."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "indep_eval.py"


def run(*args, timeout=600):
    p = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, p.stderr[-2000:]
    return p


def test_scores_agree_with_the_predictions_it_writes(tmp_path):
    from ofa_jax.data.metrics import normalize_ofa

    out = tmp_path / "preds.jsonl"
    p = run("--split", "test", "--limit", "20", "--engines", "plain", "--json", "--output", str(out))
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["n"] == 20 and res["split"] == "test"
    preds = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(preds) == 20 and all(isinstance(r["plain"], str) for r in preds)
    correct = sum(normalize_ofa(r["plain"]) == normalize_ofa(r["gt"]) for r in preds)
    assert res["counts"]["plain"]["all"] == [correct, 20]
    by_subset = {s: sum(1 for r in preds if r["subset"] == s) for s in ("clean", "hard")}
    for s, n in by_subset.items():
        if n:
            assert res["counts"]["plain"][s][1] == n
    assert res["lines_per_s"]["plain"] > 0                    # timed over the batches after the first
    assert "| **all** | 20 |" in p.stdout                     # the markdown table


def test_unknown_engine_and_missing_set_are_errors(tmp_path):
    p = subprocess.run([sys.executable, str(SCRIPT), "--engines", "tesseract"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and "unknown" in p.stderr
    p = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tmp_path)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and "labels.jsonl" in p.stderr


@pytest.mark.skipif(importlib.util.find_spec("rapidocr") is None or importlib.util.find_spec("onnxruntime") is None,
                    reason="pip install rapidocr onnxruntime")
def test_fit_probe_hands_the_fitted_image_to_rapidocr():
    """Fitted into 32 px high, lines are read from fewer pixels; squeezed to 8 px wide, nothing is."""
    full = json.loads(run("--subset", "clean", "--limit", "8", "--engines", "rapidocr", "--json").stdout
                      .strip().splitlines()[-1])
    tiny = json.loads(run("--subset", "clean", "--limit", "8", "--engines", "rapidocr", "--fit", "32x8",
                          "--json").stdout.strip().splitlines()[-1])
    assert tiny["fit"] == [32, 8] and full["fit"] is None
    assert full["acc"]["rapidocr"]["all"] > tiny["acc"]["rapidocr"]["all"]
