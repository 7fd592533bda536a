"""DB post-processing: text probability map -> quadrilaterals in page coordinates.

The algorithm of the DB paper (Liao et al., 2020) as PP-OCR and RapidOCR run it, with the libraries
they use, so boxes agree with RapidOCR's detector stage to the pixel:

1. binarise at ``thresh`` (and dilate by a 2x2 square: joins characters split by a 1-pixel gap);
2. each connected region's outer contour (OpenCV) -> its minimum-area rectangle; drop those with a
   side under 3 map pixels;
3. score = mean probability inside the rectangle; drop those under ``box_thresh``;
4. "unclip": the network predicts a shrunk text kernel, so grow the rectangle by
   area * ``unclip_ratio`` / perimeter (Vatti offsetting with round joins, pyclipper), take the
   minimum-area rectangle again, drop it if a side is under 5;
5. scale to the page, clip, order the corners clockwise from top-left, drop boxes of 3 px or less.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

MIN_SIZE = 3


@dataclasses.dataclass(frozen=True)
class DBParams:
    thresh: float = 0.3
    box_thresh: float = 0.5
    unclip_ratio: float = 1.6
    max_candidates: int = 1000
    use_dilation: bool = True
    score_mode: str = "fast"   # "fast": mean inside the rectangle; "slow": inside the contour itself

    @classmethod
    def from_dict(cls, d: dict) -> "DBParams":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _rect_corners(rect) -> tuple[np.ndarray, float]:
    """A cv2 rotated rectangle -> its 4 corners (float32) ordered top-left, top-right, bottom-right,
    bottom-left (the two leftmost by x, each pair split by y), and its shorter side."""
    import cv2
    pts = cv2.boxPoints(rect)
    pts = pts[np.argsort(pts[:, 0], kind="stable")]
    left, right = pts[:2], pts[2:]
    tl, bl = (left[0], left[1]) if left[1][1] > left[0][1] else (left[1], left[0])
    tr, br = (right[0], right[1]) if right[1][1] > right[0][1] else (right[1], right[0])
    return np.array([tl, tr, br, bl], dtype=np.float32), float(min(rect[1]))


def _mean_inside(prob: np.ndarray, poly: np.ndarray) -> float:
    """Mean of ``prob`` over the pixels of ``poly`` (filled, integer vertices), within its bounds."""
    import cv2
    h, w = prob.shape
    x0 = int(np.clip(np.floor(poly[:, 0].min()), 0, w - 1))
    x1 = int(np.clip(np.ceil(poly[:, 0].max()), 0, w - 1))
    y0 = int(np.clip(np.floor(poly[:, 1].min()), 0, h - 1))
    y1 = int(np.clip(np.ceil(poly[:, 1].max()), 0, h - 1))
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    shifted = (poly - np.array([x0, y0], dtype=poly.dtype)).astype(np.int32)
    cv2.fillPoly(mask, shifted.reshape(1, -1, 2), 1)
    return float(cv2.mean(prob[y0:y1 + 1, x0:x1 + 1], mask)[0])


def _grow(box: np.ndarray, ratio: float) -> Optional[np.ndarray]:
    """Offset the polygon outward by area * ratio / perimeter (float64 shoelace and edge lengths)."""
    import pyclipper
    p = box.astype(np.float64)
    x, y = p[:, 0], p[:, 1]
    area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    length = float(np.sum(np.hypot(*(np.roll(p, -1, axis=0) - p).T)))
    if length == 0:
        return None
    off = pyclipper.PyclipperOffset()
    off.AddPath(box, pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    grown = off.Execute(area * ratio / length)
    if not grown:
        return None
    return np.array([pt for poly in grown for pt in poly], dtype=np.int32).reshape(-1, 1, 2)


def _clockwise(box: np.ndarray) -> np.ndarray:
    """Corners ordered top-left, top-right, bottom-right, bottom-left by x then y."""
    xs = box[np.argsort(box[:, 0], kind="stable")]
    left = xs[:2][np.argsort(xs[:2, 1], kind="stable")]
    right = xs[2:][np.argsort(xs[2:, 1], kind="stable")]
    return np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)


def boxes_from_prob(prob: np.ndarray, dest_hw: tuple[int, int], params: DBParams = DBParams()):
    """``prob`` (h, w) float32 map of the resized page -> (boxes (n, 4, 2) float32 integer-valued
    page coordinates, scores (n,) float64), in contour order (see ``reading_order`` for sorting)."""
    import cv2
    h, w = prob.shape
    dest_h, dest_w = dest_hw
    bitmap = (prob > params.thresh).astype(np.uint8)
    if params.use_dilation:
        bitmap = cv2.dilate(bitmap, np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(bitmap * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    boxes, scores = [], []
    for contour in contours[:params.max_candidates]:
        corners, short = _rect_corners(cv2.minAreaRect(contour))
        if short < MIN_SIZE:
            continue
        if params.score_mode == "fast":
            score = _mean_inside(prob, corners)
        else:
            score = _mean_inside(prob, contour.reshape(-1, 2))
        if score < params.box_thresh:
            continue
        grown = _grow(corners, params.unclip_ratio)
        if grown is None:
            continue
        box, short = _rect_corners(cv2.minAreaRect(grown))
        if short < MIN_SIZE + 2:
            continue
        box[:, 0] = np.clip(np.round(box[:, 0] / w * dest_w), 0, dest_w)
        box[:, 1] = np.clip(np.round(box[:, 1] / h * dest_h), 0, dest_h)
        box = _clockwise(box.astype(np.int32).astype(np.float32))
        box[:, 0] = np.floor(np.clip(box[:, 0], 0, dest_w - 1))
        box[:, 1] = np.floor(np.clip(box[:, 1], 0, dest_h - 1))
        if int(np.linalg.norm(box[0] - box[1])) <= 3 or int(np.linalg.norm(box[0] - box[3])) <= 3:
            continue
        boxes.append(box)
        scores.append(score)
    return np.array(boxes, dtype=np.float32).reshape(-1, 4, 2), np.array(scores, dtype=np.float64)
