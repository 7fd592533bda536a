"""`ocr_fudanvi_zh`: the FudanVI Chinese text recognition benchmark (scene/web/document/handwriting).

The LMDBs cannot be downloaded automatically (Baidu/Google Drive); put them in a manual dir:

    MANUAL_DIR/scene/scene_train/data.mdb   (or MANUAL_DIR/scene_train/data.mdb)
    MANUAL_DIR/scene/scene_val/data.mdb
    MANUAL_DIR/scene/scene_test/data.mdb
    ... the same for web, document, handwriting

and build with

    from ofa_jax.data.builders import OcrFudanviZh, prepare
    prepare(OcrFudanviZh(config="scene", data_dir=DATA_DIR), manual_dir=MANUAL_DIR)

Records keep the LMDB's image bytes and label unchanged. The train split drops labels that are in
the held-out evaluation list (`ofa_jax.data.text.load_eval_exclude`); val/test are kept whole.
Unreadable records (a label that is not UTF-8, a missing image-/label- key) are left out of every
split, logged with their record number and counted in ``filter_counts`` (printed by
``python -m ofa_jax.data.build``).
"""

from __future__ import annotations

from pathlib import Path

import tensorflow_datasets as tfds

from ofa_jax.data.builders.common import ArrayRecordBuilder, base_features, filter_excluded, log
from ofa_jax.data.records import FudanLmdb, is_lmdb_dir
from ofa_jax.data.text import load_eval_exclude

CONFIGS = ("scene", "web", "document", "handwriting")
SPLITS = ("train", "val", "test")


def candidate_dirs(root: Path, config: str, split: str) -> list[Path]:
    """Where an LMDB for (config, split) may live under the manual dir, in order of preference."""
    return [root / config / f"{config}_{split}", root / f"{config}_{split}", root / config / split]


def find_split_dirs(root: str | Path, config: str) -> dict[str, Path]:
    """{split: LMDB dir} for all three splits; FileNotFoundError naming every expected path."""
    root = Path(root)
    found, missing = {}, []
    for split in SPLITS:
        cands = candidate_dirs(root, config, split)
        hit = next((c for c in cands if is_lmdb_dir(c)), None)
        if hit is None:
            missing.append(" or ".join(str(c / "data.mdb") for c in cands))
        else:
            found[split] = hit
    if missing:
        raise FileNotFoundError(
            f"FudanVI '{config}' LMDBs not found in manual dir {root}. Expected:\n  "
            + "\n  ".join(missing)
            + "\nDownload the benchmark's LMDB folders (github FudanVI/benchmarking-chinese-text-"
              "recognition, 'Download') and unpack them there.")
    return found


class OcrFudanviZh(ArrayRecordBuilder):
    """FudanVI benchmark LMDBs as ArrayRecord (features: id, image bytes, text)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=c, description=f"FudanVI {c} setting")
                       for c in CONFIGS]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download the FudanVI benchmark LMDBs (github FudanVI/benchmarking-chinese-text-recognition)"
        " and place them as MANUAL_DIR/<config>/<config>_{train,val,test}/data.mdb, <config> one of "
        + ", ".join(CONFIGS) + ".")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="FudanVI Chinese text recognition benchmark (scene/web/document/handwriting).",
            features=base_features(),
            supervised_keys=("image", "text"),
            homepage="https://github.com/FudanVI/benchmarking-chinese-text-recognition",
        )

    def _split_generators(self, dl_manager):
        dirs = find_split_dirs(dl_manager.manual_dir, self.builder_config.name)
        return {split: self._generate_examples(str(path), split) for split, path in dirs.items()}

    def _generate_examples(self, path: str, split: str):
        bad: list[str] = []
        records = FudanLmdb(path).iter_readable(bad)
        if split == "train":
            records = filter_excluded(records, load_eval_exclude(), f"{self.name}/{split}",
                                      self.filter_counts)
        for rec in records:
            yield rec["id"], rec
        if bad:  # unreadable records (label not UTF-8, missing keys) are left out, counted and named
            self.filter_counts.setdefault(f"{self.name}/{split}", {})["skipped_unreadable"] = len(bad)
            log.warning("%s/%s: skipped %d unreadable records: %s", self.name, split, len(bad),
                        "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""))
