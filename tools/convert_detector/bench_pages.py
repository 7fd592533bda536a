"""The page benchmark: ofa-jax's page pipeline next to RapidOCR's full pipeline (det + cls + rec,
default settings) on the same generated pages, in one run. A wrapper of

    python -m ofa_jax.detect.synth DIR --pages N --seed S
    python -m ofa_jax.evaluate --pages DIR --baseline rapidocr

with the pages in a temporary directory (``--keep DIR`` keeps them):

    python -m tools.convert_detector.bench_pages [--pages 16] [--seed 1000]   # needs rapidocr
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.convert_detector.bench_pages")
    ap.add_argument("--pages", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--model", help="ofa-jax model dir (default: the shipped recogniser)")
    ap.add_argument("--keep", metavar="DIR", help="write the page set here (and keep it)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from ofa_jax.detect.pageset import evaluate_pages, format_table, save_page_set
    from ofa_jax.detect.synth import page_set
    from ofa_jax.pages import PageReader

    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or tmp
        save_page_set(out, page_set(args.pages, args.seed))
        results = evaluate_pages(out, PageReader.from_pretrained(args.model), baseline="rapidocr")
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(format_table(results))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    from ofa_jax.cli import run

    run(main)
