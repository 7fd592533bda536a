"""Offline rendering of single text lines for the synthetic corpus.

``RenderOptions`` also has printed-text looks that are off by default (coloured ink and backgrounds,
underline/strike-through, uneven lighting); ``style_options("real")`` turns them on, and
``ocr_synthetic_zh``'s ``render_style=real`` passes them.

Fonts come from the machine (Debian packages such as ``fonts-wqy-zenhei``, ``fonts-wqy-microhei``,
``fonts-arphic-ukai``, ``fonts-arphic-uming``, ``fonts-noto-cjk``, ``fonts-lxgw-wenkai``), from the
PyPI wheel ``paperang-p2-fonts-cjk`` (wqy-microhei), from ``$OFA_JAX_FONT_DIRS`` (``os.pathsep``
separated directories) or are given explicitly. The special name ``"pil-default"`` is Pillow's
built-in Latin-only font (used by tests on machines without any CJK font).

All randomness comes from the ``numpy.random.Generator`` passed in, so a (seed, index) pair always
renders the same image on the same font files and Pillow version.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_DIRS_ENV = "OFA_JAX_FONT_DIRS"
PIL_DEFAULT = "pil-default"
_FONT_SUFFIXES = (".ttf", ".ttc", ".otf")
_SYSTEM_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts")
# Characters a font must draw to count as a CJK font (common level-1 hanzi and a full-width comma).
_CJK_PROBE = "的一是了我不人在他有这中大来上国个到说们为子和你地出道也时年，"


def _pip_font_files() -> list[Path]:
    try:
        import paperang_p2_fonts_cjk  # noqa: F401  (optional: pip install paperang-p2-fonts-cjk)
    except ImportError:
        return []
    root = Path(paperang_p2_fonts_cjk.__file__).parent
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in _FONT_SUFFIXES)


def _dir_font_files(dirs: Sequence[str | os.PathLike]) -> list[Path]:
    out = []
    for d in dirs:
        d = Path(d)
        if d.is_dir():
            out.extend(p for p in d.rglob("*") if p.suffix.lower() in _FONT_SUFFIXES and p.is_file())
    return sorted(out)


def font_key(path: str | os.PathLike) -> str:
    """A machine-independent name for a font file (its file name)."""
    return PIL_DEFAULT if str(path) == PIL_DEFAULT else Path(path).name


# Family-name suffixes of the simplified-Chinese face in a font collection (Noto CJK "SC", AR PL "CN").
_SIMPLIFIED_FACE_TAGS = ("SC", "CN", "GB")


@functools.lru_cache(maxsize=64)
def face_index(path: str) -> int:
    """Which face of a font file to draw with: the simplified-Chinese one where a collection has it.

    Noto's ``Noto*CJK-*.ttc`` open on their Japanese face (index 0), whose glyphs differ from the
    Chinese ones in 42% of GB2312 hanzi (``bench/font_faces.py``): mostly stroke details, but also forms
    of common characters (说, 骨, 直, 令, 这, 真); a model trained on them misreads those more often in
    Chinese fonts. Single-face files and collections without such a face (WenQuanYi) use face 0.
    """
    if path == PIL_DEFAULT or not str(path).lower().endswith(".ttc"):
        return 0
    for i in range(16):
        try:
            family = ImageFont.truetype(path, 16, index=i).getname()[0] or ""
        except OSError:
            break
        if family.rpartition(" ")[2] in _SIMPLIFIED_FACE_TAGS:
            return i
    return 0


@functools.lru_cache(maxsize=256)
def load_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    if path == PIL_DEFAULT:
        return ImageFont.load_default(size)
    return ImageFont.truetype(path, size, index=face_index(path))


@functools.lru_cache(maxsize=64)
def _notdef_signature(path: str) -> tuple:
    font = load_font(path, 32)
    return _glyph_signature(font, "\U0010FFFD")  # a private-use code point no font maps


def _glyph_signature(font, ch: str) -> tuple:
    mask = font.getmask(ch)
    return (mask.size, bytes(mask))


@functools.lru_cache(maxsize=200_000)
def font_has_char(path: str, ch: str) -> bool:
    """True if the font draws `ch` with a glyph of its own (not the .notdef box)."""
    if ch.isspace():
        return True
    font = load_font(path, 32)
    sig = _glyph_signature(font, ch)
    return sig != _notdef_signature(path) and sig[0][0] > 0


def font_covers(path: str, text: str) -> bool:
    return all(font_has_char(path, ch) for ch in text)


def is_cjk_font(path: str) -> bool:
    try:
        return font_covers(path, _CJK_PROBE)
    except OSError:
        return False


def find_cjk_fonts(extra_dirs: Sequence[str | os.PathLike] = ()) -> list[str]:
    """CJK-capable font files found offline, sorted by file name, one file per name.

    Looks in ``extra_dirs``, ``$OFA_JAX_FONT_DIRS``, the ``paperang-p2-fonts-cjk`` wheel and the
    system font directories.
    """
    env_dirs = [d for d in os.environ.get(FONT_DIRS_ENV, "").split(os.pathsep) if d]
    candidates = (_dir_font_files(list(extra_dirs) + env_dirs) + _pip_font_files()
                  + _dir_font_files(_SYSTEM_FONT_DIRS))
    by_name: dict[str, str] = {}
    for p in candidates:
        if p.name not in by_name and is_cjk_font(str(p)):
            by_name[p.name] = str(p)
    return [by_name[k] for k in sorted(by_name)]


# ----------------------------------------------------------------------------- rendering

@dataclasses.dataclass(frozen=True)
class RenderOptions:
    min_font_size: int = 24
    max_font_size: int = 48
    degrade: bool = False  # blur, noise, JPEG, rotation/perspective, textured backgrounds, low contrast
    jpeg_quality: tuple[int, int] = (25, 80)
    max_rotation_deg: float = 3.0
    # Printed-text looks beyond the above (each a probability per line; 0 draws nothing, so lines of the
    # defaults render exactly as before). See `style_options` for the named sets.
    colour: float = 0.0  # coloured ink on a tinted or saturated background, light text on dark included
    rule: float = 0.0  # an underline or a strike-through across the text
    lighting: float = 0.0  # degraded lines only: uneven lighting (a linear ramp or a spot/vignette)


# Named option sets for `ocr_synthetic_zh`'s ``render_style``: "classic" is the shipped model's data,
# "real" adds colour, rules and uneven lighting, and JPEG at quality 30-60 for degraded lines.
STYLES = {"classic": {}, "real": {"colour": 0.35, "rule": 0.12, "lighting": 0.5, "jpeg_quality": (30, 60)}}


def style_options(name: str) -> dict:
    """`RenderOptions` fields of a named style (``classic``, ``real``)."""
    if name not in STYLES:
        raise ValueError(f"unknown render style {name!r} ({', '.join(STYLES)})")
    return dict(STYLES[name])


def _background(rng: np.random.Generator, h: int, w: int, degrade: bool) -> np.ndarray:
    base = rng.uniform(200, 255) if not degrade else rng.uniform(120, 255)
    tint = rng.uniform(-12, 12, size=3) if degrade else np.zeros(3)
    bg = np.full((h, w, 3), base, np.float32) + tint
    if degrade and rng.random() < 0.6:  # smooth gradient
        ramp = np.linspace(0, rng.uniform(-40, 40), w, dtype=np.float32)
        bg += ramp[None, :, None]
    if degrade and rng.random() < 0.5:  # paper-like texture: blurred noise
        tex = rng.normal(0, rng.uniform(4, 14), size=(h, w)).astype(np.float32)
        tex = np.asarray(Image.fromarray(np.clip(tex + 128, 0, 255).astype(np.uint8))
                         .filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0))), np.float32) - 128
        bg += tex[..., None]
    return bg


def _hsv_colour(h: float, s: float, v: float) -> np.ndarray:
    """An RGB colour (0..255 floats) from hue/saturation/value in [0, 1]."""
    i, f = int(h * 6) % 6, h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.asarray(rgb, np.float32) * 255


def _colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(background, ink) of a coloured line: dark or coloured ink on a pale tint, or light text on a
    saturated dark background (signs, banners, buttons); luminances at least ~100 apart."""
    hue = float(rng.random())
    if rng.random() < 0.6:
        bg = _hsv_colour(hue, rng.uniform(0.05, 0.35), rng.uniform(0.85, 1.0))
        ink = _hsv_colour(float(rng.random()), rng.uniform(0.0, 1.0), rng.uniform(0.0, 0.45))
    else:
        bg = _hsv_colour(hue, rng.uniform(0.5, 1.0), rng.uniform(0.3, 0.6))
        ink = _hsv_colour(float(rng.random()), rng.uniform(0.0, 0.25), rng.uniform(0.92, 1.0))
    return bg, ink


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of RGB values (last axis)."""
    return np.asarray(rgb, np.float32)[..., :3] @ np.asarray([0.299, 0.587, 0.114], np.float32)


def _lighting(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A multiplicative illumination field in (0, 1]: a linear ramp in a random direction (light from
    one side), or a spot of light with darker surroundings; the darkest point is 0.45-0.8."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = float(rng.uniform(0.2, 0.55))
    if rng.random() < 0.5:
        a = float(rng.uniform(0, 2 * np.pi))
        d = np.cos(a) * xx / max(w - 1, 1) + np.sin(a) * yy / max(h - 1, 1)
        d = (d - d.min()) / max(float(d.max() - d.min()), 1e-6)
    else:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        d = np.hypot((xx - cx) / max(w, 1), (yy - cy) / max(h, 1) * 0.5)
        d = d / max(float(d.max()), 1e-6)
    return (1.0 - depth * d)[..., None]


def _perspective_coeffs(src, dst):
    """Coefficients for PIL's Image.transform(PERSPECTIVE) mapping output `dst` -> input `src`."""
    a = []
    for (x, y), (u, v) in zip(dst, src):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    b = np.asarray(src, np.float64).reshape(8)
    return np.linalg.solve(np.asarray(a, np.float64), b).tolist()


def render_line(text: str, font_path: str, rng: np.random.Generator,
                options: RenderOptions = RenderOptions()) -> Image.Image:
    """Render one text line to an RGB image (tight-ish crop with random margins)."""
    size = int(rng.integers(options.min_font_size, options.max_font_size + 1))
    font = load_font(font_path, size)
    left, top, right, bottom = font.getbbox(text)
    tw, th = max(1, right - left), max(1, bottom - top)
    mx = int(rng.integers(2, max(3, size // 2)))
    my = int(rng.integers(2, max(3, size // 3)))
    w, h = tw + 2 * mx, th + 2 * my
    bg = _background(rng, h, w, options.degrade)
    contrast = rng.uniform(40, 110) if options.degrade and rng.random() < 0.3 else rng.uniform(150, 230)
    ink = np.clip(bg.mean() - contrast + rng.uniform(-10, 10, size=3), 0, 255)
    if options.colour and rng.random() < options.colour:
        paper, ink = _colour_pair(rng)
        bg = bg - bg.mean(axis=(0, 1)) + paper  # keep the gradient/texture, change the colour
        if contrast < 150:  # a low-contrast draw stays low contrast: ink moved toward the paper
            ink = paper + (ink - paper) * (contrast / 200.0)

    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    draw.text((mx - left, my - top), text, font=font, fill=255)
    if options.rule and rng.random() < options.rule:
        thick = max(1, int(round(size * rng.uniform(0.04, 0.08))))
        # underline just below the glyphs' box, or a strike-through across its middle
        y = my + th + max(1, size // 12) if rng.random() < 0.65 else my + th // 2
        y = min(y, h - thick)
        draw.rectangle((mx, y, mx + tw - 1, y + thick - 1), fill=255)
    alpha = np.asarray(mask, np.float32)[..., None] / 255.0
    img = bg * (1 - alpha) + ink * alpha
    if options.degrade and options.lighting and rng.random() < options.lighting:
        img = img * _lighting(rng, h, w)
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")

    if not options.degrade:
        return out

    fill = tuple(int(c) for c in np.clip(bg.mean(axis=(0, 1)), 0, 255))
    if rng.random() < 0.5:
        angle = float(rng.uniform(-options.max_rotation_deg, options.max_rotation_deg))
        out = out.rotate(angle, resample=Image.BICUBIC, expand=True, fillcolor=fill)
    if rng.random() < 0.3:
        w, h = out.size
        # Corners move outwards only, so no ink is cut off at the borders.
        outward = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)])
        j = rng.uniform(0, 0.05, size=(4, 2)) * outward * np.array([w, h])
        dst = [(0, 0), (w, 0), (w, h), (0, h)]
        src = [(x + dx, y + dy) for (x, y), (dx, dy) in zip(dst, j)]
        out = out.transform((w, h), Image.PERSPECTIVE, _perspective_coeffs(src, dst),
                            resample=Image.BICUBIC, fillcolor=fill)
    if rng.random() < 0.5:
        out = out.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.3))))
    if rng.random() < 0.5:
        arr = np.asarray(out, np.float32) + rng.normal(0, rng.uniform(3, 15), size=(out.size[1], out.size[0], 1))
        out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    return out


def encode_image(img: Image.Image, fmt: str, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    if fmt.upper() in ("JPEG", "JPG"):
        img.save(buf, format="JPEG", quality=int(quality))
    else:
        img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
