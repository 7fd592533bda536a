"""The held-out filter of every random training line: evaluation lines and the independent set's texts."""

from pathlib import Path

import numpy as np
import pytest

from ofa_jax.data import corpus, holdout, text

ROOT = Path(__file__).resolve().parents[2]
SHARED_EXCLUDE = ROOT.parent / "shared" / "eval_exclude.txt"


def test_rule_equal_or_contains_six_or_more_spaces_removed():
    f = holdout.HoldoutFilter(["大张旗鼓", "银行给了他一笔贷款。", "a b c d e f"])
    assert "大张旗鼓" in f and " 大张 旗鼓 " in f            # equal, spaces removed
    assert "他们大张旗鼓地庆祝" not in f                     # a 4-character entry only counts when equal
    assert "昨天银行给了他一笔贷款。今天" in f                # contains an entry of >= 6 characters
    assert "银行给了他一笔" not in f                          # a part of an entry is not held out
    assert "xxabcdefyy" in f                                  # the entry with its spaces removed
    assert f.matches("昨天银行给了他一笔贷款。") == ["银行给了他一笔贷款。"]
    assert 3 not in f and "" not in f


def test_filter_agrees_with_a_plain_scan():
    rng = np.random.default_rng(0)
    alphabet = "天地人和中文字abc12"
    entries = ["".join(rng.choice(list(alphabet), size=int(rng.integers(2, 9)))) for _ in range(300)]
    f = holdout.HoldoutFilter(entries)
    for _ in range(3000):
        line = "".join(rng.choice(list(alphabet), size=int(rng.integers(1, 30))))
        slow = any(line == e or (len(e) >= 6 and e in line) for e in entries)
        assert (line in f) == slow, line


def test_holdout_holds_the_eval_list_and_the_independent_texts():
    h = holdout.load_holdout()
    evals = text.read_lines(text.eval_exclude_path())
    indep = holdout.indep_texts()
    assert len(indep) >= 300
    assert all(t in h for t in evals[:200] + indep)
    assert h.source.endswith("indep_texts.txt")


@pytest.mark.skipif(not SHARED_EXCLUDE.is_file(), reason="no shared/ evaluation list beside the repository")
def test_shared_eval_list_and_independent_texts_do_not_overlap_either_way():
    shared = holdout.HoldoutFilter(text.read_lines(SHARED_EXCLUDE))
    indep = holdout.indep_texts()
    assert [t for t in indep if t in shared] == []
    mine = holdout.HoldoutFilter(indep)
    assert [e for e in text.read_lines(SHARED_EXCLUDE) if e in mine] == []


@pytest.mark.parametrize("source", ["gb2312", "words", "prose"])
def test_random_sources_redraw_a_held_out_line(source, tmp_path, monkeypatch):
    """Put a 6-character piece of a line a source draws into the evaluation list: the same draw now
    gives another line, without that piece."""
    if not corpus.available(source):
        pytest.skip(f"text source {source!r} not installed")
    first = [corpus.random_line(source, np.random.default_rng(s), 20, 30) for s in range(5)]
    pieces = ["".join(t.split())[3:9] for t in first]
    assert all(len(p) == 6 for p in pieces)
    listing = tmp_path / "exclude.txt"
    listing.write_text("\n".join(pieces + text.read_lines(text.eval_exclude_path())) + "\n", encoding="utf-8")
    monkeypatch.setenv(text.EVAL_EXCLUDE_ENV, str(listing))
    again = [corpus.random_line(source, np.random.default_rng(s), 20, 30) for s in range(5)]
    for line, piece in zip(again, pieces):
        assert piece not in "".join(line.split())
    assert again != first
