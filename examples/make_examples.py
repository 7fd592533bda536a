"""Renders the sample lines in examples/ (held-out seed split of the bundled model's training data).

    python examples/make_examples.py
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from ofa_jax.train import RenderedLines  # noqa: E402

SPEC = "chars=0123456789,min=1,max=4,n=50000,seed=0,fontmin=20,fontmax=32"


def main(n=6):
    src = RenderedLines(SPEC, "test")  # the "test" split's seed differs from the training split's
    with open(os.path.join(HERE, "labels.tsv"), "w", encoding="utf-8") as f:
        for i in range(n):
            rec = src[i]
            name = f"line_{i}.png"
            with open(os.path.join(HERE, name), "wb") as img:
                img.write(rec["image"])
            f.write(f"{name}\t{rec['text']}\n")


if __name__ == "__main__":
    main()
