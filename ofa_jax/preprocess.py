"""OCR image preprocessing, bit-identical to ModelScope's OFA OCR preprocessor.

ModelScope (``preprocessors/ofa/ocr_recognition.py``, ``ocr_resize``) does, for ``size=480``:

* convert to RGB with PIL's ``Image.convert('RGB')``: alpha is dropped, not composited (dark text on
  a transparent background of black pixels comes out black on black: composite such images onto
  white yourself first), a palette image's transparency is ignored, ``I;16``/``I``/``F`` values are clipped
  to 0..255 by PIL, not rescaled (a full-range 16-bit scan comes out almost white);
* text line: scale the longer side to ``size`` keeping the aspect ratio, the other side
  ``max(64, int(size * short / long))`` (truncated, at least 64), bicubic (PIL's, antialiased, which is
  what torchvision's functional ``resize`` calls on PIL images);
* document (``is_document``): resize to 64 x 1920, cut into four 64 x 480 strips and stack them
  top to bottom (256 x 480);
* pad to ``size x size`` by repeating the edge pixels, centred (the extra pixel goes to the bottom or
  right);
* ``ToTensor`` + ``Normalize(0.5, 0.5)``: ``(x / 255 - 0.5) / 0.5`` in float32.

:func:`resize_and_pad_uint8` stops before the normalisation (for input pipelines that ship uint8 and
normalise on the device); :func:`normalize_uint8` is the normalisation. :data:`NORMALIZE_LUT` holds
the reference's float for each of the 256 values. On a device, gather from it
(``jnp.asarray(NORMALIZE_LUT)[x]``) to get the same bits: arithmetic does not, because XLA turns
``x / 255`` into ``x * (1 / 255)``, which is 1 ulp off for about half of the values, jitted or not
(numpy's ``x / 255 * 2 - 1`` in float32 is exact).

Inputs (:func:`load_image`): a path (``str``/``os.PathLike``), encoded bytes, a PIL image or a numpy
array. Paths and bytes are decoded like ModelScope's ``load_image``: PIL, EXIF orientation applied, RGB.
A PIL image is only converted to RGB (ModelScope does not apply its EXIF orientation either). Arrays
must be ``uint8``, ``HxW`` (grey), ``HxWx1``, ``HxWx3`` (RGB) or ``HxWx4`` (RGBA, alpha dropped);
other dtypes (float in [0, 1]? in [0, 255]?) are refused rather than guessed: convert them yourself,
e.g. ``(x * 255).round().clip(0, 255).astype(np.uint8)``. Anything unreadable raises
:class:`ImageError` with a one-line message.

Awkward but readable inputs, decided deliberately (each is tested through ``python -m ofa_jax.decode``):
EXIF-rotated photos are turned upright (files and bytes only, like ModelScope); animated GIF/APNG/WebP
give their first frame; CMYK JPEGs are converted by PIL; palette and RGBA transparency is dropped, not
composited; 1x1 and extreme aspect ratios (50000x20) are resized like any other line; 16-bit and float
images are clipped to 0..255 like the reference, and because that usually whitens a real 16-bit scan,
:func:`load_image` then also issues an :class:`ImageWarning` (the decode CLI prints it as a ``warning:``
line). Images over PIL's decompression-bomb limit (~179 Mpixel) are refused with an ``ImageError``.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import Union

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "ImageError",
    "ImageInput",
    "ImageWarning",
    "NORMALIZE_LUT",
    "load_image",
    "ocr_resize",
    "resize_and_pad_uint8",
    "normalize_uint8",
    "preprocess_image",
]

ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, Image.Image, np.ndarray]

MIN_SIDE = 64  # the short side is never resized below this
DOCUMENT_SIZE = 480  # document mode: 1920 = 4 strips of 480, so it is defined for size 480 only
DOCUMENT_STRIPS = 4
DOCUMENT_HEIGHT = 64

# (x / 255 - 0.5) / 0.5 in float32 for x = 0..255: ModelScope's ToTensor + Normalize(0.5, 0.5).
NORMALIZE_LUT = ((np.arange(256, dtype=np.float32) / np.float32(255)) - np.float32(0.5)) / np.float32(0.5)
NORMALIZE_LUT.setflags(write=False)


class ImageError(ValueError):
    """An input that cannot be read as an image: ``ImageError(source, reason)``."""

    def __init__(self, source: object, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class ImageWarning(UserWarning):
    """A readable image whose preprocessing loses information (``ImageWarning(source, reason)``):
    16-bit or float values above 255 that PIL clips, as the reference does."""

    def __init__(self, source: object, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


# modes whose values PIL's convert('RGB') clips to 0..255 instead of rescaling
_CLIPPED_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _describe(img: object) -> str:
    if isinstance(img, (str, os.PathLike)):
        return os.fspath(img)
    if isinstance(img, (bytes, bytearray, memoryview)):
        return f"<{len(img)} bytes>"
    if isinstance(img, np.ndarray):
        return f"<array {img.dtype} {img.shape}>"
    return f"<{type(img).__name__}>"


def _one_line(exc: BaseException) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if len(msg) <= 200 else msg[:197] + "..."


def _clip_reason(im: Image.Image):
    """Why ``convert('RGB')`` loses this image's values (16-bit/float beyond 0..255), or None."""
    if im.mode not in _CLIPPED_MODES:
        return None
    try:
        lo, hi = im.getextrema()
    except Exception:  # let convert() report what is wrong with the data
        return None
    if lo < 0 or hi > 255:
        return (f"{im.mode} values {lo:g}..{hi:g} clipped to 0..255 as the reference does (not rescaled); "
                "the text is likely lost: convert the image to 8 bits first")
    return None


def _warn_clipped(source: object, reason) -> None:
    if reason is not None:
        warnings.warn(ImageWarning(source, reason), stacklevel=3)


def _decode(data: bytes, source: object) -> Image.Image:
    """Encoded bytes -> RGB PIL image, as ModelScope's ``LoadImage``: EXIF orientation, RGB.

    Animated images (GIF, APNG, WebP) give their first frame, as PIL's ``open`` does.
    """
    try:
        with warnings.catch_warnings():
            # Pillow warns about palette images with transparency; the reference ignores it too.
            warnings.simplefilter("ignore", UserWarning)
            with Image.open(io.BytesIO(data)) as im:
                im = ImageOps.exif_transpose(im)
                clipped = _clip_reason(im)
                out = im.convert("RGB")
    except Image.DecompressionBombError as e:
        raise ImageError(source, f"image too large ({_one_line(e)})") from None
    except Exception as e:  # Pillow raises many types for corrupt data (OSError, SyntaxError, ...)
        reason = "not a readable image" if isinstance(e, Image.UnidentifiedImageError) else f"corrupt image ({_one_line(e)})"
        raise ImageError(source, reason) from None
    _warn_clipped(source, clipped)
    return out


def _from_array(arr: np.ndarray, source: object) -> Image.Image:
    if arr.dtype != np.uint8:
        raise ImageError(source, f"array dtype must be uint8, got {arr.dtype} (scale and cast it first)")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ImageError(source, f"array must be HxW, HxWx1, HxWx3 or HxWx4, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(source, f"empty image {arr.shape[1]}x{arr.shape[0]}")
    return Image.fromarray(np.ascontiguousarray(arr)).convert("RGB")  # L, RGB or RGBA


def load_image(img: ImageInput) -> Image.Image:
    """Any supported input -> RGB PIL image (see the module docstring for the contract)."""
    source = _describe(img)
    if isinstance(img, Image.Image):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                out = img.convert("RGB")
        except Exception as e:
            raise ImageError(source, f"cannot convert mode {img.mode} to RGB: {_one_line(e)}") from None
        _warn_clipped(source, _clip_reason(img))
    elif isinstance(img, (str, os.PathLike)):
        try:
            with open(img, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ImageError(source, e.strerror or _one_line(e)) from None
        out = _decode(data, source)
    elif isinstance(img, (bytes, bytearray, memoryview)):
        out = _decode(bytes(img), source)
    elif isinstance(img, np.ndarray):
        out = _from_array(img, source)
    else:
        raise ImageError(source, "expected a path, bytes, a PIL image or a uint8 numpy array")
    if out.width == 0 or out.height == 0:
        raise ImageError(source, f"empty image {out.width}x{out.height}")
    return out


def ocr_resize(img: Image.Image, size: int = 480, document: bool = False) -> Image.Image:
    """RGB PIL image -> resized RGB PIL image (before padding), as ModelScope's ``ocr_resize``."""
    width, height = img.size
    if document:
        new_w, new_h = DOCUMENT_STRIPS * DOCUMENT_SIZE, DOCUMENT_HEIGHT
    elif width >= height:
        new_w, new_h = max(MIN_SIDE, size), max(MIN_SIDE, int(size * (height / width)))
    else:
        new_w, new_h = max(MIN_SIDE, int(size * (width / height))), max(MIN_SIDE, size)
    if (new_w, new_h) != (width, height):  # torchvision returns the image itself when sizes agree
        img = img.resize((new_w, new_h), Image.BICUBIC)
    if document:
        # The reference goes through ToTensor/ToPILImage here; x / 255 * 255 truncated is x again
        # for every uint8 x in float32 (checked against the reference), so this is a pure re-layout.
        a = np.asarray(img)
        a = np.concatenate(np.split(a, DOCUMENT_STRIPS, axis=1), axis=0)
        img = Image.fromarray(np.ascontiguousarray(a))
    return img


ImageSize = Union[int, "tuple[int, int]", str]


def image_hw(size: ImageSize) -> tuple[int, int]:
    """``480`` / ``(32, 384)`` / ``"32x384"`` -> ``(height, width)``."""
    if isinstance(size, str):
        parts = size.lower().replace(",", "x").split("x")
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"image size must be N or HxW, got {size!r}") from None
        size = vals[0] if len(vals) == 1 else tuple(vals)
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size):
            raise ValueError(f"image size must be N or (height, width), got {size!r}")
        return int(size[0]), int(size[1])
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool):
        raise TypeError(f"size must be an int or (height, width), got {type(size).__name__}")
    return int(size), int(size)


def _check_size(size: ImageSize, document: bool) -> tuple[int, int]:
    h, w = image_hw(size)
    if h == w and h < MIN_SIDE:
        raise ValueError(f"size must be >= {MIN_SIDE} (the reference never resizes below {MIN_SIDE}), got {h}")
    if min(h, w) < 16:
        raise ValueError(f"image sides must be >= 16 (one patch of the ResNet), got {h}x{w}")
    if document and (h, w) != (DOCUMENT_SIZE, DOCUMENT_SIZE):
        raise ValueError(f"document mode is defined for size {DOCUMENT_SIZE} only (4 strips of 480), got {h}x{w}")
    return h, w


def line_resize(img: Image.Image, height: int, width: int) -> Image.Image:
    """Rectangular inputs (``HxW``, our own models only): fit inside ``height x width`` keeping the
    aspect ratio (bicubic), so a line fills the height unless it is too long for the width. The
    released checkpoints expect the square rule of :func:`ocr_resize`; a model trained on a
    rectangle records it in its ``generation.json`` (``patch_image_size: [H, W]``)."""
    w0, h0 = img.size
    if w0 * height >= h0 * width:  # wider than the box: the width binds
        new_w, new_h = width, max(1, min(height, int(round(h0 * width / w0))))
    else:
        new_w, new_h = max(1, min(width, int(round(w0 * height / h0)))), height
    return img if (new_w, new_h) == (w0, h0) else img.resize((new_w, new_h), Image.BICUBIC)


def resize_and_pad_uint8(img: ImageInput, size: ImageSize = 480, document: bool = False) -> np.ndarray:
    """Image -> ``uint8`` array ``H x W x 3``: the reference's pixels before normalisation.

    ``size`` an int: the reference's square rule (bit-identical). ``(H, W)`` with ``H != W``:
    :func:`line_resize`, then the same centred edge padding.
    """
    h_out, w_out = _check_size(size, document)
    img = load_image(img)
    if h_out == w_out:
        resized = np.asarray(ocr_resize(img, h_out, document))
    else:
        resized = np.asarray(line_resize(img, h_out, w_out))
    h, w = resized.shape[:2]
    top, left = (h_out - h) // 2, (w_out - w) // 2
    out = np.pad(resized, ((top, h_out - h - top), (left, w_out - w - left), (0, 0)), mode="edge")
    assert out.shape == (h_out, w_out, 3), out.shape
    return out


def normalize_uint8(x: np.ndarray) -> np.ndarray:
    """``uint8`` pixels -> float32 in [-1, 1], bit-identical to ``ToTensor`` + ``Normalize(0.5, 0.5)``.

    In JAX use ``jnp.asarray(NORMALIZE_LUT)[x]``: ``x.astype(jnp.float32) / 255 * 2 - 1`` is compiled
    to a multiplication by ``1 / 255`` and differs by 1 ulp for about half of the values.
    """
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise TypeError(f"expected uint8, got {x.dtype}")
    return NORMALIZE_LUT[x]


def preprocess_image(img: ImageInput, size: ImageSize = 480, document: bool = False) -> np.ndarray:
    """Image -> float32 ``H x W x 3`` in [-1, 1] (HWC; the reference's tensor is CHW)."""
    return normalize_uint8(resize_and_pad_uint8(img, size, document))
