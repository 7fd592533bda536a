"""python -m tools.convert_weights SRC DST            PyTorch (ModelScope dir / fairseq .pt) -> ofa-jax
   python -m tools.convert_weights --to-pytorch SRC DST [--allow-non-square]   ofa-jax model dir -> ModelScope dir
   python -m tools.convert_weights --print-table PRESET   the name table, one row per tensor
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.convert_weights",
                                 description="Convert OFA checkpoints between PyTorch and ofa-jax.")
    ap.add_argument("src", nargs="?", help="ModelScope model dir, fairseq .pt, or (with --to-pytorch) an ofa-jax model dir")
    ap.add_argument("dst", nargs="?", help="output dir")
    ap.add_argument("--vocab", help="vocab.txt in OFA layout (fairseq checkpoints; default: bundled Chinese vocab)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], help="store parameters in this dtype (default: as is)")
    ap.add_argument("--to-pytorch", action="store_true", help="export an ofa-jax model dir to a ModelScope dir")
    ap.add_argument("--format", choices=["bin", "safetensors"], default="bin", help="weights file for --to-pytorch")
    ap.add_argument("--allow-non-square", action="store_true",
                    help="--to-pytorch: write a model with a non-square input (patch_image_size [H, W]) although "
                         "ModelScope's stock OCR pipeline cannot run it (OfaForAllTasks with your own preprocessing can)")
    ap.add_argument("--print-table", metavar="PRESET", help="print the PyTorch -> ofa-jax name table and exit")
    args = ap.parse_args(argv)

    from ofa_jax.modeldir import ModelDirError
    from .convert import ConversionError, convert, export_pytorch
    from . import mapping

    try:
        if args.print_table:
            from ofa_jax.config import get_config
            cfg = get_config(args.print_table)
            for r in mapping.table(cfg):
                print(f"{r.torch_key:70s} {r.kind:7s} {r.flax_path}")
            for k in mapping.extra_keys(cfg):
                print(f"{k:70s} {'extra':7s} extra/{k}")
            for pattern, reason in mapping.DROPPED:
                print(f"{pattern:70s} dropped {reason}")
            return 0
        if not args.src or not args.dst:
            ap.error("SRC and DST are required")
        if args.to_pytorch:
            out = export_pytorch(args.src, args.dst, args.format, allow_non_square=args.allow_non_square)
            print(f"wrote {out}", file=sys.stderr)
        else:
            source = convert(args.src, args.dst, vocab=args.vocab, dtype=args.dtype)
            c = source.config
            print(f"converted {source.kind} checkpoint ({c.resnet_type}, d_model {c.d_model}, "
                  f"{c.encoder_layers}+{c.decoder_layers} layers) -> {args.dst}", file=sys.stderr)
        return 0
    except (ConversionError, ModelDirError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from ofa_jax.cli import run

    run(main)
