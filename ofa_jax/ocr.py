"""python -m ofa_jax.ocr [--model DIR] [--detector DIR] [--json] [--draw OUT_DIR] [options] PATH...

Reads whole pages: finds the text lines (PP-OCR's DB detector, shipped with ofa-jax), puts them in
reading order (columns, top to bottom, left to right) and recognises each with the OFA model. PATH is
an image file or a directory (its images, sorted). Prints, per page, a ``==> PATH <==`` line and then
its lines in reading order, a blank line after each page; with ``--json`` one JSON object per page
(``path``, ``width``, ``height``, ``lines``: ``box`` (4 corners, clockwise from top-left, page
pixels), ``text``, ``score`` (recogniser, log-probability), ``det_score``). ``--draw OUT_DIR`` also
writes OUT_DIR/<page name>.png: the page with its boxes and, beside it, the recognised text at each
box. A page without text has no lines. Unreadable pages are one ``error: PATH: reason`` line on stderr
and do not stop the others; the exit status is 1 if any page failed, 2 for a bad model or detector
dir or arguments. Huge pages are shrunk to a 2000-pixel longer side for detection (lines are cut
from the full-resolution page).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from ofa_jax.views import CLI_HELP as VIEWS_HELP


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ofa_jax.ocr", description=__doc__.split("\n\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", metavar="PATH", help="page images or directories of them")
    ap.add_argument("--model", help="ofa-jax model dir (default: the recogniser shipped with ofa-jax)")
    ap.add_argument("--detector", help="ofa-jax detector dir (default: the shipped PP-OCRv6 small detector)")
    ap.add_argument("--json", action="store_true", help="one JSON object per page")
    ap.add_argument("--draw", metavar="OUT_DIR", help="write a PNG per page with boxes and recognised text")
    ap.add_argument("--beam", type=int, help="beam size (default: from the model dir)")
    ap.add_argument("--greedy", action="store_true", help="greedy decoding (beam size 1)")
    ap.add_argument("--batch-size", type=int, default=8, help="lines per recognition batch (default 8)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], help="recogniser compute dtype (default float32)")
    ap.add_argument("--views", metavar="V,V,...", help=VIEWS_HELP)
    ap.add_argument("--box-thresh", type=float, help="drop boxes whose mean text probability is lower (default 0.5)")
    ap.add_argument("--unclip-ratio", type=float, help="how far boxes grow around the detected text (default 1.6)")
    args = ap.parse_args(argv)
    if args.greedy and args.beam not in (None, 1):
        ap.error("--greedy and --beam N>1 contradict each other")
    if args.batch_size < 1:
        ap.error("--batch-size must be >= 1")

    from ofa_jax.decode import IMAGE_EXTS, expand_paths
    from ofa_jax.modeldir import ModelDirError
    from ofa_jax.pages import PageReader, draw_page

    if args.draw:
        try:
            os.makedirs(args.draw, exist_ok=True)
        except OSError as e:
            print(f"error: --draw {args.draw}: {e.strerror or e}", file=sys.stderr)
            return 2
    try:
        reader = PageReader.from_pretrained(args.model, args.detector, beam_size=1 if args.greedy else args.beam,
                                            batch_size=args.batch_size, dtype=args.dtype, views=args.views,
                                            box_thresh=args.box_thresh, unclip_ratio=args.unclip_ratio)
    except (ModelDirError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    paths = expand_paths(args.paths)
    failed = 0
    for path, page in zip(paths, reader.iter(paths, progress=len(paths) > 1)):
        if page.error is not None and path in args.paths and os.path.isdir(path):
            page.error = f"{path}: no image files ({', '.join(IMAGE_EXTS)}) in this directory"
        for w in page.warnings:
            print(f"warning: {w}", file=sys.stderr)
        if page.error is not None:
            failed += 1
            print(f"error: {page.error}", file=sys.stderr)
            if args.json:
                print(json.dumps({"path": path, "error": page.error}, ensure_ascii=False))
            sys.stdout.flush()
            continue
        if args.json:
            print(json.dumps({"path": path, "width": page.width, "height": page.height,
                              "lines": [line.to_dict() for line in page.lines]}, ensure_ascii=False))
        else:
            print(f"==> {path} <==")
            for line in page.lines:
                print(line.text)
            print()
        if args.draw:
            import numpy as np
            from ofa_jax.preprocess import load_image
            name = os.path.splitext(os.path.basename(path))[0] + ".png"
            draw_page(np.asarray(load_image(path)), page).save(os.path.join(args.draw, name))
        sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    from ofa_jax.cli import run

    run(main)
