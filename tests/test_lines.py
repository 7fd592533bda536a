"""ofa_jax/lines.py: where a long line is cut, and how the Recognizer reads it in pieces."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ofa_jax import lines

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _line(n_chars: int, th: int = 20, gap: int = 4, margin: int = 10, wide_gaps=()) -> tuple[np.ndarray, list]:
    """A white line of ``n_chars`` black "characters" (th x th blocks with a 2-px hole, like a glyph's
    inner gap) ``gap`` px apart (``wide_gaps``: indices after which the gap is 3 th); -> (rgb, blank
    column ranges between characters)."""
    xs, x = [], margin
    for i in range(n_chars):
        xs.append(x)
        x += th + (3 * th if i in wide_gaps else gap)
    w = x - gap + margin
    img = np.full((th + 2 * margin, w, 3), 255, np.uint8)
    for x0 in xs:
        img[margin:margin + th, x0:x0 + th] = 0
        img[margin:margin + th, x0 + th // 2 - 1:x0 + th // 2 + 1] = 255  # a blank column inside the glyph
    blanks = [(xs[i] + th, xs[i + 1]) for i in range(n_chars - 1)]
    return img, blanks


def test_a_short_line_is_one_piece():
    img, _ = _line(10)
    assert lines.cut_points(img, 13) == [lines.Piece(0, img.shape[1])]
    blank = np.full((30, 400, 3), 255, np.uint8)
    assert lines.cut_points(blank, 13) == [lines.Piece(0, 400)]


@pytest.mark.parametrize("n_chars", [14, 25, 40])
def test_a_long_line_is_cut_between_characters_into_even_pieces(n_chars):
    th, gap = 20, 4
    img, blanks = _line(n_chars, th, gap)
    pieces = lines.cut_points(img, 13)
    ink_width = n_chars * th + (n_chars - 1) * gap
    assert len(pieces) == math.ceil(ink_width / (lines.PIECE_SHARE * 13 * th))
    assert pieces[0].x0 == 0 and pieces[-1].x1 == img.shape[1]
    assert all(a.x1 == b.x0 for a, b in zip(pieces, pieces[1:]))  # contiguous, nothing lost
    for p in pieces[1:]:  # every cut in a blank between two characters, never in a glyph's own gap
        assert any(a <= p.x0 < b for a, b in blanks), (p, blanks)
    widths = [p.x1 - p.x0 for p in pieces]
    assert max(widths) - min(widths) <= 2 * (th + gap) + 20  # about even (the end pieces hold the margins)
    assert max(widths) <= lines.PIECE_SHARE * 13 * th + th + 20


def test_lines_near_the_limit_are_read_both_whole_and_cut():
    th, gap = 20, 4
    for n, want in ((8, "whole"), (11, "both"), (13, "cut")):  # ink 9.4, 13.0 and 15.4 text heights wide
        img, _ = _line(n, th, gap)
        ways = lines.readings(img, 13)
        whole = [lines.Piece(0, img.shape[1])]
        if want == "whole":
            assert ways == [whole]
        elif want == "both":
            assert ways[0] == whole and ways[1] == lines.cut_points(img, lines.PIECE_SHARE * 13) and len(ways[1]) == 2
        else:
            assert len(ways) == 1 and ways[0] == lines.cut_points(img, 13) and len(ways[0]) == 2


def test_light_text_on_dark_is_cut_like_dark_on_light():
    img, _ = _line(30)
    assert lines.cut_points(lines.dark_text_on_light(255 - img), 13) == lines.cut_points(img, 13)


def test_pieces_join_with_a_space_only_between_latin_words():
    img, _ = _line(30, wide_gaps=(14,))
    pieces = lines.cut_points(img, 13)
    wide = [p for p in pieces[1:] if p.gap_before >= 3]
    assert len(pieces) == 4 and len(wide) == 1  # the wide gap was chosen for the cut near it
    assert all(p.gap_before == pytest.approx(0.2) for p in pieces[1:] if p is not wide[0])  # 4 px of 20
    for p, texts, want in ((wide[0], ["USB", "C"], "USB C"), (wide[0], ["接口", "充电"], "接口充电"),
                           (lines.Piece(0, 1, 0.1), ["USB", "C"], "USBC")):
        assert lines.join_texts(texts, [lines.Piece(0, 1), p]) == want


# ------------------------------------------------------------------------- the shipped model, in pieces


@pytest.fixture(scope="module")
def val():
    """The independent set's dev split, {text: record}, clean lines only."""
    from bench.indep_eval import DEFAULT_DATA, load_split
    return {r["text"]: r for r in load_split(DEFAULT_DATA, "val") if r["subset"] == "clean"}


@pytest.fixture(scope="module")
def rec():
    from ofa_jax.recognizer import Recognizer
    return Recognizer.from_pretrained(batch_size=2, views="id")


def test_recognizer_reads_long_lines_in_pieces_across_batches(rec, val, tmp_path):
    """Pieces of one line may fall in different batches; an unreadable item between them changes nothing."""
    long_text = "现在网上购物越来越方便，很多商品下单后第二天就能收到。"
    long_path = val[long_text]["path"]
    short_path = next(r["path"] for t, r in val.items() if len(t) <= 8)
    (pixels, cuts), = rec.readings(long_path)  # 27 characters: one way, in pieces
    assert len(cuts) >= 2 and len(pixels) == len(cuts)
    alone = []
    for k in range(0, len(pixels), rec.batch_size):
        alone += [t for t, _ in rec.recognize_pixels(np.stack(pixels[k:k + rec.batch_size]))]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    out = rec([short_path, long_path, str(bad), long_path])
    assert out[1].text == out[3].text == lines.join_texts(alone, cuts)
    assert out[2].error and "\n" not in out[2].error and out[2].text is None
    assert out[0].ok and out[1].score <= 0
    # the shipped model reads this 27-character line in pieces (whole, it collapses)
    from ofa_jax.data.metrics import normalize_ofa
    assert normalize_ofa(out[1].text) == normalize_ofa(long_text)


def test_a_line_read_two_ways_keeps_the_better_scoring_reading(rec):
    img, _ = _line(11)  # 13 text heights: whole and in two pieces
    (whole, one), (halves, cuts) = rec.readings(img)
    assert len(one) == len(whole) == 1 and len(cuts) == len(halves) == 2
    (t0, s0), = rec.recognize_pixels(np.stack(whole))
    got = rec.recognize_pixels(np.stack(halves))
    weights = [len(t) + 1 for t, _ in got]
    s1 = sum(w * sc for w, (_, sc) in zip(weights, got)) / sum(weights)
    best = (t0, s0) if s0 >= s1 else (lines.join_texts([t for t, _ in got], cuts), s1)
    out = rec(img)
    assert (out.text, out.score) == (best[0], pytest.approx(best[1], abs=1e-6))


def test_without_polarity_or_pieces_the_reference_input_is_untouched(rec, val):
    from ofa_jax.recognizer import Recognizer
    from ofa_jax.preprocess import resize_and_pad_uint8
    plain = Recognizer(rec.model_dir, rec.gen, batch_size=2, views="id", polarity="keep", max_aspect=0)
    path = next(iter(val.values()))["path"]
    (pixels, cuts), = plain.readings(path)
    assert cuts is None and len(pixels) == 1
    assert np.array_equal(pixels[0], resize_and_pad_uint8(path, rec.image_size))


def test_bad_settings_are_one_line_errors(tmp_path):
    img = tmp_path / "line.png"
    Image.fromarray(_line(5)[0]).save(img)
    for args, want in ((["--max-aspect", "0.5"], "max_piece_aspect 0.5"),
                       (["--polarity", "invert"], "invalid choice")):
        p = subprocess.run([sys.executable, "-m", "ofa_jax.decode", *args, str(img)], capture_output=True, text=True,
                           cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
        assert p.returncode == 2
        assert want in p.stderr and "Traceback" not in p.stderr, p.stderr
