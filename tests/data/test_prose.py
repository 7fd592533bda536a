"""The ``prose`` text source: lines that look like printed running text (lengths, punctuation, numbers)."""

import re

import numpy as np
import pytest

from ofa_jax.data import corpus, prose
from ofa_jax.data.holdout import load_holdout

pytestmark = pytest.mark.skipif(not corpus.available("prose"), reason="jieba not installed (pip install jieba)")

N = 3000


@pytest.fixture(scope="module")
def lines():
    rng = np.random.default_rng(123)
    return [corpus.random_line("prose", rng, 2, 40) for _ in range(N)]


def share(lines, pred):
    return sum(1 for t in lines if pred(t)) / len(lines)


def test_seeded(lines):
    rng = np.random.default_rng(123)
    assert [corpus.random_line("prose", rng, 2, 40) for _ in range(50)] == lines[:50]
    assert len(set(lines)) > 0.98 * N


def test_lengths_reach_forty_and_spread_evenly(lines):
    n = np.array([len(t) for t in lines])
    assert n.min() >= 1 and n.max() <= 41
    assert (n >= 40).mean() > 0.01                      # lines of 40 characters are drawn
    for lo, hi in ((2, 12), (13, 20), (21, 30), (31, 40)):
        expected = (hi - lo + 1) / 39
        assert abs(((n >= lo) & (n <= hi)).mean() - expected) < 0.06, (lo, hi)


def test_punctuation_where_real_text_has_it(lines):
    punct = set(prose.CLAUSE_PUNCT)
    assert share(lines, lambda t: any(c in punct for c in t)) > 0.6
    long = [t for t in lines if len(t) >= 21]
    assert share(long, lambda t: any(c in "，、；：" for c in t)) > 0.8    # clauses inside long lines
    assert share(lines, lambda t: t[-1] in prose.SENTENCE_END) > 0.2       # lines that end a sentence
    assert share(lines, lambda t: t[-1] in "，；：、") > 0.02               # and lines that end a clause
    assert share(lines, lambda t: t[0] in prose.NO_LINE_START) == 0        # never a closing mark first


def test_numbers_dates_times_prices_codes_latin(lines):
    assert share(lines, lambda t: re.search(r"\d", t)) > 0.3
    assert share(lines, lambda t: re.search(r"[A-Za-z]", t)) > 0.12
    assert share(lines, lambda t: re.search(r"\d+年\d+月|\d+月\d+日|\d{4}[-/.]\d", t)) > 0.03
    assert share(lines, lambda t: re.search(r"\d:\d\d|\d+点\d+分|\d+时\d+分", t)) > 0.03
    assert share(lines, lambda t: re.search(r"[¥$]\d|\d元", t)) > 0.03
    assert share(lines, lambda t: re.search(r"[A-Z]{1,3}-?\d", t)) > 0.03
    assert share(lines, lambda t: re.search(r"\d%", t)) > 0.01
    # Latin *inside* Chinese text, not Latin-only lines
    assert share(lines, lambda t: re.search(r"[A-Za-z]", t) and re.search(r"[\u4e00-\u9fff]", t)) > 0.1


def test_mostly_in_the_ofa_vocabulary(lines):
    from ofa_jax.tokenizer import OFATokenizer

    tok = OFATokenizer.default()
    assert share(lines, lambda t: tok.unk_id not in tok.encode(t)) > 0.97


def test_no_held_out_line(lines):
    h = load_holdout()
    assert [t for t in lines if t in h] == []


def test_render_spec_draws_long_prose_lines():
    """Through the ``render:`` spec a training run uses: the texts of 40-character configs."""
    from ofa_jax.data.builders.synthetic import RenderedSynthetic

    src = RenderedSynthetic("printed,min_chars=25,max_chars=40,heldout_fonts=0,text_sources=prose,"
                            "fixed_text_fraction=0,n=20", "train")
    if not src.fonts:
        pytest.skip("no CJK font")
    texts = [src[i]["text"] for i in range(20)]
    assert all(24 <= len(t) <= 41 for t in texts)
    assert sum(any(c in prose.CLAUSE_PUNCT for c in t) for t in texts) >= 15
