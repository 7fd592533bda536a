"""Data for ofa-jax: TFDS builders, record readers, the grain input pipeline, and OCR metrics.

* `ofa_jax.data.builders` - TFDS builders ``ocr_fudanvi_zh``, ``ocr_synthetic_zh``, ``ocr_folder``
  (ArrayRecord, no TensorFlow needed).
* `ofa_jax.data.sources.load_eval_source` - ``tfds:NAME/CONFIG`` / ``lmdb:PATH`` / ``folder:PATH``
  -> random-access records ``{"id", "image" (encoded bytes), "text"}``.
* `ofa_jax.data.pipeline` - grain pipeline to padded uint8 image batches + OFA targets.
* `ofa_jax.data.metrics` - ACC / NED with the FudanVI benchmark's or OFA's normalisation.
* `ofa_jax.data.text` - training normalisation and the held-out evaluation line list.

``python -m ofa_jax.evaluate --model DIR --data SPEC`` scores a model on any of these sources.

Submodules are imported on demand (TFDS and grain are slow to import and not always needed).
"""
