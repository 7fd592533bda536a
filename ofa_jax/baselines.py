"""Other OCR engines behind the :class:`ofa_jax.recognizer.Recognizer` call interface, so
``python -m ofa_jax.evaluate --engine rapidocr`` scores them on exactly our data, splits and metrics.

RapidOCR (``pip install rapidocr onnxruntime``) ships PP-OCR ONNX models inside its wheel and runs
offline. Only its recognition model is used (``use_det=False, use_cls=False``): our test lines are
already cropped single lines, which is what its recogniser expects; it sees the original image (its
own preprocessing: height 48, aspect kept), not ours.
"""
from __future__ import annotations

import numpy as np

from ofa_jax.preprocess import ImageError, load_image
from ofa_jax.recognizer import Result


class RapidOCRRecognizer:
    batch_size = 8

    def __init__(self):
        try:
            from rapidocr import RapidOCR
        except ImportError:
            raise ImportError("--engine rapidocr needs `pip install rapidocr onnxruntime`") from None
        self.engine = RapidOCR()

    def __call__(self, images) -> list[Result]:
        out = []
        for img in images:
            try:
                rgb = np.asarray(load_image(img))
            except ImageError as e:
                out.append(Result(None, None, error=str(e), source=img))
                continue
            r = self.engine(rgb, use_det=False, use_cls=False, use_rec=True)
            texts, scores = tuple(r.txts or ()), tuple(r.scores or ())
            out.append(Result("".join(texts), float(np.mean(scores)) if scores else None, source=img))
        return out
