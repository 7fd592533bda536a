"""Writes the sample pages in examples/pages/ (synthetic, from ``ofa_jax.detect.synth``: held-out
evaluation texts, so the shipped recogniser never trained on them) and ``labels.json`` with every
line's box and text:

    python examples/pages/make_pages.py      # needs the CJK fonts of ofa_jax.data.render
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from ofa_jax.detect.synth import render_page  # noqa: E402

# (file, seed, kind, warp): a two-column page photographed at an angle, a receipt, a sign
PAGES = [("columns.jpg", 7, "columns", True), ("receipt.png", 2, "receipt", False), ("sign.png", 3, "sign", False)]


def main():
    labels = {}
    for name, seed, kind, warp in PAGES:
        page = render_page(seed, kind, warp=warp)
        path = os.path.join(HERE, name)
        if name.endswith(".jpg"):
            page.image.save(path, quality=85)
        else:
            page.image.save(path, optimize=True)
        labels[name] = [{"box": [[round(float(x), 1), round(float(y), 1)] for x, y in b], "text": t}
                        for b, t in zip(page.boxes, page.texts)]
        print(f"{name}: {page.image.size[0]}x{page.image.size[1]}, {len(page.texts)} lines")
    with open(os.path.join(HERE, "labels.json"), "w", encoding="utf-8") as f:
        json.dump(labels, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
