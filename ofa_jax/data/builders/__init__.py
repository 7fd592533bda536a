"""TFDS builders (importing this module registers them with TFDS):

* ``ocr_fudanvi_zh/{scene,web,document,handwriting}`` - FudanVI benchmark LMDBs (manual dir).
* ``ocr_synthetic_zh/{printed,degraded,mixed}`` - text lines rendered from offline fonts.
* ``ocr_folder/<name>`` - your own images + labels.jsonl / TSV, or OFA-Sys TSV.

All write ArrayRecord and need no TensorFlow; read them with ``tfds.data_source(name, data_dir=...)``
or ``builder.as_data_source()``.
"""

from ofa_jax.data.builders.common import FILE_FORMAT, prepare
from ofa_jax.data.builders.folder import OcrFolder, OcrFolderConfig, find_folder_splits
from ofa_jax.data.builders.fudanvi import OcrFudanviZh, find_split_dirs
from ofa_jax.data.builders.synthetic import OcrSyntheticZh, OcrSyntheticZhConfig

__all__ = [
    "FILE_FORMAT", "prepare", "OcrFolder", "OcrFolderConfig", "find_folder_splits",
    "OcrFudanviZh", "find_split_dirs", "OcrSyntheticZh", "OcrSyntheticZhConfig",
]
