"""ONNX detector -> ofa-jax detector dir (see ``mapping`` for the name table)."""
from __future__ import annotations

import hashlib
import os
import shutil

from ofa_jax.detect.detector import save_detector_dir
from ofa_jax.detect.net import DetectorConfig
from ofa_jax.modeldir import unflatten

from . import mapping

NOTICE = """\
# {name}: attribution and changes

The parameters in `params.safetensors` are the PP-OCRv6 small text-detection model
(`PP-OCRv6_small_det`) of the PaddleOCR project, copyright Baidu and/or the applicable PaddleOCR
rights holders, licensed under the Apache License, Version 2.0 (`LICENSE` in this directory).

Source: `{source}` (SHA-256 `{sha256}`) as distributed in the `rapidocr` {rapidocr_version} wheel,
whose `MODEL_LICENSES.md` records it as "Converted from an official PaddleOCR model to the indicated
inference format and packaged for use with RapidOCR".

Changes made here: the ONNX initializers were re-laid out (convolution kernels OIHW -> HWIO, biases
flattened) and renamed to the Flax parameter paths of `ofa_jax.detect.net.DBNet` by
`python -m tools.convert_detector`; values are unchanged (float32). No endorsement by Baidu,
PaddlePaddle, PaddleOCR or RapidOCR is implied.
"""


class ConversionError(ValueError):
    pass


def find_rapidocr_model() -> str:
    """The detector ONNX file inside an installed rapidocr wheel."""
    try:
        import rapidocr
    except ImportError:
        raise ConversionError("no SRC given and rapidocr is not installed "
                              "(pip install -e '.[detector-convert]')") from None
    path = os.path.join(os.path.dirname(rapidocr.__file__), "models", "PP-OCRv6_det_small.onnx")
    if not os.path.isfile(path):
        raise ConversionError(f"rapidocr is installed but has no {os.path.basename(path)}")
    return path


def _rapidocr_licence_files(src: str):
    """(LICENSE path or None, rapidocr version) from the wheel's dist-info, when SRC comes from one."""
    try:
        from importlib import metadata
        dist = metadata.distribution("rapidocr")
    except Exception:
        return None, "unknown"
    lic = None
    for f in dist.files or ():
        if f.name == "LICENSE":
            lic = str(dist.locate_file(f))
    return lic, dist.version


def read_onnx(src: str, cfg: DetectorConfig):
    import onnx
    try:
        model = onnx.load(src)
    except Exception as e:  # noqa: BLE001  any decode failure is one line
        raise ConversionError(f"{src}: not a readable ONNX file ({type(e).__name__}: {e})") from None
    rows = mapping.table(model.graph, cfg)
    mapping.check_activations(model.graph, cfg)
    init, _, _ = mapping.graph_index(model.graph)
    params = unflatten({r.flax_path: mapping.transform(r.kind, init[r.onnx_name]) for r in rows})
    return params, rows


def convert(src: str, dst: str, cfg: DetectorConfig = DetectorConfig()) -> list:
    if not os.path.isfile(src):
        raise ConversionError(f"{src}: no such file")
    with open(src, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    params, rows = read_onnx(src, cfg)
    lic, version = _rapidocr_licence_files(src)
    name = os.path.basename(os.path.normpath(dst))
    save_detector_dir(dst, cfg, params, metadata={
        "source": os.path.basename(src), "source_sha256": sha, "source_package": f"rapidocr {version}",
        "upstream_model": "PaddleOCR PP-OCRv6_small_det", "license": "Apache-2.0",
        "converted_by": "python -m tools.convert_detector"})
    if lic:
        shutil.copyfile(lic, os.path.join(dst, "LICENSE"))
    with open(os.path.join(dst, "NOTICE.md"), "w") as f:
        f.write(NOTICE.format(name=name, source=os.path.basename(src), sha256=sha, rapidocr_version=version))
    return rows
