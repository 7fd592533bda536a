"""Page sets with ground truth, and scoring whole-page OCR on them (``python -m ofa_jax.evaluate
--pages DIR [--baseline rapidocr]``).

A page set is a directory of page images and ``labels.json``: ``{image file name: [{"box": 4 [x, y]
corners (top-left, top-right, bottom-right, bottom-left, page pixels), "text": ...}, ...]}`` with
the lines in reading order. ``python -m ofa_jax.detect.synth OUT_DIR`` writes one (generated
documents, two-column pages, receipts and signs, held-out texts); ``examples/pages/`` is one.

Scores (``ofa_jax.pages.page_scores``): detection precision / recall / H-mean with one-to-one
matching at IoU >= 0.5, end-to-end line accuracy (a true line matched and read exactly after the
benchmark normalisation) and NED (a missed line counts 1). Speed: pages/s over the whole set after
each engine has read the first page once (loading, first compilation), on whatever machine runs it.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Optional, Sequence

import numpy as np

LABELS = "labels.json"


def load_page_set(path: str) -> list[tuple[str, list, list]]:
    """``(image path, boxes, texts)`` per page, sorted by file name. ValueError (one line) for a
    directory that is not a page set."""
    labels_path = os.path.join(path, LABELS)
    if not os.path.isdir(path):
        raise ValueError(f"{path}: not a directory")
    if not os.path.isfile(labels_path):
        raise ValueError(f"{path}: no {LABELS} (a page set: images + {LABELS}, see ofa_jax.detect.pageset)")
    try:
        with open(labels_path, encoding="utf-8") as f:
            labels = json.load(f)
        pages = []
        for name in sorted(labels):
            lines = labels[name]
            boxes = [np.asarray(line["box"], np.float32).reshape(4, 2) for line in lines]
            pages.append((os.path.join(path, name), boxes, [str(line["text"]) for line in lines]))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{labels_path}: not a page set's labels ({type(e).__name__}: {e})") from None
    if not pages:
        raise ValueError(f"{labels_path}: no pages")
    return pages


def save_page_set(path: str, pages: Sequence, names: Optional[Sequence[str]] = None) -> None:
    """Writes ``ofa_jax.detect.synth.Page``s as PNG files (lossless: the pixels scored are the pixels
    generated) and their ``labels.json``."""
    os.makedirs(path, exist_ok=True)
    names = list(names or [f"page-{i:03d}-{p.kind}.png" for i, p in enumerate(pages)])
    labels = {}
    for name, page in zip(names, pages):
        page.image.save(os.path.join(path, name))
        labels[name] = [{"box": [[round(float(x), 1), round(float(y), 1)] for x, y in b], "text": t}
                        for b, t in zip(page.boxes, page.texts)]
    with open(os.path.join(path, LABELS), "w", encoding="utf-8") as f:
        json.dump(labels, f, ensure_ascii=False, indent=1)
        f.write("\n")


class RapidOCRPages:
    """RapidOCR's full pipeline (PP-OCR det + cls + rec, ONNX Runtime, its default settings) behind
    ``PageReader``'s call: page paths in, ``PageResult``s out."""

    name = "RapidOCR (PP-OCRv6 det + cls + rec, ONNX)"

    def __init__(self):
        try:
            from rapidocr import RapidOCR
        except ImportError:
            raise ImportError("--baseline rapidocr needs `pip install rapidocr onnxruntime`") from None
        self.engine = RapidOCR(params={"Global.log_level": "error"})

    def __call__(self, paths: Sequence[str]) -> list:
        from ofa_jax.pages import Line, PageResult, load_page
        out = []
        for path in paths:
            rgb, _, error = load_page(path)
            if error is not None:
                out.append(PageResult([], error=error, source=path))
                continue
            r = self.engine(np.ascontiguousarray(rgb[..., ::-1]))   # RapidOCR reads arrays as BGR
            boxes = [] if r.boxes is None else list(r.boxes)
            lines = [Line(np.asarray(b, np.float32).tolist(), t, float(s), float("nan"))
                     for b, t, s in zip(boxes, r.txts or (), r.scores or ())]
            out.append(PageResult(lines, width=rgb.shape[1], height=rgb.shape[0], source=path))
        return out


def score_engine(engine, pages: list, name: str, writer=None, progress: bool = True) -> dict:
    """Runs ``engine`` (a callable: page paths -> PageResults) over ``pages`` (``load_page_set``)
    and scores it; unreadable pages count as pages with no lines found, reported on stderr."""
    from ofa_jax.pages import page_scores, summarize
    paths = [p for p, _, _ in pages]
    engine(paths[:1])   # warm-up: loading, first compilation
    t = time.perf_counter()
    if hasattr(engine, "iter"):
        results = list(engine.iter(paths, progress=progress))
    else:
        results = engine(paths)
    secs = time.perf_counter() - t
    rows, unread = [], 0
    for (path, boxes, texts), res in zip(pages, results):
        if res.error is not None:
            unread += 1
            print(f"error: {res.error}", file=sys.stderr)
        row = page_scores([line.box for line in res.lines], [line.text for line in res.lines], boxes, texts)
        rows.append(row)
        if writer is not None:
            writer.write(json.dumps({"engine": name, "page": path, **row, "error": res.error,
                                     "lines": [{"box": line.box, "text": line.text} for line in res.lines]},
                                    ensure_ascii=False) + "\n")
    return {"engine": name, **summarize(rows), "unreadable": unread, "seconds": secs,
            "pages_per_s": len(pages) / secs if secs > 0 else float("inf")}


def format_table(results: list) -> str:
    head = "| pipeline | pages | lines | det P | det R | det H-mean (IoU 0.5) | e2e line acc | NED | pages/s |"
    out = [head, "|---|---|---|---|---|---|---|---|---|"]
    for s in results:
        out.append(f"| {s['engine']} | {s['pages']} | {s['lines']} | {s['precision']:.3f} | {s['recall']:.3f} | "
                   f"{s['hmean']:.3f} | {s['line_acc']:.3f} | {s['ned']:.3f} | {s['pages_per_s']:.2f} |")
    return "\n".join(out)


def evaluate_pages(path: str, reader, baseline: Optional[str] = None, limit: Optional[int] = None,
                   output: Optional[str] = None, progress: bool = True) -> list:
    """``reader`` (a PageReader) and, with ``baseline="rapidocr"``, RapidOCR's pipeline on the page
    set at ``path``, one after the other in this process: their ``score_engine`` summaries."""
    pages = load_page_set(path)[:limit]
    model = os.path.basename(os.path.normpath(reader.recognizer.model_dir.path))
    engines = [(reader, f"ofa-jax (PP-OCRv6 det in JAX + {model})")]
    if baseline == "rapidocr":
        rapid = RapidOCRPages()
        engines.append((rapid, rapid.name))
    writer = open(output, "w", encoding="utf-8") if output else None
    try:
        return [score_engine(engine, pages, name, writer, progress) for engine, name in engines]
    finally:
        if writer is not None:
            writer.close()
