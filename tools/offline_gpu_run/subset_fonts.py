"""Subset the CJK fonts in a directory, in place, to the characters synthetic lines can contain
(fonts shrink about 5x: 88 MB of Noto -> 16 MB), for a slow or size-limited way to the host.

    python tools/offline_gpu_run/subset_fonts.py DIR   (prepare.sh with SUBSET_FONTS=1)

Glyph outlines are kept as they are; only unused glyphs go. A collection keeps one face, the one
``render.face_index`` draws with, so the subset draws the same glyphs as the full file. File names stay
the same, and with them the font order that decides the held-out split. Needs ``pip install fonttools``.
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
    ap.add_argument("dir", help="directory of font files, subset in place")
    args = ap.parse_args()
    chars = line_characters()
    for name in sorted(os.listdir(args.dir)):
        path = os.path.join(args.dir, name)
        if not name.lower().endswith((".ttf", ".ttc", ".otf")):
            continue
        before = os.path.getsize(path)
        face = render.face_index(path)  # the face lines are drawn with (Noto CJK: SC, not JP)
        font = TTFont(path, fontNumber=face)
        opts = subset.Options()
        opts.font_number, opts.hinting, opts.notdef_outline, opts.layout_features, opts.name_IDs = face, True, True, ["*"], ["*"]
        sub = subset.Subsetter(opts)
        sub.populate(unicodes=[ord(c) for c in chars])
        sub.subset(font)
        font.save(path)
        print(f"{name}: {before // 1024} -> {os.path.getsize(path) // 1024} KB")


if __name__ == "__main__":
    main()
