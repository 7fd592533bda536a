"""OFATokenizer: ids, decoding and OCR post-processing identical to ModelScope's OFATokenizerZH.

Fixtures come from tools/reference/make_text_fixtures.py (run in the reference environment).
"""

import gzip
import hashlib
import json
import os
import unicodedata

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ofa_jax.tokenizer import OCR_PROMPT, OFATokenizer, postprocess_ocr_text

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
_TOK = OFATokenizer.default()  # hypothesis tests cannot take function-scoped fixtures


@pytest.fixture(scope="module")
def tok():
    return _TOK


@pytest.fixture(scope="module")
def parity_rows():
    with gzip.open(os.path.join(FIXTURES, "tokenizer_parity.jsonl.gz"), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _unicode_drift():
    """Code points assigned in this Python's Unicode tables but not in the fixtures' (or the reverse).

    The reference drops unassigned characters, so on another CPython its ids differ on exactly these
    (and so do ours, deliberately): they are left out of the comparisons. Empty on the fixtures' Python.
    """
    with open(os.path.join(FIXTURES, "tokenizer_codepoints.json")) as f:
        fx = json.load(f)
    if fx["unidata_version"] == unicodedata.unidata_version:
        return frozenset()
    then = set()
    for a, b in fx["unassigned"]:
        then.update(range(a, b + 1))
    now = {cp for cp in range(0x110000) if not 0xD800 <= cp < 0xE000 and unicodedata.category(chr(cp)) == "Cn"}
    return frozenset(then ^ now)


DRIFT = _unicode_drift()


def _comparable(text):
    return not DRIFT or not any(ord(c) in DRIFT for c in text)


def _first_mismatches(pairs, limit=5):
    bad = [p for p in pairs if p[1] != p[2]]
    return len(bad), bad[:limit]


# -- layout ------------------------------------------------------------------------------------------


def test_layout(tok):
    assert (tok.bos_id, tok.pad_id, tok.eos_id, tok.unk_id, tok.mask_id) == (0, 1, 2, 3, 21132)
    assert tok.vocab_size == len(tok) == 30325
    assert tok.code_id(0) == 21133 and tok.code_id(8191) == 29324
    assert tok.bin_id(0) == 29325 and tok.bin_id(999) == 30324
    assert tok.id_to_token(347) == "\u2028"  # the vocab must be split on "\n" only
    assert tok.id_to_token(4) == "[PAD]" and tok.token_to_id("[UNK]") == 104
    assert tok.token_to_id("not a token") == tok.unk_id


def test_prompt(tok):
    expected = [0, 1749, 4279, 681, 4642, 3156, 2103, 3225, 788, 724, 140, 2]
    assert tok.encode_prompt() == expected
    assert tok.encode(OCR_PROMPT, add_bos_eos=True) == expected
    assert tok.encode(OCR_PROMPT) == tok.encode(OCR_PROMPT, add_bos_eos=False) == expected[1:-1]
    assert tok.encode(OCR_PROMPT, add_eos=True) == expected[1:]
    assert tok.encode(OCR_PROMPT, add_bos_eos=True, add_bos=False) == expected[1:]
    assert tok.encode(OCR_PROMPT, add_bos=True, max_length=3) == expected[:4]


def test_from_model_dir_and_vocab(tmp_path, tok):
    src = os.path.join(os.path.dirname(__file__), "..", "ofa_jax", "assets", "vocab_zh.txt")
    (tmp_path / "vocab.txt").write_bytes(open(src, "rb").read())
    t = OFATokenizer.from_model_dir(tmp_path)
    assert t.vocab_size == 30325 and t.encode("中文 OCR") == tok.encode("中文 OCR") == [708, 3156, 161, 13133]
    assert OFATokenizer.from_vocab(tmp_path / "vocab.txt").encode_prompt() == tok.encode_prompt()
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        OFATokenizer.from_model_dir(tmp_path / "missing")


def test_bad_vocab(tmp_path):
    p = tmp_path / "v.txt"
    p.write_text("[PAD]\n[UNK]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="must start with"):
        OFATokenizer.from_vocab(p)
    p.write_text("<s>\n<pad>\n</s>\n<unk>\na\n", encoding="utf-8")
    with pytest.raises(ValueError, match="<mask>"):
        OFATokenizer.from_vocab(p)
    p.write_text("<s>\n<pad>\n</s>\n<unk>\na\na\n<mask>\n", encoding="utf-8")
    with pytest.raises(ValueError, match="duplicate"):
        OFATokenizer.from_vocab(p)


def test_small_vocab_appends_codes_and_bins(tmp_path):
    p = tmp_path / "v.txt"
    p.write_text("<s>\n<pad>\n</s>\n<unk>\nab\n##c\n<mask>", encoding="utf-8")  # no final newline
    t = OFATokenizer.from_vocab(p)
    assert t.vocab_size == 7 + 8192 + 1000
    assert t.code_id(0) == 7 and t.bin_id(0) == 7 + 8192
    assert t.encode("ABC <code_3>x", add_bos_eos=False) == [4, 5, 10, 3]
    assert t.decode([4, 5, 10, 3, 2]) == "abc <code_3>"


def test_encode_rejects_non_str(tok):
    with pytest.raises(TypeError):
        tok.encode(b"bytes")


# -- parity with ModelScope --------------------------------------------------------------------------


def test_encode_parity(tok, parity_rows):
    rows = [r for r in parity_rows if r["kind"] == "encode" and _comparable(r["text"])]
    assert len(rows) >= 10_000
    n_bad, bad = _first_mismatches([(r["text"], r["ids"], tok.encode(r["text"], add_bos_eos=False)) for r in rows])
    assert n_bad == 0, f"{n_bad}/{len(rows)} strings differ, e.g. (text, reference, ours): {bad}"


def test_encode_truncation_parity(tok, parity_rows):
    rows = [r for r in parity_rows if r["kind"] == "encode_trunc" and r["max_length"] > 0 and _comparable(r["text"])]
    assert rows
    # the reference ignores max_length=0 (no truncation at all); we refuse it
    zero = [r for r in parity_rows if r["kind"] == "encode_trunc" and r["max_length"] == 0 and _comparable(r["text"])]
    assert all(r["ids"] == tok.encode(r["text"]) for r in zero)
    with pytest.raises(ValueError, match="max_length"):
        tok.encode("abc", max_length=0)
    got = [(r["text"], r["ids"], tok.encode(r["text"], add_bos_eos=False, max_length=r["max_length"])) for r in rows]
    n_bad, bad = _first_mismatches(got)
    assert n_bad == 0, f"{n_bad}/{len(rows)} differ: {bad}"


def test_decode_parity(tok, parity_rows):
    rows = [r for r in parity_rows if r["kind"] == "decode"]
    assert len(rows) >= 5_000
    n_bad, bad = _first_mismatches([(r["ids"], r["decoded"], tok.decode(r["ids"])) for r in rows])
    assert n_bad == 0, f"{n_bad}/{len(rows)} decodes differ: {bad}"
    n_bad, bad = _first_mismatches([(r["decoded"], r["ocr"], tok.postprocess(r["decoded"])) for r in rows])
    assert n_bad == 0, f"{n_bad}/{len(rows)} post-processings differ: {bad}"
    n_bad, bad = _first_mismatches([(r["ids"], r["ocr"], tok.decode_ocr(np.asarray(r["ids"]))) for r in rows])
    assert n_bad == 0, f"{n_bad}/{len(rows)} decode_ocr differ: {bad}"


def test_every_code_point(tok):
    """Every Unicode scalar value, in a word, tokenised as the reference does."""
    with open(os.path.join(FIXTURES, "tokenizer_codepoints.json")) as f:
        fx = json.load(f)
    block, piece = fx["block"], fx["piece"]
    bad = []
    for b in fx["blocks"]:
        start = b["start"]
        text = "".join(piece.format(c=chr(c)) for c in range(start, start + block) if not 0xD800 <= c < 0xE000)
        if not _comparable(text):
            continue
        ids = tok.encode(text, add_bos_eos=False)
        digest = hashlib.sha256(np.asarray(ids, dtype="<i4").tobytes()).hexdigest()
        if (len(ids), digest) != (b["n_ids"], b["sha256"]):
            bad.append(f"U+{start:04X}..U+{start + block - 1:04X}")
    assert not bad, f"{len(bad)} code point blocks differ from the reference: {bad[:10]}"


# -- behaviour -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("Hello, World!", ["hello", ",", "world", "!"]),
        ("ΣΑΣ", ["σ", "##α", "##σ"]),  # per-character lowercasing: no final sigma
        ("<S>x</s>", ["<s>", "x", "</s>"]),  # lowercased, then read as specials, like the reference
        ("<CODE_7><bin_999>", ["<code_7>", "<bin_999>"]),
        ("<code_8192>", ["<", "code", "_", "81", "##92", ">"]),
        ("a\u2028b\u3000c", ["a", "b", "c"]),
        ("\x00\ufffd\u200b", []),
        ("café", ["cafe"]),
        ("x" * 101, ["<unk>"]),
        ("\U0001FA75", []),  # unassigned in CPython 3.11's Unicode 14: dropped, as by the reference
    ],
)
def test_tokenize_examples(tok, text, tokens):
    assert tok.tokenize(text) == tokens


def test_decode_rules(tok):
    hello, comma, w, ond = tok.encode("hello, wond")
    assert tok.convert_ids_to_tokens([w, ond]) == ["w", "##ond"]
    assert tok.decode([0, hello, comma, w, ond, 2, 1, 1]) == "hello , wond"
    assert tok.decode([0, hello, 2], skip_special_tokens=False) == "<s> hello </s>"
    assert tok.decode([hello, 99999, -1, tok.mask_id, tok.unk_id]) == "hello"  # unknown ids dropped
    assert tok.decode([tok.code_id(1), ond, tok.bin_id(2)]) == "<code_1> ##ond <bin_2>"
    assert tok.decode([]) == ""


@pytest.mark.parametrize(
    "text, spelled",
    [
        ("XAJ", ["x", "##a", "##j"]),                       # wordpieces: xa ##j
        ("g2096办", ["g", "##2", "##0", "##9", "##6", "办"]),  # g20 ##96
        ("中 ab 12", ["中", "a", "##b", "1", "##2"]),
        ("x 7 中文，", ["x", "7", "中", "文", "，"]),         # single characters, hanzi, punctuation: as is
        ("café", ["c", "##a", "##f", "##e"]),              # accents stripped first, as encode does
    ],
)
def test_spell_alnum(tok, text, spelled):
    ids = tok.encode(text)
    out = tok.spell_alnum(ids)
    assert tok.convert_ids_to_tokens(out) == spelled
    assert tok.decode(out) == tok.decode(ids)  # the same text back
    assert tok.spell_alnum([tok.unk_id, 99999, -1]) == [tok.unk_id, 99999, -1]


@pytest.mark.parametrize(
    "text, out",
    [
        (" 中 文 ", "中文"),
        ("hello world", "hello world"),
        ("中 a b 文", "中a b文"),
        ("3 . 14 , ok !", "3 . 14 , ok !"),
        ("a - b", "a-b"),
        ("（ 注 ） abc", "（注）abc"),
        ("a  \t b", "a\tb"),  # "\t" is outside the kept set: the spaces around it go
        ("a \u3000 b", "a\u3000b"),
    ],
)
def test_postprocess(text, out):
    assert postprocess_ocr_text(text) == out


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_encode_properties(text):
    t = _TOK
    ids = t.encode(text, add_bos_eos=True)
    assert ids[0] == t.bos_id and ids[-1] == t.eos_id
    assert all(0 <= i < t.vocab_size for i in ids)
    assert t.encode(text, max_length=3, add_bos_eos=False) == ids[1:-1][:3]
    # decoding a tokenisation and tokenising again is stable for text without specials/unknowns
    body = ids[1:-1]
    if t.unk_id not in body and not any(i in (0, 1, 2, t.mask_id) for i in body):
        assert t.encode(t.decode(body), add_bos_eos=False) == body

