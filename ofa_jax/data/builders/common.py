"""Shared pieces of the TFDS builders: features, and the held-out line filter for training splits.

The builders run without TensorFlow: images are handed to `tfds.features.Image` as encoded bytes
(stored unchanged), `DatasetInfo` is built directly, and the file format is ArrayRecord, read back
with `tfds.data_source` / `builder.as_data_source()`.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
from typing import Iterable, Iterator

import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

from ofa_jax.data.text import EvalExclude

log = logging.getLogger(__name__)

FILE_FORMAT = "array_record"


class ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of our builders: ArrayRecord by default, and a plain `code_path`.

    TFDS's own `code_path` probes `importlib_resources` (not always installed, not otherwise
    needed); the builder's source file is all it needs here.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("file_format", FILE_FORMAT)
        super().__init__(*args, **kwargs)
        self.filter_counts: dict = {}

    @tfds_utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(inspect.getfile(cls))


def base_features(**extra) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "id": tfds.features.Text(doc="record id in the source (LMDB index, file name, uniq_id)"),
        "image": tfds.features.Image(shape=(None, None, 3), doc="encoded image, bytes as in the source"),
        "text": tfds.features.Text(doc="label exactly as in the source (no normalisation)"),
        **extra,
    })


def filter_excluded(records: Iterable[dict], exclude: EvalExclude, where: str,
                    counter: dict | None = None) -> Iterator[dict]:
    """Drop records whose text is a held-out evaluation line; count and log how many."""
    dropped = kept = 0
    for rec in records:
        if rec["text"] in exclude:
            dropped += 1
            continue
        kept += 1
        yield rec
    if counter is not None:
        counter[where] = {"kept": kept, "dropped_eval_lines": dropped}
    log.info("%s: kept %d records, dropped %d held-out evaluation lines (list: %s)",
             where, kept, dropped, exclude.source)


class _GFileShim:
    """The four ``tf.io.gfile`` / ``tf.errors`` names TFDS's shuffler uses, on local files."""

    class errors:
        class ResourceExhaustedError(Exception):  # never raised here: a full disk raises OSError
            pass

    class io:
        class gfile:
            GFile = staticmethod(open)
            exists = staticmethod(os.path.exists)
            remove = staticmethod(os.remove)


def _tf_free_shuffler() -> None:
    """TFDS keeps up to 1 GB of examples in memory while writing a split, then spills to bucket files
    through ``tf.io.gfile``: without TensorFlow, a split over 1 GB died with ``No module named
    'tensorflow'`` after all examples were generated. Point the shuffler at plain local files."""
    if importlib.util.find_spec("tensorflow") is None:
        from tensorflow_datasets.core import shuffle

        shuffle.tf = _GFileShim


_tf_free_shuffler()


def prepare(builder: tfds.core.DatasetBuilder, manual_dir=None) -> tfds.core.DatasetBuilder:
    """`download_and_prepare` with an optional manual dir; returns the builder."""
    cfg = tfds.download.DownloadConfig(manual_dir=str(manual_dir)) if manual_dir else None
    builder.download_and_prepare(download_config=cfg)
    return builder
