"""Writes the sample lines in examples/: the first lines of the held-out *test* split of the shipped
model's data (fonts and texts never seen in training; degraded renders included), unselected.

    python examples/make_examples.py      # needs the fonts listed in configs/ocr_zh_small_cpu.py
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "configs"))

from ocr_zh_small_cpu import LINES  # noqa: E402
from ofa_jax.data.sources import load_eval_source  # noqa: E402


def main(n=6):
    for name in os.listdir(HERE):
        if name.startswith("line_"):
            os.remove(os.path.join(HERE, name))
    src = load_eval_source(LINES, "test")
    with open(os.path.join(HERE, "labels.tsv"), "w", encoding="utf-8") as f:
        for i in range(n):
            rec = src[i]
            ext = "jpg" if rec["degraded"] else "png"  # degraded renders are stored as JPEG
            name = f"line_{i}.{ext}"
            with open(os.path.join(HERE, name), "wb") as img:
                img.write(rec["image"])
            f.write(f"{name}\t{rec['text']}\n")
            print(f"{name}\t{rec['font']}\t{rec['text']}")


if __name__ == "__main__":
    main()
