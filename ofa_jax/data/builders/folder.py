"""`ocr_folder`: your own text-line images, for fine-tuning and evaluation.

Accepted layouts of ``PATH`` (each split may use any of the record layouts):

    PATH/labels.jsonl + images           -> one split, "train"  ({"file": "a.jpg", "text": "..."} lines)
    PATH/labels.tsv   + images           -> one split, "train"  (file<TAB>text lines)
    PATH/{train,val,test}/labels.jsonl   -> those splits (labels.tsv works too; or a FudanVI LMDB)
    PATH/{train,val,test}.tsv            -> those splits, OFA-Sys layout: uniq_id<TAB>base64<TAB>text
    PATH = one OFA-Sys .tsv file         -> one split, "train"

Build with a config naming your data (the name becomes the dataset's config and folder):

    from ofa_jax.data.builders import OcrFolder, OcrFolderConfig, prepare
    b = prepare(OcrFolder(config=OcrFolderConfig(name="mydata", path="PATH"), data_dir=DATA_DIR))
    train = b.as_data_source(split="train")

or without a config object: ``OcrFolder(data_dir=..., config="default")`` with the folder given as the
manual dir (``prepare(builder, manual_dir=PATH)``).

Image bytes and labels are stored unchanged; the train split drops held-out evaluation lines.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tensorflow_datasets as tfds

from ofa_jax.data.builders.common import ArrayRecordBuilder, base_features, filter_excluded
from ofa_jax.data.records import LABEL_FILES, is_lmdb_dir, iter_records
from ofa_jax.data.text import load_eval_exclude

SPLITS = ("train", "val", "test")


def find_folder_splits(path: str | Path) -> dict[str, Path]:
    """{split: split location} for a user data folder (see the module docstring)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".tsv":
        return {"train": path}
    if not path.is_dir():
        raise FileNotFoundError(f"ocr_folder: {path} is neither a folder nor a .tsv file")
    if any((path / n).is_file() for n in LABEL_FILES) or is_lmdb_dir(path):
        return {"train": path}
    found = {}
    for split in SPLITS:
        d, tsv = path / split, path / f"{split}.tsv"
        if d.is_dir():
            found[split] = d
        elif tsv.is_file():
            found[split] = tsv
    if not found:
        raise FileNotFoundError(
            f"ocr_folder: nothing found in {path}. Expected {' or '.join(LABEL_FILES)} there, or "
            f"per-split folders {'/'.join(SPLITS)}/ with one of them, or OFA-Sys files "
            f"{', '.join(s + '.tsv' for s in SPLITS)} (uniq_id<TAB>base64 image<TAB>text).")
    return found


@dataclasses.dataclass
class OcrFolderConfig(tfds.core.BuilderConfig):
    """`path`: the data folder (or .tsv); empty -> the manual dir given at build time."""

    path: str = ""


class OcrFolder(ArrayRecordBuilder):
    """A user folder / TSV of text-line images as ArrayRecord (features: id, image bytes, text)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [OcrFolderConfig(name="default", description="data folder given as manual_dir")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Pass your data folder as the manual dir, or use OcrFolderConfig(name=..., path=...). "
        "Layouts: labels.jsonl / labels.tsv + images; train/ val/ test/ subfolders; or OFA-Sys "
        "train.tsv/val.tsv/test.tsv (uniq_id<TAB>base64 image<TAB>text).")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="User-supplied text-line images with labels.",
            features=base_features(),
            supervised_keys=("image", "text"),
        )

    def _split_generators(self, dl_manager):
        path = self.builder_config.path or dl_manager.manual_dir
        return {split: self._generate_examples(str(loc), split)
                for split, loc in find_folder_splits(path).items()}

    def _generate_examples(self, loc: str, split: str):
        records = iter_records(loc)
        if split == "train":
            records = filter_excluded(records, load_eval_exclude(), f"{self.name}/{split}",
                                      self.filter_counts)
        for i, rec in enumerate(records):
            yield f"{i:09d}", rec
