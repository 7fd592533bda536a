"""Fixtures for the data tests (helpers live in ocr_data_helpers.py)."""

import pytest

from ocr_data_helpers import sample_records


@pytest.fixture
def fudan_manual_dir(tmp_path):
    """MANUAL/scene/scene_{train,val,test} LMDBs; train holds one held-out evaluation line."""
    from ofa_jax.data.records import write_fudan_lmdb

    root = tmp_path / "manual"
    recs = {"train": sample_records(6, with_excluded=True), "val": sample_records(3, offset=100),
            "test": sample_records(4, offset=200, with_excluded=True)}
    for split, rs in recs.items():
        write_fudan_lmdb(root / "scene" / f"scene_{split}", rs, map_size=1 << 24)
    return root, recs

