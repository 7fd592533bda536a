"""Text sources of the synthetic corpus: deterministic, in range, in the OFA vocabulary."""

import numpy as np
import pytest

from ofa_jax.data import corpus


@pytest.mark.parametrize("source", ["gb2312", "rare", "alnum", "words"])
def test_random_lines_are_seeded_and_sized(source):
    if not corpus.available(source):
        pytest.skip(f"text source {source!r} not installed")
    rng1, rng2 = np.random.default_rng(5), np.random.default_rng(5)
    a = [corpus.random_line(source, rng1, 2, 12) for _ in range(200)]
    b = [corpus.random_line(source, rng2, 2, 12) for _ in range(200)]
    assert a == b
    assert all(1 <= len(t) <= 12 for t in a)
    assert len(set(a)) > 190  # random, not a pool


def test_words_lines_follow_word_frequencies():
    if not corpus.available("words"):
        pytest.skip("jieba not installed (pip install jieba)")
    words, cum = corpus.jieba_words()
    hanzi = set("".join(corpus.gb2312_hanzi()))
    assert len(words) > 300_000 and all(c in hanzi for c in words[0] + words[-1])
    assert np.all(np.diff(cum) > 0)
    rng = np.random.default_rng(0)
    text = "".join(corpus.random_line("words", rng, 12, 12) for _ in range(2000))
    assert sum(c in hanzi for c in text) / len(text) > 0.9
    # the commonest words' characters dominate: far from the uniform draw of the gb2312 source
    counts = {c: text.count(c) for c in "了是在不"}
    assert min(counts.values()) > 100, counts
    assert len(set(text)) > 2000  # and still many distinct characters


def test_words_source_renders_in_vocabulary():
    if not corpus.available("words"):
        pytest.skip("jieba not installed (pip install jieba)")
    from ofa_jax.data.sources import load_eval_source
    from ofa_jax.tokenizer import OFATokenizer

    tok = OFATokenizer.default()
    src = load_eval_source("render:printed,text_sources=words,fixed_text_fraction=0,"
                           "min_chars=2,max_chars=12,n=20", "train")
    texts = [src[i]["text"] for i in range(len(src))]
    assert all(tok.unk_id not in tok.encode(t) for t in texts)
    hsk = set(corpus.hsk_sentences()) if corpus.available("hsk") else set()
    assert not hsk & set(texts) and len(set(texts)) == 20


def test_unknown_source_names_the_choices():
    with pytest.raises(ValueError, match="words"):
        corpus.fixed_lines("wrods")


def test_words_from_a_file_of_your_own(tmp_path, monkeypatch):
    import lzma

    path = tmp_path / "words.txt.xz"
    path.write_bytes(lzma.compress("天气 50 n\n很好 30 a\nAT&T 3 nz\n今天 20 t\n".encode("utf-8")))
    monkeypatch.setenv("OFA_JAX_WORDS_DICT", str(path))
    corpus.jieba_words.cache_clear()
    try:
        assert corpus.available("words")
        words, cum = corpus.jieba_words()
        assert words == ("天气", "很好", "今天") and cum.tolist() == [50, 80, 100]  # non-hanzi word dropped
        line = corpus.random_line("words", np.random.default_rng(0), 12, 12)
        assert len(line) == 12 and set(line) <= set("天气很好今") | set("，。0123456789")
        monkeypatch.setenv("OFA_JAX_WORDS_DICT", str(tmp_path / "missing.txt"))
        corpus.jieba_words.cache_clear()
        assert not corpus.available("words")
        with pytest.raises(FileNotFoundError, match="missing.txt"):
            corpus.jieba_words()
    finally:
        corpus.jieba_words.cache_clear()


def test_rare_source_oversamples_level2_latin_and_digits():
    level1, level2 = (set(x) for x in corpus.gb2312_hanzi())

    def shares(source):
        rng = np.random.default_rng(0)
        text = "".join(corpus.random_line(source, rng, 12, 12) for _ in range(2000))
        hanzi = [c for c in text if c in level1 or c in level2]
        return (sum(c in level2 for c in hanzi) / len(hanzi),
                sum(c.isascii() and c.isalpha() for c in text) / len(text),
                sum(c.isdigit() for c in text) / len(text))

    l2, latin, digits = shares("rare")
    g_l2, g_latin, g_digits = shares("gb2312")
    assert 0.45 < l2 < 0.55 and g_l2 < 0.12
    assert latin > 5 * g_latin and digits > 2 * g_digits
