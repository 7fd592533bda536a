"""Reference fixtures for the detector tests, from the reference implementation (onnxruntime and
RapidOCR's detector stage), on small crops of synthetic pages:

    python -m tools.convert_detector.make_fixtures      # needs: pip install -e '.[detector-convert]'

Writes ``tests/fixtures/detector/``: ``page_*.png`` (RGB crops of ``ofa_jax.detect.synth`` pages,
sizes not multiples of 32 so the resize rule is exercised, plus a blank page) and ``reference.npz``
with, per page, onnxruntime's probability map for RapidOCR's preprocessed input and the boxes and
scores of RapidOCR's ``TextDetector`` (the detector stage of ``RapidOCR()``), both run with
``limit_side_len`` = ``LIMIT`` so that the maps stay small enough to commit.
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "detector")
LIMIT = 160
# (seed, kind, warp, crop box (left, top, width, height) in the rendered page)
CROPS = [(1, "document", False, (20, 20, 230, 170)),
         (7, "columns", True, (300, 120, 200, 250)),
         (2, "receipt", True, (30, 60, 260, 190)),
         (3, "sign", False, (40, 40, 330, 200))]


def reference_detector(limit: int):
    """RapidOCR's detector stage (``RapidOCR()``'s ``TextDetector``, default settings) at ``limit``."""
    from rapidocr import RapidOCR
    return RapidOCR(params={"Det.limit_side_len": limit, "Global.log_level": "error"})._load_det_model()


def reference_map(det, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(RapidOCR's preprocessed NCHW input, onnxruntime's (h, w) probability map) for a BGR image."""
    x = det.get_preprocess()(bgr)
    return x, det.session(x)[0, 0]


def main():
    from importlib import metadata

    import onnxruntime
    from ofa_jax.detect.synth import render_page
    from tools.convert_detector.convert import find_rapidocr_model

    os.makedirs(OUT, exist_ok=True)
    det = reference_detector(LIMIT)
    arrays, names = {}, []
    pages = []
    for seed, kind, warp, (x, y, w, h) in CROPS:
        page = render_page(seed, kind, warp=warp)
        pages.append(page.image.crop((x, y, x + w, y + h)))
    blank = np.full((150, 200, 3), 236, np.uint8)
    blank[:, 100:] = 200  # two flat greys: no text
    pages.append(Image.fromarray(blank))
    for i, img in enumerate(pages):
        name = f"page_{i}.png"
        img.save(os.path.join(OUT, name), optimize=True)
        rgb = np.asarray(Image.open(os.path.join(OUT, name)).convert("RGB"))
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        _, prob = reference_map(det, bgr)
        out = det(bgr)
        boxes = np.zeros((0, 4, 2), np.int32) if out.boxes is None else np.asarray(out.boxes, np.int32)
        arrays[f"map_{i}"] = prob.astype(np.float32)
        arrays[f"boxes_{i}"] = boxes
        arrays[f"scores_{i}"] = np.asarray(out.scores or [], np.float64)
        names.append(name)
        print(f"{name}: {rgb.shape[1]}x{rgb.shape[0]} -> map {prob.shape[1]}x{prob.shape[0]}, {len(boxes)} boxes")
    np.savez_compressed(os.path.join(OUT, "reference.npz"), **arrays)
    with open(find_rapidocr_model(), "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump({"pages": names, "limit_side_len": LIMIT, "rapidocr": metadata.version("rapidocr"), "onnxruntime": onnxruntime.__version__, "model_sha256": sha,
            "made_by": "python -m tools.convert_detector.make_fixtures"}, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
