"""ACC / NED on hand-checked cases, for both named normalisations."""

import math

import pytest

from ofa_jax.data.metrics import (LineMetrics, compute_metrics, levenshtein, normalize_benchmark,
                                  normalize_ofa)
from ofa_jax.data.text import full_to_half_width, train_normalize


def test_levenshtein_hand_cases():
    assert levenshtein("", "") == 0
    assert levenshtein("abc", "") == 3
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("中文识别", "中文讽别") == 1
    assert levenshtein("ab", "ba") == 2


def test_full_width_to_half_width_is_fudan_strq2b():
    assert full_to_half_width("ＡＢＣ１２３！") == "ABC123!"
    assert full_to_half_width("a\u3000b") == "a b"
    assert full_to_half_width("，") == ","  # U+FF0C is in the full-width block
    assert full_to_half_width("。、“”") == "。、“”"  # CJK punctuation outside FF01-FF5E is untouched


def test_benchmark_normalisation():
    assert normalize_benchmark("ＡＢＣ１２３") == "abc123"  # full-width digits/letters, lowercase
    assert normalize_benchmark("繁體中文") == "繁体中文"  # traditional -> simplified
    assert normalize_benchmark("Hello World") == "hello world"  # spaces kept
    assert normalize_benchmark("a\u3000b") == "a b"


def test_ofa_normalisation():
    assert normalize_ofa("ＡＢＣ１２３") == "abc123"  # NFKC folds full-width
    assert normalize_ofa("繁體中文") == "繁体中文"
    assert normalize_ofa("Hello World") == "helloworld"  # spaces removed
    assert normalize_ofa(" a\u3000b ") == "ab"
    assert normalize_ofa("①") == "1"  # NFKC, which the benchmark does not do
    assert normalize_benchmark("①") == "①"


def test_acc_ned_hand_checked_benchmark():
    preds = ["abc123", "繁体中文", "hello world", "中文识别", ""]
    gts = ["ＡＢＣ１２３", "繁體中文", "Hello  World", "中文讽别", ""]
    r = compute_metrics(preds, gts)  # default = benchmark
    assert r["normalization"] == "benchmark"
    # 1, 2 match; 3: "hello world" vs "hello  world" (one extra space): lev 1 / 12;
    # 4: lev 1 / 4; 5: "" vs "" matches with distance 0.
    assert r["n"] == 5
    assert r["acc"] == pytest.approx(3 / 5)
    assert r["ned"] == pytest.approx(1 - (1 / 12 + 1 / 4) / 5)


def test_acc_ned_hand_checked_ofa():
    preds = ["abc123", "繁体中文", "hello world", "中文识别", ""]
    gts = ["ＡＢＣ１２３", "繁體中文", "Hello  World", "中文讽别", ""]
    r = compute_metrics(preds, gts, normalization="ofa")
    assert r["acc"] == pytest.approx(4 / 5)  # spaces removed: "helloworld" == "helloworld"
    assert r["ned"] == pytest.approx(1 - (1 / 4) / 5)


def test_no_normalisation_and_errors():
    r = compute_metrics(["ABC"], ["abc"], normalization="none")
    assert r["acc"] == 0 and r["ned"] == pytest.approx(0.0)
    with pytest.raises(ValueError):
        compute_metrics(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        LineMetrics("nope")
    assert math.isnan(LineMetrics().result()["acc"])


def test_streaming_equals_batch():
    m = LineMetrics()
    m.update(["a"], ["a"])
    m.update(["b", "c"], ["x", "c"])
    assert m.result() == compute_metrics(["a", "b", "c"], ["a", "x", "c"])


def test_train_normalize_is_zhhans_nfkc():
    assert train_normalize("繁體ＡＢＣ１") == "繁体ABC1"  # no lowercasing: the tokenizer lowercases
