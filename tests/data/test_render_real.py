"""The printed-text looks of the renderer (``render_style=real``): colour, rules, uneven light, JPEG 30-60."""

import io

import numpy as np
import pytest
from PIL import Image

from ofa_jax.data import render

FONTS = render.find_cjk_fonts()
needs_font = pytest.mark.skipif(not FONTS, reason="no CJK font installed (pip install paperang-p2-fonts-cjk)")
TEXT = "天地人和中文字体测试"


def _render(seed, **opts):
    return np.asarray(render.render_line(TEXT, FONTS[0], np.random.default_rng(seed), render.RenderOptions(**opts)),
                      np.float32)


@needs_font
def test_defaults_render_as_before_the_new_options():
    """The new options draw nothing when off: same pixels as the classic style for the same seed."""
    for seed in range(5):
        for degrade in (False, True):
            a = _render(seed, degrade=degrade)
            b = _render(seed, degrade=degrade, **render.style_options("classic"))
            assert np.array_equal(a, b)


def _longest_dark_run(img: np.ndarray) -> int:
    """Longest horizontal run of ink pixels (darker than the image's mid level) in any row."""
    lum = render.luminance(img)
    dark = lum < (lum.max() + lum.min()) / 2
    best = 0
    for row in dark:
        run = 0
        for v in row:
            run = run + 1 if v else 0
            best = max(best, run)
    return best


@needs_font
def test_rule_draws_a_line_across_the_text():
    with_rule = [_longest_dark_run(_render(s, rule=1.0)) / _render(s, rule=1.0).shape[1] for s in range(6)]
    without = [_longest_dark_run(_render(s)) / _render(s).shape[1] for s in range(6)]
    assert min(with_rule) > 0.7      # an unbroken line over most of the width
    assert max(without) < 0.4        # glyphs alone never make one


@needs_font
def test_colour_gives_coloured_lines_that_stay_legible():
    spreads, contrasts = [], []
    for s in range(40):
        img = _render(s, colour=1.0)
        lum = render.luminance(img)
        bg = np.median(img.reshape(-1, 3), axis=0)
        spreads.append(float(bg.max() - bg.min()))           # grey paper has ~0 spread
        contrasts.append(float(np.percentile(lum, 99.5) - np.percentile(lum, 0.5)))
    grey = [float(np.ptp(np.median(_render(s).reshape(-1, 3), axis=0))) for s in range(40)]
    assert np.mean(np.array(spreads) > 25) > 0.3 and max(grey) < 1e-6
    assert min(contrasts) > 60
    # light text on dark panels too: the background darker than the ink
    dark_bg = sum(render.luminance(np.median(_render(s, colour=1.0).reshape(-1, 3), axis=0)) < 128
                  for s in range(40))
    assert dark_bg >= 5


def test_lighting_field_is_uneven_but_never_black():
    for s in range(20):
        f = render._lighting(np.random.default_rng(s), 40, 300)[..., 0]
        assert f.max() > 0.99                      # full light somewhere
        assert 0.44 <= f.min() <= 0.81             # 20-55% darker at the far side


@needs_font
def test_lighting_applies_to_degraded_lines_only():
    for s in range(4):
        assert np.array_equal(_render(s, lighting=1.0), _render(s))


def _jpeg_luma_dc_step(data: bytes) -> int:
    return Image.open(io.BytesIO(data)).quantization[0][0]


@needs_font
def test_real_style_degraded_lines_are_jpeg_q30_to_60():
    from ofa_jax.data.builders.synthetic import RenderedSynthetic

    src = RenderedSynthetic("degraded,max_chars=8,heldout_fonts=0,text_sources=gb2312,fixed_text_fraction=0,"
                            "render_style=real,n=12", "train")
    probe = Image.new("RGB", (16, 16), "white")
    steps = {}
    for q in (30, 60):
        buf = io.BytesIO()
        probe.save(buf, format="JPEG", quality=q)
        steps[q] = _jpeg_luma_dc_step(buf.getvalue())
    for i in range(12):
        ex = src[i]
        assert ex["degraded"] and ex["image"][:2] == b"\xff\xd8"
        assert steps[60] <= _jpeg_luma_dc_step(ex["image"]) <= steps[30]


def test_unknown_style_is_refused():
    with pytest.raises(ValueError, match="render style"):
        render.style_options("fancy")
