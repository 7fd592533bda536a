"""python -m ofa_jax.ocr [--model DIR] [--detector DIR] [--json] [--draw OUT_DIR] [--out DIR [--distributed]] PATH...

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

Corpora: ``--out DIR`` writes the JSON objects to DIR/pages-IIIII-of-NNNNN.jsonl instead of stdout
(one line per page, in the order of the sorted input list). With ``--distributed`` (after
``jax.distributed.initialize()``: on TPU pods and SLURM alone, elsewhere with
``--coordinator-address HOST:PORT --num-processes N --process-id I``) process I of N takes the I-th of
N contiguous slices of the sorted input list, runs on its own devices and writes shard I. Resumable:
a shard is written as ``.jsonl.partial`` and renamed when complete; a complete shard is skipped, and
an incomplete one goes on after the pages it already holds. The exit status counts the failed pages
of the whole shard, those of earlier runs too (a rerun of the same command answers the same).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from ofa_jax.lines import ASPECT_HELP
from ofa_jax.views import CLI_HELP as VIEWS_HELP


SHUTDOWN_TIMEOUT_S = 7 * 24 * 3600


def shard_name(index: int, count: int) -> str:
    return f"pages-{index:05d}-of-{count:05d}.jsonl"


def shard_slice(items: list, index: int, count: int) -> list:
    """Process ``index`` of ``count``'s contiguous slice (sizes differ by at most one): the shards
    concatenated in order are the input list."""
    n = len(items)
    return items[index * n // count:(index + 1) * n // count]


def resume_shard(partial: str) -> tuple[set, int]:
    """The paths already written to an incomplete shard and how many of them failed. A last line cut
    short (the process was killed mid-write) is dropped from the file."""
    done, failed, keep = set(), 0, 0
    with open(partial, "rb") as f:
        data = f.read()
    for raw in data.splitlines(keepends=True):
        if not raw.endswith(b"\n"):
            break
        try:
            row = json.loads(raw)
        except ValueError:
            break
        done.add(row["path"])
        failed += "error" in row
        keep += len(raw)
    if keep != len(data):
        with open(partial, "r+b") as f:
            f.truncate(keep)
    return done, failed


def page_row(path: str, page) -> dict:
    if page.error is not None:
        return {"path": path, "error": page.error}
    return {"path": path, "width": page.width, "height": page.height,
            "lines": [line.to_dict() for line in page.lines]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ofa_jax.ocr", description=__doc__.split("\n\n")[1],
                                 epilog=__doc__.split("\n\n")[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", metavar="PATH", help="page images or directories of them")
    ap.add_argument("--model", help="ofa-jax model dir (default: the recogniser shipped with ofa-jax)")
    ap.add_argument("--detector", help="ofa-jax detector dir (default: the shipped PP-OCRv6 small detector)")
    ap.add_argument("--json", action="store_true", help="one JSON object per page")
    ap.add_argument("--draw", metavar="OUT_DIR", help="write a PNG per page with boxes and recognised text")
    ap.add_argument("--out", metavar="DIR", help="write JSONL shards to DIR (resumable) instead of stdout")
    ap.add_argument("--distributed", action="store_true",
                    help="multi-host: jax.distributed.initialize(), one shard of --out per process")
    ap.add_argument("--coordinator-address", metavar="HOST:PORT", help="--distributed: process 0's address")
    ap.add_argument("--num-processes", type=int, help="--distributed: number of processes")
    ap.add_argument("--process-id", type=int, help="--distributed: this process's index")
    ap.add_argument("--beam", type=int, help="beam size (default: from the model dir)")
    ap.add_argument("--greedy", action="store_true", help="greedy decoding (beam size 1)")
    ap.add_argument("--batch-size", type=int, default=8, help="lines per recognition batch (default 8)")
    ap.add_argument("--det-batch-size", type=int,
                    help="most pages per detection batch (default 2 per device)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], help="recogniser compute dtype (default float32)")
    ap.add_argument("--views", metavar="V,V,...", help=VIEWS_HELP)
    ap.add_argument("--max-aspect", type=float, metavar="A", help=ASPECT_HELP)
    ap.add_argument("--box-thresh", type=float, help="drop boxes whose mean text probability is lower (default 0.5)")
    ap.add_argument("--unclip-ratio", type=float, help="how far boxes grow around the detected text (default 1.6)")
    args = ap.parse_args(argv)
    if args.greedy and args.beam not in (None, 1):
        ap.error("--greedy and --beam N>1 contradict each other")
    if args.batch_size < 1:
        ap.error("--batch-size must be >= 1")
    if args.det_batch_size is not None and args.det_batch_size < 1:
        ap.error("--det-batch-size must be >= 1")
    if args.distributed and not args.out:
        ap.error("--distributed needs --out DIR (each process writes its own shard)")
    if not args.distributed and (args.coordinator_address or args.num_processes or args.process_id is not None):
        ap.error("--coordinator-address, --num-processes and --process-id go with --distributed")
    if args.out and (args.json or args.draw):
        ap.error("--out writes JSON shards; it does not go with --json or --draw")

    from ofa_jax.decode import expand_paths, report_problems
    from ofa_jax.modeldir import ModelDirError
    from ofa_jax.pages import PageReader, draw_page

    for flag, d in (("--draw", args.draw), ("--out", args.out)):
        if d:
            try:
                os.makedirs(d, exist_ok=True)
            except OSError as e:
                print(f"error: {flag} {d}: {e.strerror or e}", file=sys.stderr)
                return 2

    devices = None
    index, count = 0, 1
    if args.distributed:
        import jax
        try:
            # A process whose shard is done waits at exit for the others (jax.distributed's shutdown
            # barrier; leaving early would take the coordination service down under them): as long
            # as a shard may take.
            jax.distributed.initialize(coordinator_address=args.coordinator_address,
                                       num_processes=args.num_processes, process_id=args.process_id,
                                       shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001  no cluster found, bad address ...: one line
            from ofa_jax.preprocess import _one_line
            print(f"error: --distributed: jax.distributed.initialize() failed: {_one_line(e)}", file=sys.stderr)
            return 2
        index, count = jax.process_index(), jax.process_count()
        devices = jax.local_devices()   # pages are independent: no collectives between hosts

    paths = expand_paths(args.paths)
    written, failed = set(), 0
    out_file = final = None
    if args.out:
        paths = shard_slice(sorted(paths), index, count)
        final = os.path.join(args.out, shard_name(index, count))
        if os.path.exists(final):
            _, failed = resume_shard(final)
            print(f"ofa-jax: {final} is complete ({failed} failed pages); nothing to do", file=sys.stderr)
            return 1 if failed else 0
        partial = final + ".partial"
        if os.path.exists(partial):
            written, failed = resume_shard(partial)
        todo = [p for p in paths if p not in written]
    else:
        todo = paths

    try:
        reader = PageReader.from_pretrained(args.model, args.detector, beam_size=1 if args.greedy else args.beam,
                                            batch_size=args.batch_size, dtype=args.dtype, views=args.views,
                                            max_aspect=args.max_aspect, devices=devices,
                                            det_batch_size=args.det_batch_size, box_thresh=args.box_thresh, unclip_ratio=args.unclip_ratio)
    except (ModelDirError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    if args.out:
        out_file = open(final + ".partial", "a", encoding="utf-8")
    try:
        progress = not args.json and len(todo) > 1
        for path, page in zip(todo, reader.iter(todo, progress=progress)):
            if report_problems(path, page, args.paths):
                failed += 1
            if out_file is not None:
                out_file.write(json.dumps(page_row(path, page), ensure_ascii=False) + "\n")
                out_file.flush()
                continue
            if args.json:
                print(json.dumps(page_row(path, page), ensure_ascii=False))
            elif page.error is None:
                print(f"==> {path} <==")
                for line in page.lines:
                    print(line.text)
                print()
            if args.draw and page.error is None:
                import numpy as np
                from ofa_jax.preprocess import load_image
                name = os.path.splitext(os.path.basename(path))[0] + ".png"
                draw_page(np.asarray(load_image(path)), page).save(os.path.join(args.draw, name))
            sys.stdout.flush()
    finally:
        if out_file is not None:
            out_file.close()
    if out_file is not None:
        os.replace(final + ".partial", final)
        print(f"ofa-jax: shard {index + 1} of {count}: {len(paths)} pages ({len(written)} from an earlier run, "
              f"{failed} failed) -> {final}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    from ofa_jax.cli import run

    run(main)
