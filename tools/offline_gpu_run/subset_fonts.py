"""Subset the CJK fonts found here to the characters synthetic lines can contain, for a machine with no
font packages and a size limit on what can be sent to it (fonts shrink ~5x: 88 MB of Noto -> 16 MB).

    python tools/offline_gpu_run/subset_fonts.py OUT_DIR [--probe-only 2]

Glyph outlines are kept as they are; only unused glyphs go. A collection keeps one face, the one
``render.face_index`` draws with, so the subset draws the same glyphs as the full file here.
``--probe-only N`` reduces the last N fonts (the held-out test fonts of ``heldout_fonts=N``) to the
few characters that make them count as CJK fonts: a training machine needs them only so that the
sorted font list, and with it the held-out split, stays the same. Needs ``pip install fonttools``.
"""
import argparse
import os

from fontTools import subset
from fontTools.ttLib import TTFont

from ofa_jax.data import corpus, render


def line_characters() -> set[str]:
    chars = set(corpus._CN_PUNCT + corpus._ASCII_PUNCT + corpus._LATIN + corpus._DIGITS + " " + render._CJK_PROBE)
    hanzi_1, hanzi_2 = corpus.gb2312_hanzi()
    chars |= set(hanzi_1) | set(hanzi_2)
    for sentence in corpus.hsk_sentences():
        chars |= set(sentence)
    return chars


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--probe-only", type=int, default=0, help="reduce the last N fonts to the CJK probe")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    fonts = render.find_cjk_fonts()
    full = line_characters()
    for i, path in enumerate(fonts):
        chars = render._CJK_PROBE if i >= len(fonts) - args.probe_only else full
        face = render.face_index(path)  # the face lines are drawn with (Noto CJK: SC, not JP)
        font = TTFont(path, fontNumber=face)
        opts = subset.Options()
        opts.font_number, opts.hinting, opts.notdef_outline, opts.layout_features, opts.name_IDs = face, True, True, ["*"], ["*"]
        sub = subset.Subsetter(opts)
        sub.populate(unicodes=[ord(c) for c in chars])
        sub.subset(font)
        dst = os.path.join(args.out_dir, os.path.basename(path))  # same file name: same font order
        font.save(dst)
        print(f"{os.path.basename(path)}: {os.path.getsize(path) // 1024} -> {os.path.getsize(dst) // 1024} KB")


if __name__ == "__main__":
    main()
