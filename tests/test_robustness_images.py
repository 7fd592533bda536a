"""Bad and awkward images through ``python -m ofa_jax.decode``: every case of issue 7 gives either a
result (checked against an independently built expectation) or one ``error: PATH: reason`` line; the
rest of the batch is decoded; the exit status says whether anything failed; never a traceback.

Decisions (documented in ``ofa_jax/preprocess.py`` and the README):
* EXIF orientation is applied to files and bytes (ModelScope's ``load_image`` does the same).
* Animated GIFs give their first frame.
* Palette/RGBA transparency is dropped (PIL ``convert('RGB')``, as the reference).
* 16-bit greyscale values are clipped to 0..255 (reference parity) and an ``ImageWarning`` says so.
"""
import contextlib
import io
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ofa_jax.decode import main as decode_main
from ofa_jax.modeldir import save_model_dir
from ofa_jax.preprocess import ImageError, ImageWarning, load_image, resize_and_pad_uint8
from ofa_jax.recognizer import Recognizer
from tools.convert_weights import state_dict_to_variables
from tools.convert_weights.convert import BUNDLED_VOCAB

from reference_weights import decode_case

SIZE = 128  # the model dir's patch_image_size: small, so that the CLI tests stay fast on a CPU


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    sd, _, meta, cfg = decode_case()
    variables, extras = state_dict_to_variables(sd, cfg)
    d = tmp_path_factory.mktemp("model")
    gen = dict(meta["settings"]["beam1"], patch_image_size=SIZE)
    save_model_dir(str(d), cfg, variables, BUNDLED_VOCAB, generation=gen, extras=extras)
    return str(d)


def _line(h=30, w=90, seed=0):
    """A text-line-like RGB array: light background, dark blocks, some noise (not symmetric)."""
    rng = np.random.default_rng(seed)
    a = np.full((h, w, 3), 230, np.uint8)
    for x in range(3, w - 6, 9):
        a[h // 4: 3 * h // 4, x:x + 5] = rng.integers(0, 80, 3)
    return np.clip(a.astype(int) + rng.integers(-10, 10, a.shape), 0, 255).astype(np.uint8)


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """name -> (path, expectation). Expectation: ("error", reason substring) or ("ok", RGB array the
    decoded image must equal, or None where only closeness/shape is checked separately)."""
    d = tmp_path_factory.mktemp("images")
    rgb = _line()
    out = {}

    def put(name, data, expect):
        p = d / name
        if isinstance(data, bytes):
            p.write_bytes(data)
        out[name] = (str(p), expect)

    put("a_ok.png", _encode(Image.fromarray(rgb), "PNG"), ("ok", rgb))
    put("b_zero_byte.png", b"", ("error", "not a readable image"))
    png = _encode(Image.fromarray(rgb), "PNG")
    put("c_truncated.png", png[: len(png) // 2], ("error", "truncated"))
    jpg = _encode(Image.fromarray(rgb), "JPEG", quality=95)
    put("d_truncated.jpg", jpg[: len(jpg) // 2], ("error", "truncated"))
    put("e_text.jpg", b"this is a text file, not a JPEG\n", ("error", "not a readable image"))
    (d / "f_directory.png").mkdir()  # given explicitly: expanded; empty, so reported
    out["f_directory.png"] = (str(d / "f_directory.png"), ("error", "directory"))
    out["g_missing.png"] = (str(d / "g_missing.png"), ("error", "No such file"))
    put("h_cmyk.jpg", _encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95), ("ok", None))
    # 16-bit greyscale: half the values fit in 8 bits, the rest are clipped (reference) + a warning
    g16 = (np.arange(30 * 90).reshape(30, 90) % 600).astype(np.uint16)
    put("i_16bit.png", _encode(Image.fromarray(g16), "PNG"),
        ("ok", np.repeat(np.minimum(g16, 255).astype(np.uint8)[..., None], 3, -1)))
    pal = Image.fromarray(rgb).quantize(16)
    put("j_palette_transparent.png", _encode(pal, "PNG", transparency=0),
        ("ok", np.asarray(pal.convert("RGB"))))  # the palette colours; the transparency is ignored
    f0, f1 = Image.fromarray(rgb).quantize(16), Image.fromarray(255 - rgb).quantize(16)
    put("k_animated.gif", _encode(f0, "GIF", save_all=True, append_images=[f1], duration=100, loop=0),
        ("ok", np.asarray(f0.convert("RGB"))))
    put("l_1x1.png", _encode(Image.fromarray(rgb[:1, :1]), "PNG"), ("ok", rgb[:1, :1]))
    wide = np.tile(rgb[:20, :90], (1, 556, 1))[:, :50000]
    put("m_50000x20.png", _encode(Image.fromarray(wide), "PNG"), ("ok", wide))
    tall = np.ascontiguousarray(wide.transpose(1, 0, 2))
    put("n_20x50000.png", _encode(Image.fromarray(tall), "PNG"), ("ok", tall))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display" (a phone held upright)
    put("o_exif_rotated.png", _encode(Image.fromarray(rgb), "PNG", exif=exif.tobytes()),
        ("ok", np.rot90(rgb, k=-1)))
    exif8 = Image.Exif()
    exif8[0x0112] = 8  # 90 degrees counter-clockwise
    put("p_exif_rotated.jpg", _encode(Image.fromarray(rgb), "JPEG", quality=95, exif=exif8.tobytes()), ("ok", None))
    return out, rgb


def test_each_case_decodes_as_decided(cases):
    out, rgb = cases
    for name, (path, (kind, expect)) in out.items():
        if kind == "error":
            with pytest.raises(ImageError) as info:
                load_image(path)
            msg = str(info.value)
            assert msg.startswith(path + ": ") and expect in msg and "\n" not in msg, (name, msg)
            continue
        with pytest.warns(ImageWarning, match="clipped") if "16bit" in name else contextlib.nullcontext():
            got = np.asarray(load_image(path))
        if expect is not None:
            assert got.shape == expect.shape and np.array_equal(got, expect), name
    # lossy JPEGs: close to the source pixels, CMYK converted back, EXIF 8 = rotated counter-clockwise
    cmyk = np.asarray(load_image(out["h_cmyk.jpg"][0])).astype(int)
    assert cmyk.shape == rgb.shape and np.abs(cmyk - rgb).mean() < 8
    rot = np.asarray(load_image(out["p_exif_rotated.jpg"][0])).astype(int)
    assert rot.shape == (90, 30, 3) and np.abs(rot - np.rot90(rgb, k=1)).mean() < 8
    # the 1x1 image becomes a uniform square of its one colour
    one = resize_and_pad_uint8(out["l_1x1.png"][0], SIZE)
    assert (one == rgb[0, 0]).all()


def test_cli_decodes_the_good_reports_the_bad(model_dir, cases, capsys):
    out, _ = cases
    paths = [p for p, _ in out.values()]
    rc = decode_main(["--model", model_dir, "--batch-size", "4", "--json", *paths])
    stdout, stderr = capsys.readouterr()
    assert rc == 1
    assert "Traceback" not in stderr and "Traceback" not in stdout
    rows = [json.loads(line) for line in stdout.strip().splitlines()]
    assert [r["path"] for r in rows] == paths  # every input answered, in order
    errors = [l for l in stderr.splitlines() if l.startswith("error: ")]
    bad = [n for n, (_, (k, _)) in out.items() if k == "error"]
    assert len(errors) == len(bad)
    for name, line in zip(bad, errors):
        path, (_, reason) = out[name]
        assert line.startswith(f"error: {path}: ") and reason in line
    warn = [l for l in stderr.splitlines() if l.startswith("warning: ")]
    assert len(warn) == 1 and "i_16bit.png" in warn[0] and "clipped" in warn[0]
    by_name = {os.path.basename(r["path"]): r for r in rows}
    for name, (path, (kind, expect)) in out.items():
        r = by_name[name]
        assert ("error" in r) == (kind == "error"), (name, r)
        if kind == "ok":
            assert isinstance(r["text"], str) and np.isfinite(r["score"])
    assert "warnings" in by_name["i_16bit.png"]

    # the good files decode exactly like their independently built arrays (same text, same score)
    rec = Recognizer.from_pretrained(model_dir, batch_size=4, compilation_cache=False)
    lossless = [n for n, (_, (k, e)) in out.items() if k == "ok" and e is not None]
    ref = rec([out[n][1][1] for n in lossless])
    for n, r in zip(lossless, ref):
        assert by_name[n]["text"] == r.text, n
        assert by_name[n]["score"] == pytest.approx(r.score, abs=1e-5), n


def test_cli_directory_argument_and_exit_status(model_dir, cases, tmp_path, capsys):
    out, rgb = cases
    good = tmp_path / "good"
    good.mkdir()
    (good / "x.png").write_bytes(_encode(Image.fromarray(rgb), "PNG"))
    (good / "notes.txt").write_text("not an image extension: skipped")
    assert decode_main(["--model", model_dir, str(good)]) == 0
    o, e = capsys.readouterr()
    assert o.startswith(str(good / "x.png") + "\t") and e.strip() == ""
    # a directory with a broken image among good ones: all answered, status 1
    (good / "y.jpg").write_bytes(b"")
    assert decode_main(["--model", model_dir, str(good)]) == 1
    o, e = capsys.readouterr()
    assert len(o.strip().splitlines()) == 1 and e.strip() == f"error: {good / 'y.jpg'}: not a readable image"
    # a directory named like an image inside a scanned directory: one error line
    (good / "z.png").mkdir()
    assert decode_main(["--model", model_dir, str(good)]) == 1
    o, e = capsys.readouterr()
    assert len(o.strip().splitlines()) == 1 and e.strip().splitlines()[-1] == f"error: {good / 'z.png'}: Is a directory"
    # an empty directory given explicitly: reported, not silently skipped
    empty = tmp_path / "empty"
    empty.mkdir()
    assert decode_main(["--model", model_dir, str(empty), str(good / "x.png")]) == 1
    o, e = capsys.readouterr()
    assert e.strip().startswith(f"error: {empty}: no image files (.png, ") and len(o.strip().splitlines()) == 1


# -- property-based: preprocessing never fails on a readable image, and bytes never crash it ---------

_FORMATS = {"PNG": ["RGB", "L", "LA", "P", "RGBA", "I;16", "1"], "JPEG": ["RGB", "L", "CMYK"],
            "GIF": ["P", "L"], "BMP": ["RGB", "L", "P"], "TIFF": ["RGB", "L", "CMYK", "I;16", "F", "RGBA"],
            "WEBP": ["RGB", "RGBA"]}


def _image(mode, w, h, seed):
    rng = np.random.default_rng(seed)
    if mode in ("I;16", "F"):
        a = rng.integers(0, 1000, (h, w)).astype(np.uint16 if mode == "I;16" else np.float32)
        return Image.fromarray(a)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt_mode=st.sampled_from([(f, m) for f, ms in _FORMATS.items() for m in ms]),
       w=st.one_of(st.integers(1, 64), st.integers(65, 3000)), h=st.integers(1, 200),
       transpose=st.booleans(), size=st.sampled_from([64, 128, 480]), seed=st.integers(0, 2**31 - 1))
def test_property_encoded_images_of_any_size_and_mode(fmt_mode, w, h, transpose, size, seed):
    fmt, mode = fmt_mode
    if transpose:
        w, h = h, w
    data = _encode(_image(mode, w, h, seed), fmt)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageWarning)  # 16-bit/float over 255: clipped, tested above
        u8 = resize_and_pad_uint8(data, size)
        img = load_image(data)
    assert u8.shape == (size, size, 3) and u8.dtype == np.uint8
    assert img.size == (w, h) and img.mode == "RGB"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(sorted(_FORMATS)), seed=st.integers(0, 2**31 - 1),
       cut=st.floats(0.0, 1.0), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=8))
def test_property_corrupt_bytes_give_image_error_or_an_image(fmt, seed, cut, flips):
    """Truncated and bit-flipped files of every format: an ``ImageError`` with one line naming the
    source, or a valid RGB image; never another exception."""
    data = bytearray(_encode(_image(_FORMATS[fmt][0], 37, 23, seed), fmt))
    for pos, val in flips:
        data[int(pos * (len(data) - 1))] = val
    data = bytes(data[: int(round(cut * len(data)))])
    try:
        u8 = resize_and_pad_uint8(data, 64)
    except ImageError as e:
        assert str(e).startswith(f"<{len(data)} bytes>: ") and "\n" not in str(e)
    else:
        assert u8.shape == (64, 64, 3) and u8.dtype == np.uint8
