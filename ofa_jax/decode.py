"""python -m ofa_jax.decode [--model DIR] [options] PATH...

Recognises text lines in images. PATH is an image file or a directory (its images, sorted). Prints
one line per image in input order: ``path<TAB>text``, or with ``--json`` one JSON object per line
(``path``, ``text``, ``score``; ``error`` instead of ``text`` for an image that could not be read).
Unreadable images are reported on stderr (one ``error: PATH: reason`` line each, no traceback) and do
not stop the others; the exit status is 1 if any image failed, 2 for a bad model dir or arguments.
Readable images that lose information (a 16-bit scan clipped to 8 bits as the reference does) are
decoded and get a ``warning: PATH: reason`` line. Generation defaults (beam size, lengths) come from the model dir.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from ofa_jax.lines import ASPECT_HELP, POLARITY_HELP
from ofa_jax.views import CLI_HELP as VIEWS_HELP

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def expand_paths(paths):
    """Directories -> their image files (sorted); files (and missing paths) pass through in order.
    A directory without image files stays in the list as itself (it is then reported as an error)."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            names = sorted(n for n in os.listdir(p) if n.lower().endswith(IMAGE_EXTS))
            out.extend([os.path.join(p, n) for n in names] or [p])
        else:
            out.append(p)
    return out


def report_problems(path: str, result, user_paths) -> bool:
    """Print ``result``'s warnings and error (one line each, stderr); True if it failed. Shared by the
    line and page CLIs so that both name a directory without images the same way."""
    if result.error is not None and path in user_paths and os.path.isdir(path):
        result.error = f"{path}: no image files ({', '.join(IMAGE_EXTS)}) in this directory"
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if result.error is not None:
        print(f"error: {result.error}", file=sys.stderr)
    return result.error is not None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ofa_jax.decode", description=__doc__.split("\n\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", metavar="PATH", help="image files or directories of images")
    ap.add_argument("--model", help="ofa-jax model dir (default: the model shipped with ofa-jax)")
    ap.add_argument("--beam", type=int, help="beam size (default: from the model dir, usually 5)")
    ap.add_argument("--greedy", action="store_true", help="greedy decoding (beam size 1)")
    ap.add_argument("--max-len", type=int, help="maximum generated tokens (fairseq max_len_b)")
    ap.add_argument("--min-len", type=int, help="minimum generated tokens before eos (fairseq min_len)")
    ap.add_argument("--batch-size", type=int, default=8, help="images per device batch (default 8)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], help="compute dtype (default float32)")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    ap.add_argument("--views", metavar="V,V,...", help=VIEWS_HELP)
    ap.add_argument("--polarity", choices=["auto", "keep"], help=POLARITY_HELP)
    ap.add_argument("--max-aspect", type=float, metavar="A", help=ASPECT_HELP)
    args = ap.parse_args(argv)
    if args.greedy and args.beam not in (None, 1):
        ap.error("--greedy and --beam N>1 contradict each other")
    if args.batch_size < 1:
        ap.error("--batch-size must be >= 1")

    from ofa_jax.modeldir import ModelDirError
    from ofa_jax.recognizer import BUNDLED_MODEL, Recognizer

    if args.model is None:
        if not os.path.isdir(BUNDLED_MODEL):
            print("error: no --model given and this version bundles no model; convert a checkpoint with "
                  "`python -m tools.convert_weights SRC DST` and pass --model DST", file=sys.stderr)
            return 2
        print(f"ofa-jax: no --model given; using the bundled model {os.path.basename(BUNDLED_MODEL)}", file=sys.stderr)
    try:
        rec = Recognizer.from_pretrained(args.model, beam_size=1 if args.greedy else args.beam, max_len=args.max_len,
                                         min_len=args.min_len, batch_size=args.batch_size, dtype=args.dtype,
                                         views=args.views, polarity=args.polarity, max_aspect=args.max_aspect)
    except (ModelDirError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    paths = expand_paths(args.paths)
    if not paths:
        print("error: no images found", file=sys.stderr)
        return 1
    failed = 0
    bar = None
    if len(paths) > rec.batch_size:
        from tqdm import tqdm
        bar = tqdm(total=len(paths), unit="img", file=sys.stderr, disable=None)
    for start in range(0, len(paths), rec.batch_size):  # stream: print as each batch finishes
        chunk = paths[start:start + rec.batch_size]
        for path, r in zip(chunk, rec(chunk)):
            if report_problems(path, r, args.paths):
                failed += 1
                if args.json:
                    print(json.dumps({"path": path, "error": r.error}, ensure_ascii=False))
            elif args.json:
                row = {"path": path, "text": r.text, "score": round(r.score, 6)}
                if r.warnings:
                    row["warnings"] = list(r.warnings)
                print(json.dumps(row, ensure_ascii=False))
            else:
                print(f"{path}\t{r.text}")
        sys.stdout.flush()
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return 1 if failed else 0


if __name__ == "__main__":
    from ofa_jax.cli import run

    run(main)
