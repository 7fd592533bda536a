"""Generate the tokenizer and image-preprocessing parity fixtures from ModelScope's PyTorch OFA.

Runs in the *reference* environment (ModelScope 1.40.2, transformers 4.x, torch CPU), not in ofa-jax's:

    bash tools/reference/setup_reference_env.sh .venv-reference   # build the reference env once
    .venv-reference/bin/python tools/reference/make_text_fixtures.py            # writes tests/fixtures/
    .venv-reference/bin/python tools/reference/make_text_fixtures.py --check    # regenerate, compare only

Everything is generated deterministically from ``--seed`` (default 0); rerunning gives byte-identical
fixtures. ~5 minutes on 2 cores (the reference tokenizer needs ~12 ms per string: it matches 9192
added tokens with one big regex at every character). Outputs, all under ``tests/fixtures/``:

``tokenizer_parity.jsonl.gz``
    one JSON object per line:
    ``{"kind": "encode", "text", "ids"}`` ids of ``OFATokenizerZH(text, add_special_tokens=False)``
    (>= 10k strings: GB2312 Chinese, Latin, digits, ASCII/CJK punctuation, full-width forms, emoji
    (also ZWJ sequences, skin tones, emoji newer than CPython's Unicode tables), rare CJK extensions,
    other scripts, combining marks, whitespace and control characters, special-token look-alikes,
    words over 100 characters);
    ``{"kind": "encode_trunc", "text", "max_length", "ids"}`` ModelScope's ``tokenize_text`` truncation;
    ``{"kind": "decode", "ids", "decoded", "ocr"}``: ``batch_decode(..., skip_special_tokens=True)``
    and the OCR model's post-processing (``.strip()`` then ``OfaForAllTasks.detokenizer``) on id
    sequences: 4000 of the encodings above wrapped in bos/eos/pad, and 3000 random sequences over all
    id ranges.
``tokenizer_codepoints.json``
    every code point U+0000..U+10FFFF (surrogates excluded), in blocks of 4096: the SHA-256 of the
    int32 ids of the reference's basic+WordPiece tokenisation of ``"x" + c + "Ab "`` for each ``c`` of
    the block, concatenated (lowercased per character first, as ``tokenize`` does; the added-token
    matching is skipped here because it cannot fire on these strings, and it costs 12 ms a string).
    Also CPython's Unicode version and its unassigned code points: the reference drops unassigned
    characters, so its ids depend on the Python it runs on.
``preprocess_parity.json``
    the test images are not stored: :func:`image_inputs` regenerates them (34 shapes from 1x1 to
    10000x30 and 3000x2000, in modes RGB L LA P (transparent index) P (alpha table) RGBA CMYK I;16 I F 1,
    encoded as PNG or TIFF; plus small JPEGs with EXIF orientations, stored base64 here). For each
    input the SHA-256 of what PIL decodes from it; for each case the input, how it is fed (``pil``:
    ``Image.open`` of the bytes, passed as a PIL image; ``path``: a file path, so ModelScope's
    ``load_image`` decodes it, EXIF orientation included), patch size, document mode and the
    reference output: SHA-256 of its float32 HWC bytes, SHA-256 of the uint8 pixels it is the
    normalisation of, a few sampled pixels (for failure messages), or the error it raised. Also the
    reference's normalisation of every uint8 value (``normalize_lut_hex``, float32 little-endian).

The reference output is checked here to be exactly the normalisation of a uint8 image (so the uint8
hash is meaningful); the script fails otherwise.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import inspect
import io
import json
import logging
import os
import random
import re
import shutil
import sys
import tempfile
import types

import numpy as np
from PIL import Image, ImageDraw

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCAB = os.path.join(ROOT, "ofa_jax", "assets", "vocab_zh.txt")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")

CODEPOINT_BLOCK = 4096


# --------------------------------------------------------------------------------------------------
# reference objects
# --------------------------------------------------------------------------------------------------


def make_model_dir(tmp: str, patch_image_size: int = 480, is_document: bool = False) -> str:
    """A model dir with just what ModelScope's OFA OCR preprocessor reads."""
    d = os.path.join(tmp, f"model_{patch_image_size}_{int(is_document)}")
    os.makedirs(d, exist_ok=True)
    shutil.copy(VOCAB, os.path.join(d, "vocab.txt"))
    model = {
        "type": "ofa",
        "language": "zh",
        "patch_image_size": patch_image_size,
        "max_image_size": patch_image_size,
        "beam_search": {"beam_size": 5, "max_len_b": 64, "min_len": 1, "no_repeat_ngram_size": 0},
    }
    if is_document:
        model["is_document"] = True
    cfg = {"framework": "pytorch", "task": "ocr-recognition", "model": model,
           "pipeline": {"type": "ofa-ocr-recognition"}}
    with open(os.path.join(d, "configuration.json"), "w") as f:
        json.dump(cfg, f)
    return d


def reference_tokenizer(model_dir: str):
    """OFATokenizerZH exactly as ModelScope's OFA preprocessors build it."""
    from modelscope.models.multi_modal.ofa import OFATokenizerZH

    tok = OFATokenizerZH.from_pretrained(model_dir)
    tok.add_tokens(["<code_{}>".format(i) for i in range(8192)])
    tok.add_tokens(["<bin_{}>".format(i) for i in range(1000)])
    assert len(tok) == 30325, len(tok)
    return tok


def reference_detokenizer():
    """``OfaForAllTasks.detokenizer`` with the regex its ``__init__`` compiles (read from its source,
    so that building a whole model is not needed)."""
    from modelscope.models.multi_modal.ofa_for_all_tasks import OfaForAllTasks

    src = inspect.getsource(OfaForAllTasks.__init__)
    m = re.search(r"pattern_str = (['\"].*['\"])\n", src)
    assert m, "pattern_str not found in OfaForAllTasks.__init__"
    fake_self = types.SimpleNamespace(pattern=re.compile(eval(m.group(1))))
    return lambda text: OfaForAllTasks.detokenizer(fake_self, text)


# --------------------------------------------------------------------------------------------------
# text corpus
# --------------------------------------------------------------------------------------------------


def gb2312_chars() -> list[str]:
    out = []
    for hi in range(0xB0, 0xF8):
        for lo in range(0xA1, 0xFF):
            try:
                out.append(bytes([hi, lo]).decode("gb2312"))
            except UnicodeDecodeError:
                pass
    return out


def _chars(*ranges: tuple[int, int]) -> list[str]:
    return [chr(c) for a, b in ranges for c in range(a, b + 1) if not 0xD800 <= c < 0xE000]


LATIN_UPPER = _chars((0x41, 0x5A))
LATIN_LOWER = _chars((0x61, 0x7A))
DIGITS = _chars((0x30, 0x39))
ASCII_PUNCT = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
CJK_PUNCT = list("，。！？、；：“”‘’（）《》【】〔〕…—·～「」『』〈〉﹏￥％＃＠")
FULLWIDTH = _chars((0xFF01, 0xFF5E), (0xFFE0, 0xFFE6))
EMOJI = _chars((0x1F300, 0x1F64F), (0x1F680, 0x1F6FF), (0x1F900, 0x1F9FF), (0x2600, 0x26FF)) + [
    "👍🏽", "👨‍👩‍👧", "❤️", "🇨🇳", "1️⃣", "🫠", "🪿", "🩷", "\U0001FA75", "\U0001FAE8"]  # the last: Unicode 15
RARE_CJK = _chars((0x3400, 0x4DBF), (0x20000, 0x2000F + 400), (0x2A700, 0x2A740), (0x2B740, 0x2B760),
                  (0x2B820, 0x2B840), (0x30000, 0x30040), (0xF900, 0xFAD9), (0x2F800, 0x2F840),
                  (0x9FF0, 0x9FFF), (0x2E80, 0x2EF3), (0x2F00, 0x2FD5), (0x3190, 0x31FF))
OTHER_SCRIPTS = _chars((0xC0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x5FF), (0x600, 0x6FF),
                       (0x900, 0x97F), (0xE00, 0xE7F), (0x3040, 0x30FF), (0xAC00, 0xAC80), (0x1100, 0x1120),
                       (0x1E00, 0x1EFF), (0x2100, 0x218F), (0x2190, 0x21FF), (0x2200, 0x22FF), (0x2460, 0x24FF),
                       (0x2500, 0x257F), (0x3200, 0x32FF), (0x3300, 0x33FF), (0xFB00, 0xFB4F), (0xFE30, 0xFE6F),
                       (0x1D400, 0x1D4FF), (0xE000, 0xE010), (0xF0000, 0xF0004))
COMBINING = _chars((0x300, 0x36F), (0x1AB0, 0x1ABE), (0x20D0, 0x20F0), (0x3099, 0x309A))
WHITESPACE = [" ", "  ", "\t", "\n", "\r", "\r\n", "\u3000", "\u00a0", "\u2028", "\u2029", "\u200b", "\ufeff",
              "\u2002", "\u202f", "\u0085", "\x0b", "\x0c", "\x1c", "\u180e", "\u1680"]
CONTROL = ["\x00", "\x01", "\x07", "\x1b", "\x7f", "\x9f", "\u200d", "\u200e", "\u2066", "\ufffd", "\U000E0001",
           "\U000E0041", "\ufff0", "\U0001FFFF", "\U0010FFFD", "\u0378", "\u08ff"]
SPECIAL_LIKE = ["<s>", "</s>", "<pad>", "<unk>", "<mask>", "<S>", "</S>", "<PAD>", "<Mask>", "<code_0>",
                "<code_8191>", "<code_8192>", "<code_01>", "<CODE_77>", "<bin_0>", "<bin_999>", "<bin_1000>",
                "<Bin_5>", "<code_>", "<code_12", "code_3>", "<<s>>", "<s></s>", "[UNK]", "[CLS]", "[SEP]",
                "[PAD]", "[MASK]", "[unused1]", "<\x00s>", "< s >", "<s >", "##", "##a", "#", "<T>", "<S>"]
WORDS = ["hello", "World", "OCR", "OFA", "ModelScope", "JAX", "PyTorch", "iPhone", "COVID-19", "e-mail",
         "don't", "I'm", "naïve", "café", "Straße", "İstanbul", "ΣΟΦΙΑ", "ΟΔΟΣ", "Ǆemal", "ﬁnal", "Ⅻ", "№",
         "www.example.com", "https://a.b/c?d=1&e=2", "user@mail.cn", "3.14159", "1,234,567", "50%",
         "¥100", "$9.99", "2023-10-01", "12:30", "No.7", "A4", "H2O", "CO₂", "x²", "½", "™", "©", "®"]


def make_corpus(rng: random.Random, n: int) -> list[str]:
    zh = gb2312_chars()
    pools = [
        (zh, 10), (LATIN_UPPER, 2), (LATIN_LOWER, 3), (DIGITS, 2), (ASCII_PUNCT, 2), (CJK_PUNCT, 2),
        (FULLWIDTH, 2), (EMOJI, 1), (RARE_CJK, 1), (OTHER_SCRIPTS, 1), (COMBINING, 1), (WHITESPACE, 2),
        (CONTROL, 1), (SPECIAL_LIKE, 1), (WORDS, 2),
    ]
    lists, weights = zip(*pools)
    out: list[str] = []
    # 1. elements of every pool alone (all of the small pools, 400 of each big one)
    for pool in lists:
        out.extend(pool if len(pool) <= 400 else rng.sample(pool, 400))
    # 2. n random mixtures: a few dominant pools per string, like real text lines
    for _ in range(n):
        style = rng.random()
        length = rng.choice([1, 2, 3, 5, 8, 12, 20, 30, 50])
        if style < 0.3:  # Chinese text line with some punctuation / digits / Latin
            parts = [rng.choice(zh) if rng.random() < 0.8 else rng.choice(rng.choice(lists)) for _ in range(length)]
        elif style < 0.45:  # Latin words with spaces and punctuation, mixed case
            parts = []
            for _ in range(max(1, length // 4)):
                w = "".join(rng.choice(LATIN_LOWER + LATIN_UPPER + DIGITS) for _ in range(rng.randint(1, 12)))
                parts.append(w)
                parts.append(rng.choice([" ", " ", ", ", ". ", "-", "", "'s ", "!"]))
        elif style < 0.6:  # full-width / CJK punctuation heavy
            parts = [rng.choice(rng.choice([FULLWIDTH, CJK_PUNCT, zh, DIGITS])) for _ in range(length)]
        elif style < 0.7:  # one long "word"
            k = rng.choice([99, 100, 101, 150])
            alphabet = rng.choice([LATIN_LOWER, DIGITS, FULLWIDTH, LATIN_LOWER + DIGITS])
            parts = ["".join(rng.choice(alphabet) for _ in range(k))]
        else:  # anything goes
            parts = [rng.choice(rng.choices(lists, weights)[0]) for _ in range(length)]
        s = "".join(parts)
        if rng.random() < 0.15:
            s = rng.choice(WHITESPACE) + s + rng.choice(WHITESPACE)
        out.append(s)
    return out


def random_id_sequences(rng: random.Random, n: int) -> list[list[int]]:
    ranges = [(0, 3), (4, 110), (111, 21131), (21132, 21132), (21133, 29324), (29325, 30324),
              (30325, 30400), (8000, 13500), (13500, 21131)]
    seqs = []
    for _ in range(n):
        k = rng.randint(0, 40)
        seq = []
        for _ in range(k):
            a, b = rng.choice(ranges)
            seq.append(rng.randint(a, b))
        if rng.random() < 0.1:
            seq.append(347)  # U+2028
        seqs.append(seq)
    return seqs


def text_fixtures(tok, detok, seed: int, n: int) -> list[dict]:
    rng = random.Random(seed)
    corpus = make_corpus(rng, n)
    rows: list[dict] = []
    encoded = []
    for text in corpus:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        encoded.append(ids)
        rows.append({"kind": "encode", "text": text, "ids": ids})
    # ModelScope's tokenize_text truncation (max_length with truncation=True, specials added after)
    for text in rng.sample(corpus, 300):
        k = rng.choice([0, 1, 2, 5, 10])
        ids = tok(text, max_length=k, add_special_tokens=False, truncation=True)["input_ids"]
        rows.append({"kind": "encode_trunc", "text": text, "max_length": k, "ids": ids})
    # decoding: encodings as generated sequences ([bos] ids [eos] [pad]*), and random id sequences
    seqs = []
    for ids in rng.sample(encoded, 4000):
        seq = list(ids)
        if rng.random() < 0.5:
            seq = [0] + seq
        seq = seq + [2] + [1] * rng.choice([0, 0, 1, 3])
        seqs.append(seq)
    seqs += random_id_sequences(rng, 3000)
    for seq in seqs:
        decoded = tok.batch_decode([seq], skip_special_tokens=True)[0]
        ocr = detok(decoded.strip())
        rows.append({"kind": "decode", "ids": seq, "decoded": decoded, "ocr": ocr})
    return rows


def codepoint_fixture(tok) -> dict:
    """Per block of code points, the hash of the reference's basic+WordPiece ids (see docstring)."""
    blocks = []
    for start in range(0, 0x110000, CODEPOINT_BLOCK):
        text = "".join("x" + chr(c) + "Ab " for c in range(start, start + CODEPOINT_BLOCK) if not 0xD800 <= c < 0xE000)
        text = "".join(ch.lower() for ch in text)  # what tokenize() does before the added-token split
        ids = tok.convert_tokens_to_ids(tok._tokenize(text))
        blocks.append({"start": start, "n_ids": len(ids),
                       "sha256": hashlib.sha256(np.asarray(ids, dtype="<i4").tobytes()).hexdigest()})
    return {"block": CODEPOINT_BLOCK, "piece": "x{c}Ab ", **unicode_tables(), "blocks": blocks}


def unicode_tables() -> dict:
    """The reference's results depend on CPython's Unicode tables (unassigned characters are dropped):
    record the version and its unassigned ranges, so that a test on another Python can leave out the
    characters whose assignment differs."""
    import unicodedata

    ranges, start = [], None
    for cp in range(0x110001):
        cn = cp <= 0x10FFFF and not 0xD800 <= cp < 0xE000 and unicodedata.category(chr(cp)) == "Cn"
        if cn and start is None:
            start = cp
        elif not cn and start is not None:
            ranges.append([start, cp - 1])
            start = None
    return {"unidata_version": unicodedata.unidata_version, "unassigned": ranges}


# --------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------


def _content(rng: np.random.RandomState, w: int, h: int, kind: str) -> np.ndarray:
    """HxWx3 uint8 content; ``kind``: noise (worst case for the filter), text (strokes on paper),
    smooth (gradients + upsampled noise: compresses well at large sizes)."""
    if kind == "noise":
        return rng.randint(0, 256, (h, w, 3), dtype=np.uint8)
    if kind == "smooth":  # gradients plus blocky noise, computed per row/column (large sizes)
        xs = (np.arange(w) * 255 // max(w - 1, 1)).astype(np.uint8)
        ys = (np.arange(h) * 255 // max(h - 1, 1)).astype(np.uint8)
        out = np.empty((h, w, 3), np.uint8)
        out[..., 0] = xs[None, :] // 2
        out[..., 1] = ys[:, None] // 2
        out[..., 2] = ((np.arange(h)[:, None] + np.arange(w)[None, :]) * 7 % 256 // 2).astype(np.uint8)
        small = rng.randint(0, 128, (h // 37 + 1, w // 37 + 1, 3), dtype=np.uint8)
        out += np.repeat(np.repeat(small, 37, axis=0), 37, axis=1)[:h, :w]
        return out
    # text-like: light paper, dark strokes
    img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.randint(200, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(max(3, w * h // 400)):
        x0, y0 = int(rng.randint(0, w)), int(rng.randint(0, h))
        x1, y1 = x0 + int(rng.randint(-20, 21)), y0 + int(rng.randint(-20, 21))
        draw.line((x0, y0, x1, y1), fill=tuple(int(v) for v in rng.randint(0, 90, 3)), width=int(rng.randint(1, 4)))
    return np.asarray(img)


def _to_mode(rgb: np.ndarray, mode: str, rng: np.random.RandomState) -> Image.Image:
    img = Image.fromarray(rgb)
    h, w = rgb.shape[:2]
    if mode == "RGB":
        return img
    if mode in ("L", "1", "CMYK"):
        return img.convert(mode)
    if mode in ("LA", "RGBA"):
        alpha = Image.fromarray(rng.randint(0, 256, (h, w), dtype=np.uint8))
        out = img.convert(mode)
        out.putalpha(alpha)
        return out
    if mode in ("P", "PA"):  # 64-colour palette image built directly (no quantiser: version-proof)
        q = rgb // 64
        out = Image.fromarray((q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]).astype(np.uint8))
        out.putpalette(bytes(int(v) for v in rng.randint(0, 256, 64 * 3)))  # L -> P
        if mode == "P":  # one transparent index
            out.info["transparency"] = 3
        else:  # a per-entry alpha table (tRNS with many entries)
            out.info["transparency"] = bytes(int(v) for v in rng.randint(0, 256, 64))
        return out
    if mode in ("I;16", "I"):
        grey = rgb.astype(np.int32).sum(-1)
        vals = (grey * 85 + rng.randint(0, 60, (h, w))).astype(np.uint16 if mode == "I;16" else np.int32)
        if mode == "I;16":
            return Image.fromarray(vals.astype(np.uint16))  # PIL mode I;16
        return Image.fromarray(vals - 3000)  # mode I, with negatives
    if mode == "F":
        return Image.fromarray((rgb[..., 0].astype(np.float32) * 1.7 - 50.25))
    raise ValueError(mode)


def _encode(img: Image.Image, mode: str) -> bytes:
    buf = io.BytesIO()
    if mode in ("CMYK", "F", "I"):
        img.save(buf, format="TIFF")
    else:
        img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _exif_jpeg(rgb: np.ndarray, orientation: int) -> bytes:
    img = Image.fromarray(rgb)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def decoded_sha256(blob: bytes) -> str:
    """Hash of what PIL decodes from ``blob`` (mode, size, pixels, transparency)."""
    with Image.open(io.BytesIO(blob)) as im:
        im.load()
        h = hashlib.sha256(f"{im.mode} {im.size} {im.info.get('transparency')!r}".encode())
        h.update(im.tobytes())
        if im.mode in ("P", "PA"):
            h.update(bytes(im.getpalette() or []))
        return h.hexdigest()


# (width, height, content kind); sizes chosen for the resize rule's corners
SHAPES = [
    (1, 1, "noise"), (2, 3, "noise"), (3, 2, "noise"), (1, 200, "noise"), (200, 1, "noise"), (10, 10, "noise"),
    (63, 64, "noise"), (64, 63, "noise"), (64, 480, "noise"), (480, 64, "noise"), (480, 480, "noise"),
    (481, 480, "noise"), (480, 481, "noise"), (100, 32, "text"), (320, 32, "text"), (800, 60, "text"),
    (1000, 333, "noise"), (479, 333, "noise"), (481, 240, "noise"), (960, 128, "text"), (2000, 30, "text"),
    (4000, 20, "smooth"), (10000, 30, "smooth"), (20, 3000, "smooth"), (40, 1000, "noise"),
    (30, 100, "text"), (3000, 2000, "smooth"), (1600, 2400, "smooth"), (1920, 64, "text"), (1921, 63, "noise"),
    (7, 1000, "noise"), (1000, 7, "noise"), (300, 299, "noise"), (299, 300, "noise"),
]
MODES = ["RGB", "L", "LA", "P", "PA", "RGBA", "CMYK", "I;16", "I", "F", "1"]
EXIF_ORIENTATIONS = (2, 3, 5, 6, 8)


def image_inputs(seed: int = 0) -> list[tuple[str, bytes]]:
    """The test images, ``(description, encoded bytes)``, deterministic in ``seed``.

    The parity test regenerates them with this function (numpy's legacy ``RandomState`` stream is
    frozen; PIL drawing and encoding may change between Pillow versions, which the test detects with
    :func:`decoded_sha256` and reports as a skip, not a failure). The JPEGs are stored in the fixture.
    """
    rng = np.random.RandomState(seed)
    out = []
    for w, h, kind in SHAPES:
        rgb = _content(rng, w, h, kind)
        # small images in every mode, big ones in a few
        modes = MODES if w * h <= 300_000 else ["RGB", "L", "RGBA"]
        for mode in modes:
            out.append((f"{w}x{h} {kind} {mode}", _encode(_to_mode(rgb, mode, rng), mode)))
    for orientation in EXIF_ORIENTATIONS:
        rgb = _content(rng, 150, 40, "text")
        out.append((f"150x40 text jpeg exif {orientation}", _exif_jpeg(rgb, orientation)))
    return out


def image_cases(inputs) -> list[dict]:
    """Which (input, feed, size, document) combinations to run."""
    cases = []
    for idx, (desc, _) in enumerate(inputs):
        w, h = (int(v) for v in desc.split()[0].split("x"))
        mode = desc.split()[-1]
        big = w * h > 2_000_000
        jpeg = "jpeg" in desc
        sizes = (480, 384) if (mode == "RGB" and not big) else (480,)
        documents = (False, True) if (mode in ("RGB", "L", "P") or jpeg) else (False,)
        feeds = ("pil", "path") if (mode in ("RGB", "RGBA") or jpeg) else ("pil",)
        for feed in feeds:
            for size in sizes:
                for doc in documents:
                    if doc and size != 480:
                        continue  # the reference's document mode only works at 480
                    cases.append({"input": idx, "desc": desc, "feed": feed, "size": size, "document": doc})
    return cases


def reference_outputs(blobs, cases, tmp: str):
    import torch
    from modelscope.preprocessors.multi_modal import OfaPreprocessor

    preprocessors = {}
    for c in cases:
        key = (c["size"], c["document"])
        if key not in preprocessors:
            preprocessors[key] = OfaPreprocessor(make_model_dir(tmp, *key))
    lut = None
    paths = {}
    for c in cases:
        blob = blobs[c["input"]]
        if c["feed"] == "path":
            if c["input"] not in paths:
                paths[c["input"]] = os.path.join(tmp, f"input_{c['input']}.img")
                with open(paths[c["input"]], "wb") as f:
                    f.write(blob)
            image = paths[c["input"]]
        else:
            image = Image.open(io.BytesIO(blob))
        try:
            out = preprocessors[(c["size"], c["document"])]({"image": image})["net_input"]["patch_images"]
        except Exception as e:  # noqa: BLE001 - record what the reference does
            c["error"] = f"{type(e).__name__}: {e}"
            continue
        x = out[0].permute(1, 2, 0).contiguous().numpy()
        assert x.dtype == np.float32 and x.shape == (c["size"], c["size"], 3), (x.dtype, x.shape)
        if lut is None:
            lut = ((torch.arange(256, dtype=torch.uint8).float().div(255) - 0.5) / 0.5).numpy()
        u8 = np.searchsorted(lut, x).astype(np.uint8)  # lut is strictly increasing
        assert np.array_equal(lut[u8], x), f"reference output is not a normalised uint8 image: {c}"
        pick = np.random.RandomState(c["input"]).randint(0, c["size"], (8, 2))
        c["float32_sha256"] = hashlib.sha256(x.tobytes()).hexdigest()
        c["uint8_sha256"] = hashlib.sha256(u8.tobytes()).hexdigest()
        c["samples"] = [[int(r), int(q), *map(int, u8[r, q])] for r, q in pick]
    return cases, lut


# --------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-strings", type=int, default=12000, help="random mixed strings (besides single elements)")
    ap.add_argument("--out", default=FIXTURES)
    ap.add_argument("--check", action="store_true", help="compare with the existing fixtures, write nothing")
    args = ap.parse_args(argv)
    logging.getLogger("PIL").setLevel(logging.INFO)  # modelscope turns on DEBUG logging

    tmp = tempfile.mkdtemp(prefix="ofa_fixtures_")
    try:
        tok = reference_tokenizer(make_model_dir(tmp))
        detok = reference_detokenizer()
        files = {}
        print("text fixtures ...", file=sys.stderr)
        rows = text_fixtures(tok, detok, args.seed, args.n_strings)
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        files["tokenizer_parity.jsonl.gz"] = gzip.compress(lines, compresslevel=9, mtime=0)
        print("code points ...", file=sys.stderr)
        files["tokenizer_codepoints.json"] = (json.dumps(codepoint_fixture(tok), indent=0) + "\n").encode()
        print("images ...", file=sys.stderr)
        inputs = image_inputs(args.seed)
        cases, lut = reference_outputs([b for _, b in inputs], image_cases(inputs), tmp)
        meta = {
            "seed": args.seed,
            "normalize_lut_hex": lut.astype("<f4").tobytes().hex(),
            "inputs": [{"desc": d, "decoded_sha256": decoded_sha256(b),
                        **({"jpeg_b64": base64.b64encode(b).decode()} if "jpeg" in d else {})}
                       for d, b in inputs],
            "cases": cases,
        }
        files["preprocess_parity.json"] = (json.dumps(meta, indent=0) + "\n").encode()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    n_enc = sum(r["kind"] == "encode" for r in rows)
    n_dec = sum(r["kind"] == "decode" for r in rows)
    n_err = sum("error" in c for c in cases)
    print(f"{n_enc} strings, {n_dec} decode sequences, {len(cases)} image cases ({n_err} reference errors)",
          file=sys.stderr)
    status = 0
    for name, data in files.items():
        path = os.path.join(args.out, name)
        if args.check:
            same = os.path.exists(path) and open(path, "rb").read() == data
            print(f"{name}: {'same' if same else 'DIFFERS'}", file=sys.stderr)
            status |= not same
        else:
            os.makedirs(args.out, exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
            print(f"{name}: {len(data) / 1024:.0f} KiB", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
