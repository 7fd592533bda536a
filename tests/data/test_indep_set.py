"""The committed independent dev/test set (bench/data/indep, built by tools/indep_set/build.py)."""

import json
from pathlib import Path

import pytest
from PIL import Image

from ofa_jax.data import corpus
from ofa_jax.data.holdout import HoldoutFilter, indep_texts, load_holdout
from ofa_jax.data.text import read_lines

ROOT = Path(__file__).resolve().parents[2]
SET = ROOT / "bench" / "data" / "indep"
SPLITS = ("val", "test")


def labels(split):
    with open(SET / split / "labels.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def recs():
    return {s: labels(s) for s in SPLITS}


def test_every_line_is_a_readable_image_with_a_label(recs):
    for split, rs in recs.items():
        files = {p.name for p in (SET / split).iterdir() if p.name != "labels.jsonl"}
        assert files == {r["file"] for r in rs}                      # no image without a label, and back
        for r in rs:
            with Image.open(SET / split / r["file"]) as im:
                assert im.format == ("PNG" if r["subset"] == "clean" else "JPEG")
                assert im.width > im.height >= 12
            assert 2 <= len(r["text"]) <= 40


def test_each_text_once_clean_once_hard_in_one_split(recs):
    seen = {}
    for split, rs in recs.items():
        for r in rs:
            seen.setdefault(r["text"], []).append((split, r["subset"]))
    for text, where in seen.items():
        assert sorted(where) == sorted([(where[0][0], "clean"), (where[0][0], "hard")]), text
    val = {r["text"] for r in recs["val"]}
    assert val.isdisjoint(r["text"] for r in recs["test"])


def test_buckets_subsets_and_fonts_are_populated(recs):
    for split, rs in recs.items():
        for subset in ("clean", "hard"):
            for lo, hi in ((2, 12), (13, 20), (21, 40)):
                n = sum(1 for r in rs if r["subset"] == subset and lo <= len(r["text"]) <= hi)
                assert n >= 30, (split, subset, lo, hi, n)
        fonts = {r["font"] for r in rs}
        assert len(fonts) >= 8 and {"lxgw-wenkai", "droid", "wqy-zenhei"} <= fonts   # fonts no training run used
        hard = [r for r in rs if r["subset"] == "hard"]
        assert all(30 <= r["jpeg_quality"] <= 60 for r in hard)      # every hard line is a JPEG q30-60
        assert sum(len(r["degradations"]) >= 2 for r in hard) > 0.9 * len(hard)   # most with 2+ more steps


def test_texts_look_like_real_printed_text(recs):
    texts = [r["text"] for rs in recs.values() for r in rs if r["subset"] == "clean"]
    frac = lambda pred: sum(1 for t in texts if pred(t)) / len(texts)  # noqa: E731
    assert frac(lambda t: t[-1] in "。！？") > 0.3
    assert frac(lambda t: any(c.isdigit() for c in t)) > 0.25
    assert frac(lambda t: any("a" <= c.lower() <= "z" for c in t)) > 0.1


def test_texts_are_held_out_of_training(recs):
    texts = {r["text"] for rs in recs.values() for r in rs}
    source = read_lines(ROOT / "tools" / "indep_set" / "texts.txt")
    assert texts == set(source) == set(indep_texts())                # the package ships exactly these
    h = load_holdout()
    assert all(t in h for t in texts)


def test_texts_are_not_in_the_hsk_pool(recs):
    if not corpus.available("hsk"):
        pytest.skip("hsk-sentences-audio not installed")
    texts = sorted({r["text"] for rs in recs.values() for r in rs})
    mine = HoldoutFilter(texts)
    assert [s for s in corpus.hsk_sentences() if s in mine] == []
    hsk = HoldoutFilter(corpus.hsk_sentences())
    assert [t for t in texts if t in hsk] == []


def test_the_set_stays_small():
    size = sum(p.stat().st_size for p in SET.rglob("*") if p.is_file())
    assert size < 8 * 2**20
