"""How far a font collection's Japanese face is from its Chinese one, and what a model misreads.

    python bench/font_faces.py [--font NotoSansCJK-Regular.ttc] [--eval OUT.jsonl ...]

Noto's CJK collections open on their Japanese face (index 0); ``ofa_jax.data.render`` draws with the
simplified-Chinese face since ``ocr_synthetic_zh`` 1.1.0. This script renders every GB2312 hanzi with
both faces at 48 px and counts the characters whose bitmaps differ (summed absolute difference over 30
of 255-scaled pixels, i.e. more than a stray anti-aliased edge). Given ``python -m ofa_jax.evaluate``
outputs, it also splits the character error rate (lines whose prediction has the truth's length,
compared position by position, after the benchmark normalisation) into characters whose two faces
differ and those whose faces are the same: a model trained on the Japanese forms and tested on Chinese
fonts misreads the first kind more often.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from ofa_jax.data import corpus, render  # noqa: E402
from ofa_jax.data.metrics import normalize_benchmark  # noqa: E402

THRESHOLD = 30.0


def bitmap(font, ch: str) -> np.ndarray:
    im = Image.new("L", (64, 64))
    ImageDraw.Draw(im).text((8, 0), ch, font=font, fill=255)
    return np.asarray(im, np.float32) / 255.0


def differing_chars(path: str) -> dict[str, bool]:
    jp = ImageFont.truetype(path, 48, index=0)
    zh = ImageFont.truetype(path, 48, index=render.face_index(path))
    hanzi_1, hanzi_2 = corpus.gb2312_hanzi()
    return {ch: float(np.abs(bitmap(jp, ch) - bitmap(zh, ch)).sum()) > THRESHOLD
            for ch in list(hanzi_1) + list(hanzi_2)}


def error_rates(jsonl: str, differs: dict[str, bool]) -> dict:
    seen = {True: 0, False: 0}
    wrong = {True: 0, False: 0}
    for line in open(jsonl, encoding="utf-8"):
        r = json.loads(line)
        gt, pred = normalize_benchmark(r["gt"]), normalize_benchmark(r["pred"] or "")
        if len(gt) != len(pred):
            continue
        for a, b in zip(gt, pred):
            if a in differs:
                seen[differs[a]] += 1
                wrong[differs[a]] += a != b
    return {name: {"chars": seen[k], "wrong": wrong[k], "error_rate": round(wrong[k] / max(seen[k], 1), 4)}
            for name, k in (("faces_differ", True), ("faces_same", False))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--font", default="NotoSansCJK-Regular.ttc", help="file name of an installed collection")
    ap.add_argument("--eval", nargs="*", default=[], help="python -m ofa_jax.evaluate --output files")
    args = ap.parse_args()
    paths = [p for p in render.find_cjk_fonts() if render.font_key(p) == args.font]
    if not paths:
        sys.exit(f"error: font {args.font} not found (apt-get install fonts-noto-cjk)")
    differs = differing_chars(paths[0])
    n = sum(differs.values())
    print(json.dumps({"font": args.font, "chinese_face": render.face_index(paths[0]), "gb2312_hanzi": len(differs),
                      "faces_differ": n, "fraction": round(n / len(differs), 4)}))
    for path in args.eval:
        print(json.dumps({"eval": os.path.basename(path), **error_rates(path, differs)}, ensure_ascii=False))


if __name__ == "__main__":
    main()
