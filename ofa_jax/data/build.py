"""Build a dataset to ArrayRecord without TensorFlow (`tfds build` wants TensorFlow).

    python -m ofa_jax.data.build ocr_fudanvi_zh/scene --manual_dir FUDAN_LMDBS [--data_dir DIR]
    python -m ofa_jax.data.build ocr_synthetic_zh/printed [--num_examples 100000 2000 2000] [--seed 0]
        (with overrides the config is renamed, e.g. printed_n100000_2000_2000_seed0, or --name)
    python -m ofa_jax.data.build ocr_folder --folder PATH --name mydata [--data_dir DIR]

Then read with ``tfds.data_source("ocr_folder/mydata", data_dir=DIR)`` or the evaluation spec
``tfds:ocr_folder/mydata``. ``--data_dir`` defaults to TFDS's (``$TFDS_DATA_DIR`` or
``~/tensorflow_datasets``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ofa_jax.data.build", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", help="ocr_fudanvi_zh/CONFIG, ocr_synthetic_zh/CONFIG or ocr_folder")
    ap.add_argument("--data_dir", default=None)
    ap.add_argument("--manual_dir", default=None, help="FudanVI LMDB root (or the ocr_folder data)")
    ap.add_argument("--folder", default=None, help="ocr_folder: the data folder or .tsv")
    ap.add_argument("--name", default=None,
                    help="config name: ocr_folder data / an ocr_synthetic_zh variant with overrides")
    ap.add_argument("--num_examples", type=int, nargs=3, default=None, metavar=("TRAIN", "VAL", "TEST"))
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--fonts", nargs="*", default=None, help="ocr_synthetic_zh: font files")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="ocr_synthetic_zh: other config fields, e.g. --set max_chars=12 heldout_fonts=2 "
                         "degraded_fraction=0.3 (needs --name)")
    args = ap.parse_args(argv)

    from ofa_jax.data import builders
    from ofa_jax.data.builders import synthetic

    name, _, config = args.dataset.partition("/")
    if name == "ocr_fudanvi_zh":
        b = builders.OcrFudanviZh(config=config or "scene", data_dir=args.data_dir)
        builders.prepare(b, manual_dir=args.manual_dir)
    elif name == "ocr_synthetic_zh":
        base = next((c for c in builders.OcrSyntheticZh.BUILDER_CONFIGS if c.name == (config or "printed")), None)
        if base is None:
            ap.error(f"unknown ocr_synthetic_zh config {config!r}")
        overrides = {}
        if args.num_examples:
            overrides["num_examples"] = tuple(args.num_examples)
        if args.seed is not None:
            overrides["seed"] = args.seed
        if args.fonts:
            overrides["fonts"] = tuple(args.fonts)
        try:
            overrides.update(synthetic.config_overrides(args.set, base))
        except ValueError as e:
            ap.error(f"--set {e}")
        if args.set and not args.name:
            ap.error("--set needs --name (the new config's name)")
        if overrides:  # TFDS wants a new config name for changed settings
            auto = base.name
            if args.num_examples:
                auto += "_n" + "_".join(map(str, args.num_examples))
            if args.seed is not None:
                auto += f"_seed{args.seed}"
            if args.fonts:
                auto += "_fonts"
            overrides["name"] = args.name or auto
        cfg = dataclasses.replace(base, **overrides) if overrides else base
        b = builders.prepare(builders.OcrSyntheticZh(config=cfg, data_dir=args.data_dir))
    elif name == "ocr_folder":
        path = args.folder or args.manual_dir
        if not path:
            ap.error("ocr_folder needs --folder PATH")
        cfg = builders.OcrFolderConfig(name=args.name or config or "default", path=str(path))
        b = builders.prepare(builders.OcrFolder(config=cfg, data_dir=args.data_dir))
    else:
        ap.error(f"unknown dataset {name!r}")
    splits = {k: v.num_examples for k, v in b.info.splits.items()}
    print(json.dumps({"dataset": f"{b.name}/{b.builder_config.name}", "data_dir": str(b.data_dir),
                      "splits": splits, "filtered": getattr(b, "filter_counts", {})}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    from ofa_jax.cli import run

    run(main)
