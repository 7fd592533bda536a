"""``PageReader``: whole pages -> text lines in reading order, each with its box, text and score.

    from ofa_jax import PageReader
    reader = PageReader.from_pretrained()          # shipped recogniser + shipped detector
    for page in reader(["scan.png", "receipt.jpg"]):
        for line in page.lines:
            print(line.box, line.text)

Per page: detect text lines (``ofa_jax.detect``: PP-OCR's DB detector in JAX, jitted per bucket
shape), order them for reading (``reading_order``: columns, top to bottom, left to right), cut each
quadrilateral out with a perspective warp (``crop_line``; a line at least 1.5x taller than wide is
vertical text and turns 90 degrees counter-clockwise so it reads left to right; light text on a dark
background is inverted, ``dark_text_on_light``), and recognise the lines of several pages together
in the ``Recognizer``'s padded batches.

Pages stream: ``reader.iter(pages)`` reads any iterable (a generator too) a chunk of ``chunk_pages``
at a time, detects the chunk's pages in batches per bucket shape, queues their lines and recognises
them in full batches across pages, and yields each page as soon as its last line is read: memory
holds one chunk of page images and less than one recognition batch of crops beyond it, whatever
the number of pages. An unreadable page gives a result with
``error`` set (the others go on); a page without text gives no lines.
"""
from __future__ import annotations

import collections
import dataclasses
import sys
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from ofa_jax.lines import dark_text_on_light

VERTICAL_RATIO = 1.5   # crop height / width from which a line is read as vertical text


@dataclasses.dataclass
class Line:
    box: list             # 4 [x, y] corners in page pixels: top-left, top-right, bottom-right, bottom-left
    text: str
    score: float          # the recogniser's score (length-normalised log-probability, <= 0)
    det_score: float      # mean text probability inside the box (detector)

    def to_dict(self) -> dict:
        return {"box": [[round(float(x), 1), round(float(y), 1)] for x, y in self.box], "text": self.text,
                "score": round(self.score, 6), "det_score": round(self.det_score, 6)}


@dataclasses.dataclass
class PageResult:
    lines: list           # Line, in reading order
    width: int = 0
    height: int = 0
    error: Optional[str] = None
    source: Any = None
    warnings: tuple = ()

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


# ---------------------------------------------------------------------------------------------- geometry


def _extents(boxes: np.ndarray) -> np.ndarray:
    """(n, 4, 2) quads -> (n, 4) axis-aligned x0, y0, x1, y1."""
    return np.concatenate([boxes.min(axis=1), boxes.max(axis=1)], axis=1)


def _rows(idx: list, ext: np.ndarray) -> list:
    """Top to bottom, and left to right within a row: a box joins the current row when it overlaps
    the row's vertical span by at least half its own height."""
    order = sorted(idx, key=lambda i: (ext[i, 1] + ext[i, 3]) / 2)
    rows: list = []
    for i in order:
        y0, y1 = ext[i, 1], ext[i, 3]
        if rows:
            r0, r1 = rows[-1][1]
            if min(y1, r1) - max(y0, r0) >= 0.5 * max(y1 - y0, 1e-6):
                rows[-1][0].append(i)
                rows[-1][1] = (min(r0, y0), max(r1, y1))
                continue
        rows.append([[i], (y0, y1)])
    return [i for members, _ in rows for i in sorted(members, key=lambda j: ext[j, 0])]


def _gutter(idx: list, ext: np.ndarray, unit: float) -> Optional[float]:
    """The x of the widest vertical gutter splitting ``idx`` into columns, or None. A gutter is an x
    range at least ``unit`` wide that at most a few boxes cross (headings, full-width lines, the
    ragged ends of lines); it splits at its middle, with at least 2 boxes wholly on each side, and
    both sides at least a quarter of the block wide (so a receipt's price column or a form's value
    column stays on its row)."""
    if len(idx) < 4:
        return None
    e = ext[idx]
    x_lo, x_hi = int(np.floor(e[:, 0].min())), int(np.ceil(e[:, 2].max()))
    width = x_hi - x_lo
    if width <= 0:
        return None
    cover = np.zeros(width + 1, np.int32)
    for x0, _, x1, _ in e:
        cover[int(x0) - x_lo:int(np.ceil(x1)) - x_lo + 1] += 1
    low = np.flatnonzero(cover <= max(2, len(idx) // 5))
    if not len(low):
        return None
    best = None
    for run in np.split(low, np.flatnonzero(np.diff(low) > 1) + 1):
        a, b = x_lo + run[0], x_lo + run[-1]
        c = (a + b) / 2
        left, right = e[:, 2] <= c, e[:, 0] >= c
        if b - a < unit or left.sum() < 2 or right.sum() < 2:
            continue
        if min(e[left, 2].max() - e[left, 0].min(), e[right, 2].max() - e[right, 0].min()) < 0.25 * width:
            continue
        if best is None or b - a > best[1]:
            best = (c, b - a)
    return None if best is None else float(best[0])


def reading_order(boxes) -> list[int]:
    """Indices of ``boxes`` ((n, 4, 2) quads) in reading order: columns left to right (a heading or
    full-width line that crosses the gutter closes the columns above it and opens new ones below),
    within a column rows top to bottom, within a row left to right. Recursive, so columns inside
    columns work too."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4, 2)
    if len(boxes) == 0:
        return []
    ext = _extents(boxes)
    unit = float(np.median(ext[:, 3] - ext[:, 1]))

    def order(idx: list) -> list:
        c = _gutter(idx, ext, unit)
        if c is None:
            return _rows(idx, ext)
        spanning = sorted((i for i in idx if ext[i, 0] < c < ext[i, 2]), key=lambda i: ext[i, 1])
        out, lo = [], -np.inf
        for s in spanning + [None]:
            hi = ext[s, 1] if s is not None else np.inf
            section = [i for i in idx if i not in spanning and lo <= (ext[i, 1] + ext[i, 3]) / 2 < hi]
            for side in ([i for i in section if ext[i, 2] <= c], [i for i in section if ext[i, 2] > c]):
                out += order(side) if len(side) < len(idx) else _rows(side, ext)
            if s is not None:
                out.append(s)
                lo = ext[s, 1]
        return out

    return order(list(range(len(boxes))))


def crop_line(rgb: np.ndarray, box) -> np.ndarray:
    """The quadrilateral ``box`` of an RGB page, warped to an upright rectangle (its longer opposite
    edges give the size; bicubic, edges replicated); turned 90 degrees counter-clockwise when it is
    at least ``VERTICAL_RATIO`` times taller than wide (a vertical line then reads left to right)."""
    import cv2
    q = np.asarray(box, np.float32).reshape(4, 2)
    w = int(max(np.linalg.norm(q[0] - q[1]), np.linalg.norm(q[3] - q[2])))
    h = int(max(np.linalg.norm(q[0] - q[3]), np.linalg.norm(q[1] - q[2])))
    w, h = max(w, 1), max(h, 1)
    dst = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    out = cv2.warpPerspective(rgb, cv2.getPerspectiveTransform(q, dst), (w, h), flags=cv2.INTER_CUBIC,
                              borderMode=cv2.BORDER_REPLICATE)
    if h >= VERTICAL_RATIO * w:
        out = np.rot90(out)
    return np.ascontiguousarray(out)


# ---------------------------------------------------------------------------------------------- reader


def load_page(page) -> tuple:
    """A page (path, bytes, PIL image, array) -> (RGB uint8 array, its ImageWarning messages, None),
    or (None, (), one-line error) for one that cannot be read."""
    import warnings
    from ofa_jax.preprocess import ImageError, ImageWarning, _describe, _one_line, load_image
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ImageWarning)
            rgb = np.asarray(load_image(page))
        return rgb, tuple(str(w.message) for w in caught if isinstance(w.message, ImageWarning)), None
    except ImageError as e:
        return None, (), str(e)
    except Exception as e:  # noqa: BLE001  an exotic decoder failure is still one line
        return None, (), f"{_describe(page)}: cannot read ({type(e).__name__}: {_one_line(e)})"


class _Pending:
    """A page between detection and output: its result and how many of its lines are still unread."""
    __slots__ = ("result", "todo")

    def __init__(self, result: PageResult, todo: int = 0):
        self.result, self.todo = result, todo


class PageReader:
    """Detector + recogniser. ``chunk_pages``: pages read and detected together (the detector
    batches a chunk's pages per bucket; only one chunk of page images is held at a time)."""

    def __init__(self, recognizer, detector, chunk_pages: int = 16):
        self.recognizer = recognizer
        self.detector = detector
        self.chunk_pages = max(1, int(chunk_pages))

    @classmethod
    def from_pretrained(cls, model: Optional[str] = None, detector: Optional[str] = None, *,
                        beam_size: Optional[int] = None, max_len: Optional[int] = None, batch_size: int = 8,
                        dtype: Optional[str] = None, views=None, compilation_cache: bool = True,
                        chunk_pages: int = 16, devices=None, det_batch_size: Optional[int] = None,
                        max_aspect: Optional[float] = None, **detection) -> "PageReader":
        """``model``: an ofa-jax model dir (default: the shipped recogniser); ``detector``: a detector
        dir (default: the shipped PP-OCRv6 small detector); ``devices``: both split their batches
        over these (default: all); ``detection``: detection.json overrides (``box_thresh``,
        ``unclip_ratio``, ``limit_side_len``, ``max_side_len`` ...); ``max_aspect``: the recogniser's
        (a long line is read in pieces; default: its generation.json's)."""
        from ofa_jax.detect import TextDetector
        from ofa_jax.recognizer import Recognizer
        rec = Recognizer.from_pretrained(model, beam_size=beam_size, max_len=max_len, batch_size=batch_size,
                                         dtype=dtype, views=views, compilation_cache=compilation_cache,
                                         devices=devices, max_aspect=max_aspect)
        det = TextDetector.from_pretrained(detector, devices=devices, batch_size=det_batch_size, **detection)
        return cls(rec, det, chunk_pages=chunk_pages)

    def _detect(self, pages: Sequence, queue: list) -> list:
        """Loads and detects ``pages``; appends each line's (page, box, det_score, crop) to ``queue``
        in reading order and returns the pages' ``_Pending``s in input order."""
        states, loaded = [], []
        for page in pages:
            source = page if isinstance(page, str) else None
            rgb, warns, error = load_page(page)
            if error is not None:
                states.append(_Pending(PageResult([], error=error, source=source)))
                continue
            states.append(_Pending(PageResult([], width=rgb.shape[1], height=rgb.shape[0], source=source,
                                              warnings=warns)))
            loaded.append((states[-1], rgb))
        dets = self.detector.detect_many([rgb for _, rgb in loaded]) if loaded else []
        for (state, rgb), det in zip(loaded, dets):
            for i in reading_order(det.boxes):
                queue.append((state, det.boxes[i], float(det.scores[i]),
                              dark_text_on_light(crop_line(rgb, det.boxes[i]))))
                state.todo += 1
        return states

    def _recognize(self, lines: list) -> None:
        for (state, box, det_score, _), r in zip(lines, self.recognizer([c for *_, c in lines])):
            text = r.text if r.error is None else ""
            state.result.lines.append(Line(box.tolist(), text, float(r.score or 0.0), det_score))
            state.todo -= 1

    def iter(self, pages: Iterable, progress: bool = False, total: Optional[int] = None) -> Iterator[PageResult]:
        """Results in input order, streamed: ``pages`` (any iterable, a generator too) is read a
        chunk at a time; lines go to the recogniser in full batches across pages (the last batch
        padded) and a page is yielded as soon as all its lines are read. ``total``: the page count for
        the progress bar (default: ``len(pages)`` where it has one)."""
        import itertools
        if total is None and hasattr(pages, "__len__"):
            total = len(pages)
        source = iter(pages)
        batch = max(1, int(getattr(self.recognizer, "batch_size", 8)))
        waiting: collections.deque = collections.deque()
        queue: list = []
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=total, unit="page", file=sys.stderr, disable=None)
        try:
            exhausted = False
            while not exhausted or waiting:
                chunk = list(itertools.islice(source, self.chunk_pages)) if not exhausted else []
                exhausted = exhausted or len(chunk) < self.chunk_pages
                waiting.extend(self._detect(chunk, queue))
                while len(queue) >= batch or (exhausted and queue):
                    self._recognize(queue[:batch])
                    del queue[:batch]
                while waiting and waiting[0].todo == 0:
                    yield waiting.popleft().result
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()

    def __call__(self, pages, progress: bool = False):
        """One page (path, bytes, PIL image, RGB array) -> PageResult; a list -> a list."""
        if not isinstance(pages, (list, tuple)):
            return next(self.iter([pages]))
        return list(self.iter(pages, progress=progress))


# ---------------------------------------------------------------------------------------------- drawing


def draw_page(rgb: np.ndarray, result: PageResult, font_path: Optional[str] = None) -> "Image.Image":
    """The page with numbered boxes on the left and, on a white panel to its right, each line's
    recognised text at its box's position (what PaddleOCR's ``draw_ocr`` shows)."""
    from PIL import Image, ImageDraw
    from ofa_jax.data.render import find_cjk_fonts, load_font

    page = Image.fromarray(np.asarray(rgb, np.uint8)).convert("RGB")
    w, h = page.size
    canvas = Image.new("RGB", (2 * w, h), (255, 255, 255))
    canvas.paste(page, (0, 0))
    d = ImageDraw.Draw(canvas)
    fonts = [font_path] if font_path else find_cjk_fonts()
    rng = np.random.default_rng(0)
    for n, line in enumerate(result.lines, 1):
        colour = tuple(int(c) for c in rng.integers(0, 200, 3))
        q = [tuple(p) for p in np.asarray(line.box, np.float32).tolist()]
        d.polygon(q, outline=colour, width=2)
        shifted = [(x + w, y) for x, y in q]
        d.polygon(shifted, outline=colour, width=1)
        box_h = max(np.linalg.norm(np.subtract(q[0], q[3])), 8)
        size = int(max(10, min(box_h * 0.8, 48)))
        font = load_font(fonts[0], size) if fonts else None
        d.text((shifted[0][0] + 2, shifted[0][1]), f"{n} {line.text}", fill=colour, font=font)
    return canvas


# ---------------------------------------------------------------------------------------------- evaluation


def quad_iou(a, b) -> float:
    """IoU of two convex quadrilaterals (exact polygon intersection)."""
    import cv2
    a = np.asarray(a, np.float32).reshape(4, 2)
    b = np.asarray(b, np.float32).reshape(4, 2)
    inter, _ = cv2.intersectConvexConvex(a, b)
    union = abs(cv2.contourArea(a)) + abs(cv2.contourArea(b)) - inter
    return float(inter / union) if union > 0 else 0.0


def page_scores(pred_boxes, pred_texts, gt_boxes, gt_texts, iou: float = 0.5) -> dict:
    """One page: greedy one-to-one matching by IoU (>= ``iou``), counts for detection precision/recall
    and, per ground-truth line, exact text (benchmark normalisation) and normalised edit distance
    (1 for a missed line)."""
    from ofa_jax.data.metrics import normalize_benchmark, normalized_edit_distance
    pairs = sorted(((quad_iou(p, g), i, j) for i, p in enumerate(pred_boxes) for j, g in enumerate(gt_boxes)),
                   reverse=True)
    used_p, used_g, match = set(), set(), {}
    for v, i, j in pairs:
        if v < iou:
            break
        if i not in used_p and j not in used_g:
            used_p.add(i), used_g.add(j)
            match[j] = i
    correct, ned = 0, 0.0
    for j, t in enumerate(gt_texts):
        if j in match:
            p, g = normalize_benchmark(pred_texts[match[j]]), normalize_benchmark(t)
            correct += p == g
            ned += normalized_edit_distance(p, g)
        else:
            ned += 1.0
    return {"pred": len(pred_boxes), "gt": len(gt_boxes), "matched": len(match), "correct": correct, "ned": ned}


def summarize(rows: Sequence[dict]) -> dict:
    """Pages' ``page_scores`` -> precision, recall, H-mean, end-to-end line accuracy and mean NED."""
    n = {k: sum(r[k] for r in rows) for k in ("pred", "gt", "matched", "correct", "ned")}
    p = n["matched"] / n["pred"] if n["pred"] else 0.0
    r = n["matched"] / n["gt"] if n["gt"] else 0.0
    return {"pages": len(rows), "lines": n["gt"], "precision": p, "recall": r,
            "hmean": 2 * p * r / (p + r) if p + r else 0.0, "line_acc": n["correct"] / max(n["gt"], 1),
            "ned": n["ned"] / max(n["gt"], 1)}
