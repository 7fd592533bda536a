"""Score OCR engines on the independent printed-line set (``bench/data/indep``), as a user runs them.

    python bench/indep_eval.py                        # dev split (val): shipped model plain + views, RapidOCR
    python bench/indep_eval.py --split test           # report test once, with the options chosen on dev
    python bench/indep_eval.py --model DIR --engines plain --json --output preds.jsonl

The set (``tools/indep_set/build.py``) is lines drawn by headless Chromium from hand-written texts
that no training corpus holds, each once clean and once with photographed-looking degradations.
Engines:

* ``plain`` -- the model (default: the shipped one) with plain decoding (``--views id``; its
  generation.json's beam, max length, polarity and long-line pieces, like ``python -m ofa_jax.decode
  --views id``; ``--polarity keep --max-aspect 0`` reads every line whole, as it is);
* ``views`` -- the model as ``python -m ofa_jax.decode`` runs it by default (its generation.json's
  views, if any);
* ``rapidocr`` -- RapidOCR's PP-OCR recogniser on the original image (``ofa_jax.baselines``), when
  ``pip install rapidocr onnxruntime`` is there (skipped with a note otherwise).

Exact match after OFA's normalisation (zh-hans, NFKC, lowercase, no whitespace:
``ofa_jax.data.metrics.normalize_ofa``), by length bucket of the label (2-12, 13-20, 21-40
characters) and subset (clean, hard), plus lines/s of each engine over the whole split (one process,
this machine's CPU; decoding only, the first batch's compile excluded).

``--fit HxW`` first fits every image into H x W keeping its aspect ratio (``preprocess.line_resize``,
what a model of that input size sees, before padding) and hands that to the engines: with
``--engines rapidocr`` a legibility probe of an input size (is a 40-character line still readable
once squeezed into 32 px x W?), independent of what our model has learnt.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT / "bench" / "data" / "indep"
BUCKETS = ((2, 12), (13, 20), (21, 40))
SUBSETS = ("clean", "hard")
ENGINES = ("plain", "views", "rapidocr")


def bucket_of(text: str) -> str:
    n = len(text)
    for lo, hi in BUCKETS:
        if lo <= n <= hi:
            return f"{lo}-{hi}"
    return "other"


def load_split(data: Path, split: str, limit: int | None = None) -> list[dict]:
    path = data / split / "labels.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (build the set: python -m tools.indep_set.build)")
    recs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                r["path"] = str(data / split / r["file"])
                recs.append(r)
    return recs[:limit] if limit is not None else recs


def make_engine(name: str, args):
    if name == "rapidocr":
        from ofa_jax.baselines import RapidOCRRecognizer
        return RapidOCRRecognizer()
    from ofa_jax.recognizer import Recognizer
    return Recognizer.from_pretrained(args.model, beam_size=args.beam, batch_size=args.batch_size,
                                      views="id" if name == "plain" else None, polarity=args.polarity,
                                      max_aspect=args.max_aspect)


def parse_fit(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    h, sep, w = value.lower().partition("x")
    if not sep or not h.isdigit() or not w.isdigit() or int(h) < 8 or int(w) < 8:
        raise argparse.ArgumentTypeError(f"--fit {value!r}: expected HxW, e.g. 32x672")
    return int(h), int(w)


def fitted(path: str, fit: tuple[int, int] | None, glyph_px: int | None = None, text: str = ""):
    """The image an engine gets: the file, or fitted into ``fit`` (HxW), or into 32 x (characters x
    ``glyph_px``): the pixels per character a 40-character line keeps in a 32 x (40 x glyph_px) input."""
    if fit is None and glyph_px is None:
        return path
    from ofa_jax.preprocess import line_resize, load_image
    img = load_image(path)
    if fit is not None:
        img = line_resize(img, *fit)
    if glyph_px is not None:
        img = line_resize(img, 32, max(8, len(text) * glyph_px))
    return img


def run_engine(rec, records: list[dict], fit: tuple[int, int] | None = None,
               glyph_px: int | None = None) -> tuple[list[str | None], float, int]:
    """(predictions, seconds after the first batch, lines in that time)."""
    chunk = max(1, int(getattr(rec, "batch_size", 8)))
    preds: list[str | None] = []
    t0, timed = None, 0
    for i in range(0, len(records), chunk):
        batch = records[i:i + chunk]
        results = rec([fitted(r["path"], fit, glyph_px, r["text"]) for r in batch])
        preds.extend(r.text if r.ok else None for r in results)
        if t0 is None:
            t0 = time.perf_counter()  # compile and warm-up in the first batch
        else:
            timed += len(batch)
    secs = time.perf_counter() - t0 if t0 is not None else 0.0
    return preds, secs, timed


def score(records: list[dict], preds: list[str | None]) -> dict:
    """{"all": (correct, n), "clean/2-12": ..., "clean": ..., "2-12": ...}"""
    from ofa_jax.data.metrics import normalize_ofa

    out: dict[str, list[int]] = {}
    for r, p in zip(records, preds):
        ok = p is not None and normalize_ofa(p) == normalize_ofa(r["text"])
        b = bucket_of(r["text"])
        for key in ("all", r["subset"], b, f"{r['subset']}/{b}"):
            c = out.setdefault(key, [0, 0])
            c[0] += ok
            c[1] += 1
    return {k: tuple(v) for k, v in out.items()}


def row_keys() -> list[str]:
    keys = []
    for s in SUBSETS:
        keys += [f"{s}/{lo}-{hi}" for lo, hi in BUCKETS] + [s]
    return keys + [f"{lo}-{hi}" for lo, hi in BUCKETS] + ["all"]


def format_table(scores: dict[str, dict], speeds: dict[str, float]) -> str:
    names = list(scores)
    lines = ["| lines | n | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for key in row_keys():
        n = next((s[key][1] for s in scores.values() if key in s), 0)
        if not n:
            continue
        cells = [f"{100.0 * s[key][0] / s[key][1]:.1f}%" if key in s else "" for s in scores.values()]
        label = f"**{key}**" if "/" not in key else key
        lines.append(f"| {label} | {n} | " + " | ".join(cells) + " |")
    lines.append("| lines/s | | " + " | ".join(f"{speeds[k]:.2f}" for k in names) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="the set's folder (default bench/data/indep)")
    ap.add_argument("--split", default="val", choices=["val", "test"], help="val (dev, default) or test")
    ap.add_argument("--model", help="ofa-jax model dir (default: the shipped model)")
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma list of plain, views, rapidocr")
    ap.add_argument("--beam", type=int, help="beam size (default: the model dir's)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--polarity", choices=["auto", "keep"], help="as in decode (default: the model dir's)")
    ap.add_argument("--max-aspect", type=float, metavar="A", help="as in decode (default: the model dir's)")
    ap.add_argument("--limit", type=int, help="only the first N lines of the split")
    ap.add_argument("--subset", choices=SUBSETS, help="only the clean or only the hard lines")
    ap.add_argument("--fit", type=parse_fit, metavar="HxW",
                    help="fit each image into HxW (aspect kept) before the engines see it: a legibility probe")
    ap.add_argument("--glyph-px", type=int, metavar="P",
                    help="shrink each line to at most P px per character (and 32 px high) first: how a model "
                         "reads glyphs as small as a 40-character line's in a 32 x 40P input")
    ap.add_argument("--max-chars", type=int, help="only lines of at most this many characters")
    ap.add_argument("--json", action="store_true", help="last stdout line: the results as one JSON object")
    ap.add_argument("--output", help="write per-line predictions (JSON lines) to this file")
    args = ap.parse_args(argv)
    engines = [e for e in args.engines.split(",") if e]
    bad = [e for e in engines if e not in ENGINES]
    if bad or not engines:
        ap.error(f"--engines: unknown {bad} (choose from {', '.join(ENGINES)})")
    try:
        records = load_split(Path(args.data), args.split)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    if args.subset:
        records = [r for r in records if r["subset"] == args.subset]
    if args.max_chars:
        records = [r for r in records if len(r["text"]) <= args.max_chars]
    records = records[:args.limit] if args.limit is not None else records
    if not records:
        print("error: no lines selected", file=sys.stderr)
        return 2

    scores, speeds, preds_by, skipped = {}, {}, {}, []
    for name in engines:
        try:
            rec = make_engine(name, args)
        except ImportError as e:
            skipped.append(f"{name}: {e}")
            print(f"note: {name} skipped: {e}", file=sys.stderr)
            continue
        preds, secs, timed = run_engine(rec, records, args.fit, args.glyph_px)
        scores[name], preds_by[name] = score(records, preds), preds
        speeds[name] = timed / secs if timed and secs > 0 else float("nan")  # nan: one batch only
        print(f"{name}: {scores[name]['all'][0]}/{len(records)} exact, {speeds[name]:.2f} lines/s",
              file=sys.stderr)
    if not scores:
        print("error: no engine ran", file=sys.stderr)
        return 2

    print(f"independent set, split {args.split}{', ' + args.subset if args.subset else ''}, {len(records)} lines, "
          f"exact match (NFKC, lowercase, no spaces){f', images fitted into {args.fit[0]}x{args.fit[1]}' if args.fit else ''}"
          f"{f', at most {args.glyph_px} px per character' if args.glyph_px else ''}")
    print(f"model: {args.model or 'shipped (ofa_jax/models/ofa-ocr-zh-small)'}; machine: {platform.machine()}, "
          f"{os.cpu_count()} CPUs")
    print(format_table(scores, speeds))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            for i, r in enumerate(records):
                f.write(json.dumps({"file": r["file"], "subset": r["subset"], "gt": r["text"],
                                    **{k: v[i] for k, v in preds_by.items()}}, ensure_ascii=False) + "\n")
    if args.json:
        print(json.dumps({"split": args.split, "subset": args.subset, "fit": args.fit, "glyph_px": args.glyph_px,
                          "max_chars": args.max_chars, "n": len(records),
                          "skipped": skipped,
                          "lines_per_s": {k: (None if v != v else v) for k, v in speeds.items()},
                          "acc": {e: {k: c / n for k, (c, n) in s.items()} for e, s in scores.items()},
                          "counts": {e: {k: list(v) for k, v in s.items()} for e, s in scores.items()}},
                         ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
