"""Text-line detection for whole pages: PP-OCR's DB detector as Flax modules (``net``), its
post-processing (``postprocess``) and the ``TextDetector`` that runs both (``detector``)."""
from ofa_jax.detect.detector import (BUCKETS, BUNDLED_DETECTOR, Detection, TextDetector,  # noqa: F401
                                     load_detector_dir, save_detector_dir)
