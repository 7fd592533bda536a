"""python -m tools.convert_detector [SRC.onnx] DST        PP-OCR DB detector (ONNX) -> ofa-jax detector dir
   python -m tools.convert_detector --print-table [SRC]   the ONNX initializer -> Flax path table

SRC defaults to the PP-OCRv6 small detector inside an installed ``rapidocr`` wheel
(``pip install -e '.[detector-convert]'``). The shipped ``ofa_jax/models/ppocrv6-det-small`` is
``python -m tools.convert_detector ofa_jax/models/ppocrv6-det-small``.
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.convert_detector",
                                 description="Convert PP-OCR's DB text detector (ONNX) to an ofa-jax detector dir.")
    ap.add_argument("paths", nargs="*", metavar="[SRC] DST", help="ONNX file (default: rapidocr's) and output dir")
    ap.add_argument("--print-table", action="store_true", help="print the name table and exit")
    args = ap.parse_args(argv)

    from .convert import ConversionError, convert, find_rapidocr_model, read_onnx
    from .mapping import MappingError
    from ofa_jax.detect.net import DetectorConfig

    try:
        if args.print_table:
            if len(args.paths) > 1:
                ap.error("--print-table takes at most SRC")
            src = args.paths[0] if args.paths else find_rapidocr_model()
            _, rows = read_onnx(src, DetectorConfig())
            for r in rows:
                print(f"{r.onnx_name:34s} {r.kind:6s} {r.flax_path}")
            return 0
        if len(args.paths) not in (1, 2):
            ap.error("expected [SRC] DST")
        src, dst = (args.paths if len(args.paths) == 2 else (find_rapidocr_model(), args.paths[0]))
        rows = convert(src, dst)
        print(f"converted {len(rows)} tensors -> {dst}", file=sys.stderr)
        return 0
    except (ConversionError, MappingError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from ofa_jax.cli import run

    run(main)
