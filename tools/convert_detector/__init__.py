"""PP-OCR DB text detector (ONNX, as shipped in the ``rapidocr`` wheel) -> ofa-jax detector dir."""
