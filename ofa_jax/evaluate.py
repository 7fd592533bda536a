"""python -m ofa_jax.evaluate --model DIR --data SPEC [--data SPEC ...] [options]

Line-level OCR evaluation: decodes every line of one or more datasets and prints N, ACC and NED per
dataset (one row each, like the OFA-OCR paper's Scene / Web / Document / Handwriting table).

SPEC is ``tfds:NAME/CONFIG`` (a prepared TFDS dataset, e.g. ``tfds:ocr_fudanvi_zh/scene``),
``lmdb:PATH`` (a FudanVI-layout LMDB, or a folder of ``*_SPLIT`` LMDBs), ``folder:PATH`` (images +
``labels.jsonl``/``labels.tsv``, or OFA-Sys ``SPLIT.tsv`` files) or ``render:SPEC`` (synthetic lines
drawn as they are read, e.g. ``render:mixed,max_chars=12``). Prefix it with ``LABEL=`` to name
its table row (``--data scene=lmdb:benchmark/scene``).

ACC is the exact-line accuracy and NED is 1 - mean(lev(pred, gt) / max(|pred|, |gt|)), both after a
named normalisation (``ofa_jax.data.metrics``): ``benchmark`` (default; the FudanVI benchmark's:
full-width -> half-width, lowercase, traditional -> simplified) or ``ofa`` (OFA-OCR's: zhconv
zh-hans, NFKC, lowercase, whitespace removed). The table says which one was used.

Images that cannot be read (or records that cannot be loaded) count as wrong predictions (ACC 0,
edit distance 1 for that line), are counted in the table's ``unread`` column and reported on stderr;
they never stop the run. ``--json`` makes the last stdout line one JSON object
``{"n", "acc", "ned", "normalization", "unreadable"}`` (with several datasets the totals over all
lines plus ``"datasets": [...]``, one entry per dataset). ``--output FILE`` writes one JSON object
per line: ``data``, ``id``, ``gt``, ``pred``, ``score``, ``correct`` (and ``error`` where the image
could not be read). A progress bar goes to stderr (only on a terminal).

``--pages DIR [--baseline rapidocr]`` evaluates whole pages instead (``ofa_jax.detect.pageset``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from typing import Any, Optional

from ofa_jax.data.metrics import DEFAULT_NORMALIZATION, LineMetrics
from ofa_jax.lines import ASPECT_HELP, POLARITY_HELP
from ofa_jax.views import CLI_HELP as VIEWS_HELP

NORMALIZATION_HELP = {
    "benchmark": "FudanVI benchmark: full-width->half-width, lowercase, zh-cn",
    "ofa": "OFA-OCR: zh-hans, NFKC, lowercase, no whitespace",
}
MAX_REPORTED_ERRORS = 5  # per dataset, on stderr; all of them are in --output


@dataclasses.dataclass
class DatasetResult:
    label: str
    spec: str
    split: str
    metrics: LineMetrics
    unreadable: int = 0
    errors: list = dataclasses.field(default_factory=list)  # (id, message), first few only

    def summary(self) -> dict:
        r = self.metrics.result()
        return {"data": self.label, "spec": self.spec, "split": self.split, "n": r["n"],
                "acc": r["acc"], "ned": r["ned"], "normalization": r["normalization"],
                "unreadable": self.unreadable}


def parse_data_arg(arg: str) -> tuple[str, str]:
    """``[LABEL=]SPEC`` -> (label, spec). The label defaults to the spec itself."""
    head, sep, tail = arg.partition("=")
    if sep and head and ":" not in head and "/" not in head and ":" in tail:
        return head, tail
    return arg, arg


def _text(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def evaluate_source(rec, source, label: str, spec: str, split: str, *, normalization: str = DEFAULT_NORMALIZATION,
                    limit: Optional[int] = None, writer=None, progress: bool = True) -> DatasetResult:
    """Decodes every record of `source` with `rec` (a Recognizer, or any callable list -> Results)."""
    n = len(source) if limit is None else min(len(source), limit)
    out = DatasetResult(label, spec, split, LineMetrics(normalization))
    chunk = max(1, int(getattr(rec, "batch_size", 8)))
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n, unit="line", desc=label, file=sys.stderr, disable=None, leave=False)

    def failed(rid: str, gt: Optional[str], msg: str):
        out.metrics.update_failed()
        out.unreadable += 1
        if len(out.errors) < MAX_REPORTED_ERRORS:
            out.errors.append((rid, msg))
        if writer is not None:
            writer.write(json.dumps({"data": label, "id": rid, "gt": gt, "pred": None, "score": None,
                                     "correct": False, "error": msg}, ensure_ascii=False) + "\n")

    for start in range(0, n, chunk):
        rows = []  # (id, gt, image) of the records that could be loaded
        for i in range(start, min(start + chunk, n)):
            try:
                r = source[i]
                rows.append((_text(r.get("id", i)), _text(r["text"]), r["image"]))
            except Exception as e:  # a broken record (missing LMDB key, ...): wrong, reported, not fatal
                failed(str(i), None, f"record {i}: cannot be read ({type(e).__name__}: {e})")
        results = rec([img for _, _, img in rows]) if rows else []
        for (rid, gt, _), res in zip(rows, results):
            if res.error is not None or res.text is None:
                failed(rid, gt, res.error or "no prediction")
                continue
            ok, _ = out.metrics.update_one(res.text, gt)
            if writer is not None:
                writer.write(json.dumps({"data": label, "id": rid, "gt": gt, "pred": res.text,
                                         "score": None if res.score is None else round(float(res.score), 6),
                                         "correct": bool(ok)}, ensure_ascii=False) + "\n")
        if bar is not None:
            bar.update(min(start + chunk, n) - start)
    if bar is not None:
        bar.close()
    return out


def total_of(results: list[DatasetResult], normalization: str) -> dict:
    """All lines of all datasets pooled (micro average)."""
    m = LineMetrics(normalization)
    for r in results:
        m.n += r.metrics.n
        m.correct += r.metrics.correct
        m.ned_sum += r.metrics.ned_sum
    t = m.result()
    t["unreadable"] = sum(r.unreadable for r in results)
    return t


def _fmt(x: float, pct: bool) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100 * x:.2f}" if pct else f"{x:.4f}"


def format_table(results: list[DatasetResult], normalization: str) -> str:
    rows = [(r.label, r.split, str(r.metrics.n), _fmt(r.metrics.result()["acc"], True),
             _fmt(r.metrics.result()["ned"], False), str(r.unreadable)) for r in results]
    if len(results) > 1:
        t = total_of(results, normalization)
        rows.append(("all", "", str(t["n"]), _fmt(t["acc"], True), _fmt(t["ned"], False), str(t["unreadable"])))
    head = ("data", "split", "N", "ACC %", "NED", "unread")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]

    def line(cells):
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    desc = NORMALIZATION_HELP.get(normalization, "strings as given")
    out = [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
    out.append(f"normalisation: {normalization} ({desc})")
    return "\n".join(out)


def _json_number(x: float):
    return None if isinstance(x, float) and math.isnan(x) else x


def json_summary(results: list[DatasetResult], normalization: str) -> dict:
    t = total_of(results, normalization)
    out = {"n": t["n"], "acc": _json_number(t["acc"]), "ned": _json_number(t["ned"]),
           "normalization": normalization, "unreadable": t["unreadable"]}
    if len(results) > 1:
        out["datasets"] = [{**s, "acc": _json_number(s["acc"]), "ned": _json_number(s["ned"])}
                           for s in (r.summary() for r in results)]
    else:
        out.update(data=results[0].label, split=results[0].split)
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m ofa_jax.evaluate", description=__doc__.split("\n\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="ofa-jax model dir (default: the model shipped with ofa-jax)")
    ap.add_argument("--data", action="append", metavar="[LABEL=]SPEC",
                    help="tfds:NAME/CONFIG, lmdb:PATH, folder:PATH or render:SPEC (synthetic lines drawn as "
                         "they are read, e.g. render:mixed,max_chars=12); repeat for several datasets")
    ap.add_argument("--split", default="test", help="split to evaluate: train, val or test (default: test)")
    ap.add_argument("--data-dir", help="TFDS data dir (default: TFDS's, $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    ap.add_argument("--normalization", choices=["benchmark", "ofa"], default=DEFAULT_NORMALIZATION,
                    help="text normalisation before scoring (default: benchmark)")
    ap.add_argument("--output", metavar="FILE", help="write per-line predictions as JSON lines")
    ap.add_argument("--json", action="store_true", help="last stdout line: a JSON object with the results")
    ap.add_argument("--batch-size", type=int, default=8, help="images per device batch (default 8)")
    ap.add_argument("--limit", type=int, help="evaluate only the first N lines of each dataset")
    ap.add_argument("--beam", type=int, help="beam size (default: from the model dir, usually 5)")
    ap.add_argument("--max-len", type=int, help="maximum generated tokens (fairseq max_len_b)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], help="compute dtype (default float32)")
    ap.add_argument("--views", metavar="V,V,...", help=VIEWS_HELP)
    ap.add_argument("--polarity", choices=["auto", "keep"], help=POLARITY_HELP)
    ap.add_argument("--max-aspect", type=float, metavar="A", help=ASPECT_HELP)
    ap.add_argument("--engine", choices=["ofa", "rapidocr"], default="ofa",
                    help="ofa (default) or rapidocr: score RapidOCR's PP-OCR recogniser on the same data "
                         "(pip install rapidocr onnxruntime; --model and decoding options are ignored)")
    ap.add_argument("--pages", metavar="DIR", help="whole pages instead: a page set (images + labels.json, "
                    "see docs/pages.md); detection P/R/H-mean at IoU 0.5, end-to-end line ACC/NED, pages/s")
    ap.add_argument("--detector", metavar="DIR", help="with --pages: detector dir (default: the shipped one)")
    ap.add_argument("--baseline", choices=["rapidocr"], help="with --pages: RapidOCR's full pipeline on the "
                    "same pages, side by side (pip install rapidocr onnxruntime)")
    return ap


def evaluate_pages_main(args) -> int:
    """``--pages DIR``: the page pipeline (``ofa_jax.detect.pageset``)."""
    from ofa_jax.detect.pageset import evaluate_pages, format_table, load_page_set
    from ofa_jax.modeldir import ModelDirError
    from ofa_jax.pages import PageReader
    try:
        load_page_set(args.pages)
    except ValueError as e:
        print(f"error: --pages {args.pages}: {e}", file=sys.stderr)
        return 2
    try:
        reader = PageReader.from_pretrained(args.model, args.detector, beam_size=args.beam, max_len=args.max_len,
                                            batch_size=args.batch_size, dtype=args.dtype, views=args.views,
                                            max_aspect=args.max_aspect)
        results = evaluate_pages(args.pages, reader, baseline=args.baseline, limit=args.limit, output=args.output)
    except (ModelDirError, ValueError, ImportError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(results))
    if args.json:
        print(json.dumps(results, ensure_ascii=False))
    return 0


def load_recognizer(args):
    if args.engine == "rapidocr":
        from ofa_jax.baselines import RapidOCRRecognizer
        return RapidOCRRecognizer()
    from ofa_jax.recognizer import Recognizer
    return Recognizer.from_pretrained(args.model, beam_size=args.beam, max_len=args.max_len,
                                      batch_size=args.batch_size, dtype=args.dtype, views=args.views,
                                      polarity=args.polarity, max_aspect=args.max_aspect)


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.batch_size < 1:
        ap.error("--batch-size must be >= 1")
    if args.limit is not None and args.limit < 0:
        ap.error("--limit must be >= 0")
    if args.pages:
        if args.data or args.engine != "ofa":
            ap.error("--pages does not go with --data or --engine (use --baseline rapidocr)")
        return evaluate_pages_main(args)
    if not args.data:
        ap.error("one of --data or --pages is required")
    if args.baseline or args.detector:
        ap.error("--baseline and --detector go with --pages (for lines: --engine rapidocr)")

    from ofa_jax.data.sources import load_eval_source
    from ofa_jax.modeldir import ModelDirError

    # Data first (cheap, and the most common mistake), then the model.
    datasets = []
    for arg in args.data:
        label, spec = parse_data_arg(arg)
        try:
            datasets.append((label, spec, load_eval_source(spec, args.split, args.data_dir)))
        except (OSError, ValueError, KeyError, ImportError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            print(f"error: --data {arg}: {msg}", file=sys.stderr)
            return 2

    if args.model is None and args.engine == "ofa":
        from ofa_jax.recognizer import BUNDLED_MODEL
        print(f"ofa-jax: no --model given; using the bundled model {os.path.basename(BUNDLED_MODEL)}",
              file=sys.stderr)
    try:
        rec = load_recognizer(args)
    except (ModelDirError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    writer = None
    if args.output:
        try:
            writer = open(args.output, "w", encoding="utf-8")
        except OSError as e:
            print(f"error: --output {args.output}: {e.strerror or e}", file=sys.stderr)
            return 2
    results = []
    try:
        for label, spec, source in datasets:
            r = evaluate_source(rec, source, label, spec, args.split, normalization=args.normalization,
                                limit=args.limit, writer=writer)
            results.append(r)
            if r.unreadable:
                print(f"warning: {label}: {r.unreadable} of {r.metrics.n} lines unreadable "
                      "(counted as wrong)", file=sys.stderr)
                for rid, msg in r.errors:
                    print(f"  {rid}: {msg}", file=sys.stderr)
                if r.unreadable > len(r.errors):
                    print(f"  ... and {r.unreadable - len(r.errors)} more"
                          + (f" (all in {args.output})" if args.output else ""), file=sys.stderr)
    finally:
        if writer is not None:
            writer.close()

    print(format_table(results, args.normalization))
    if args.json:
        print(json.dumps(json_summary(results, args.normalization), ensure_ascii=False))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    from ofa_jax.cli import run

    run(main)
