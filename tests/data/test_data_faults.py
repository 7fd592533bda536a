"""Messy training data: invalid UTF-8 in an LMDB, unreadable images, out-of-vocabulary characters,
empty and over-long labels. Each is mapped as the reference does (or skipped), counted per row and
named; nothing ends the pipeline with a traceback."""
import lmdb
import numpy as np
import pytest

from ocr_data_helpers import encoded_image, sample_records
from ofa_jax.data import pipeline as P
from ofa_jax.data.records import FudanLmdb, RecordError, write_fudan_lmdb
from ofa_jax.data.report import DataError, DataReport
from ofa_jax.data.sources import ListSource
from ofa_jax.tokenizer import OFATokenizer

SIZE = 64


def _lmdb_with_bad_label(path, n=4, bad=2):
    """A FudanVI LMDB whose record ``bad`` (1-based) has a label that is not UTF-8."""
    write_fudan_lmdb(path, sample_records(n), map_size=1 << 24)
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"label-%09d" % bad, "好".encode("utf-8")[:2] + b"\xff\xfe ok")
    env.close()


def test_lmdb_invalid_utf8_is_a_one_line_record_error(tmp_path):
    _lmdb_with_bad_label(tmp_path / "db")
    db = FudanLmdb(tmp_path / "db")
    assert db[0]["text"] == sample_records(4)[0][1]
    with pytest.raises(RecordError) as info:
        db[1]
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / 'db'}: record 000000002: label is not valid UTF-8") and "\n" not in msg
    errors = []
    ids = [r["id"] for r in db.iter_readable(errors)]
    assert ids == ["000000001", "000000003", "000000004"] and len(errors) == 1 and "000000002" in errors[0]


def test_fudanvi_builder_skips_and_counts_unreadable_records(tmp_path):
    from ofa_jax.data.builders import OcrFudanviZh, prepare

    root = tmp_path / "manual" / "scene"
    for split in ("train", "val", "test"):
        _lmdb_with_bad_label(root / f"scene_{split}", n=3, bad=3)
    b = prepare(OcrFudanviZh(config="scene", data_dir=tmp_path / "tfds"), manual_dir=tmp_path / "manual")
    assert b.info.splits["test"].num_examples == 2 and b.info.splits["train"].num_examples == 2
    assert b.filter_counts["ocr_fudanvi_zh/test"]["skipped_unreadable"] == 1


class _Broken:
    """A source whose record 1 raises on read (like a missing LMDB key)."""

    def __init__(self, inner):
        self.inner = inner

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        if int(i) == 1:
            raise RecordError("somewhere.lmdb: record 000000002: missing image-000000002")
        return self.inner[i]


def _messy_source():
    tok = OFATokenizer.default()
    img = sample_records(1)[0][0]
    recs = [
        {"id": "ok", "image": img, "text": "你好"},
        {"id": "read-fails", "image": img, "text": "never read"},
        {"id": "oov", "image": img, "text": "你𠀀好☃"},            # two characters outside the vocab
        {"id": "empty", "image": img, "text": "   "},              # empty after normalisation
        {"id": "long", "image": img, "text": "一二三四五六七八九十"},  # 10 tokens > max 6
        {"id": "bad-image", "image": b"\x89PNG\r\n\x1a\n broken", "text": "坏"},
        {"id": "oov-cut", "image": img, "text": "一二三四五六☃"},      # the <unk> falls beyond the cut
        {"id": "ok2", "image": encoded_image(5, "JPEG"), "text": "世界"},
    ]
    assert tok.encode("你𠀀好☃").count(tok.unk_id) == 2
    return _Broken(ListSource(recs)), tok


def test_pipeline_skips_bad_records_and_counts_label_problems(capsys):
    src, tok = _messy_source()
    cfg = P.PipelineConfig(batch_size=8, image_size=SIZE, max_target_tokens=6, train=False)
    b = next(P.make_iterator(src, cfg, tok))
    ids = list(b["id"])
    row = {rid: i for i, rid in enumerate(ids) if rid}
    bad = b["bad_record"]
    assert bad.sum() == 2 and not b["valid"][bad].any() and b["valid"].sum() == 6
    # skipped rows add nothing to the loss: no target tokens at all
    assert not b["target_mask"][bad].any() and (b["prev_output_tokens"][bad] == P.PAD).all()
    assert (b["image"][bad] == 0).all()
    assert b["oov_tokens"][row["oov"]] == 2 and b["oov_tokens"][row["oov-cut"]] == 0
    assert b["oov_tokens"].sum() == 2
    assert b["empty_label"][row["empty"]] and b["empty_label"].sum() == 1
    assert list(b["target"][row["empty"], :2]) == [P.EOS, P.PAD]  # eos alone, as the reference
    assert b["truncated"][row["long"]] and b["truncated"][row["oov-cut"]] and b["truncated"].sum() == 2
    # the OOV characters are <unk> in the target, as the reference's tokenizer maps them
    assert list(b["target"][row["oov"], :5]) == tok.encode("你𠀀好☃") + [P.EOS]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(l.startswith("warning: skipping unreadable record: ") for l in err)
    assert any("record 000000002: missing image" in l for l in err)
    assert any(l.endswith("record bad-image: <15 bytes>: not a readable image") for l in err)
    report = DataReport()
    report.update(b)
    assert report.metrics() == {"records_seen": 8, "truncated": 2, "oov_tokens": 2, "empty_label": 1,
                                "bad_record": 2}
    line = report.news()
    assert line == ("data: 2 labels truncated to max_target_tokens, 2 out-of-vocabulary tokens (<unk>), "
                    "1 empty labels, 2 unreadable records skipped (of 8 records read so far)")
    assert report.news() == ""  # nothing new


def test_bad_records_error_policy_raises():
    src, tok = _messy_source()
    cfg = P.PipelineConfig(batch_size=8, image_size=SIZE, max_target_tokens=6, train=False, bad_records="error")
    with pytest.raises(Exception, match="record 000000002: missing image"):
        next(P.make_iterator(src, cfg, tok))


def test_mostly_unreadable_data_is_an_error():
    r = DataReport(max_bad_fraction=0.5, min_records=16)
    r.update({"target": np.zeros((8, 3)), "bad_record": np.ones(8, bool)})
    r.check("x")  # too few records to judge yet
    r.update({"target": np.zeros((8, 3)), "bad_record": np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)})
    with pytest.raises(DataError, match=r"x: 11 of the first 16 records could not be read"):
        r.check("x")
