"""TFDS builders on small generated data: exact round trip, held-out line filter, no TensorFlow."""

import importlib.util
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ocr_data_helpers import EXCLUDED_LINE, sample_records, write_label_folder, write_ofasys_tsv
from ofa_jax.data import render
from ofa_jax.data.builders import (OcrFolder, OcrFolderConfig, OcrFudanviZh, OcrSyntheticZh,
                                   OcrSyntheticZhConfig, prepare)
from ofa_jax.data.text import load_eval_exclude

SKIP = {"image": tfds.decode.SkipDecoding()}


def read_split(builder, split):
    src = builder.as_data_source(split=split, decoders=SKIP)
    return [src[i] for i in range(len(src))]


def as_pairs(examples):
    """(image bytes, text) pairs in source order (TFDS shuffles on write; `id` restores order)."""
    exs = sorted(examples, key=lambda e: e["id"])
    return [(e["image"], e["text"].decode("utf-8")) for e in exs]


def test_tensorflow_is_not_importable():
    assert importlib.util.find_spec("tensorflow") is None
    assert "tensorflow" not in sys.modules


def test_packaged_exclusion_list():
    ex = load_eval_exclude()
    assert len(ex) == 1502
    assert "明天是星期天。" in ex  # from the list's later part (it grew from 600 lines)
    assert EXCLUDED_LINE in ex and f" {EXCLUDED_LINE}\n" in ex
    assert "你好世界" not in ex


def test_fudanvi_round_trip_and_filter(tmp_path, fudan_manual_dir):
    manual, recs = fudan_manual_dir
    b = prepare(OcrFudanviZh(config="scene", data_dir=tmp_path / "tfds"), manual_dir=manual)
    assert b.info.splits["train"].num_examples == len(recs["train"]) - 1
    # train: the held-out line is gone, everything else byte-identical and in order
    train = read_split(b, "train")
    assert as_pairs(train) == [r for r in recs["train"] if r[1] != EXCLUDED_LINE]
    assert b.filter_counts["ocr_fudanvi_zh/train"] == {"kept": 6, "dropped_eval_lines": 1}
    # val/test are evaluation data: kept whole (including U+2028 and surrounding spaces in labels)
    assert as_pairs(read_split(b, "test")) == recs["test"]
    assert as_pairs(read_split(b, "val")) == recs["val"]
    assert sorted(e["id"].decode() for e in train)[0] == "000000001"
    assert "tensorflow" not in sys.modules
    # readable by name through tfds.data_source too
    src = tfds.data_source("ocr_fudanvi_zh/scene", split="val", data_dir=str(tmp_path / "tfds"),
                           decoders=SKIP, builder_kwargs={"file_format": "array_record"})
    assert len(src) == 3


def test_fudanvi_missing_files_message(tmp_path):
    (tmp_path / "manual" / "web").mkdir(parents=True)
    b = OcrFudanviZh(config="web", data_dir=tmp_path / "tfds")
    with pytest.raises(FileNotFoundError) as e:
        prepare(b, manual_dir=tmp_path / "manual")
    msg = str(e.value)
    for split in ("train", "val", "test"):
        assert f"web_{split}/data.mdb" in msg


@pytest.mark.parametrize("layout", ["jsonl", "tsv", "ofasys", "ofasys_single", "flat"])
def test_folder_round_trip(tmp_path, layout):
    root = tmp_path / "mydata"
    recs = {"train": sample_records(5, with_excluded=True), "test": sample_records(3, offset=50)}
    if layout in ("jsonl", "tsv"):
        for split, rs in recs.items():
            write_label_folder(root / split, rs, fmt=layout)
    elif layout == "ofasys":
        root.mkdir()
        for split, rs in recs.items():
            write_ofasys_tsv(root / f"{split}.tsv", rs)
    elif layout == "ofasys_single":
        root.mkdir()
        root = root / "all.tsv"
        write_ofasys_tsv(root, recs["train"])
        recs = {"train": recs["train"]}
    else:
        write_label_folder(root, recs["train"])
        recs = {"train": recs["train"]}
    b = prepare(OcrFolder(config=OcrFolderConfig(name=f"my_{layout}", path=str(root)),
                          data_dir=tmp_path / "tfds"))
    assert set(b.info.splits.keys()) == set(recs)
    assert as_pairs(read_split(b, "train")) == [r for r in recs["train"] if r[1] != EXCLUDED_LINE]
    if "test" in recs:
        assert as_pairs(read_split(b, "test")) == recs["test"]


def test_exclusion_list_from_env(tmp_path, monkeypatch):
    recs = sample_records(3)
    custom = tmp_path / "exclude.txt"
    custom.write_text(recs[2][1] + "\n", encoding="utf-8")
    monkeypatch.setenv("OFA_JAX_EVAL_EXCLUDE", str(custom))
    write_label_folder(tmp_path / "d", recs)
    b = prepare(OcrFolder(config=OcrFolderConfig(name="env", path=str(tmp_path / "d")),
                          data_dir=tmp_path / "tfds"))
    assert as_pairs(read_split(b, "train")) == recs[:2]


def test_folder_as_manual_dir_and_errors(tmp_path):
    write_label_folder(tmp_path / "d", sample_records(2))
    b = prepare(OcrFolder(data_dir=tmp_path / "tfds"), manual_dir=tmp_path / "d")
    assert b.info.splits["train"].num_examples == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="labels.jsonl"):
        prepare(OcrFolder(config=OcrFolderConfig(name="e", path=str(tmp_path / "empty")),
                          data_dir=tmp_path / "tfds"))


def test_synthetic_font_hold_out_split():
    b = OcrSyntheticZh(config=OcrSyntheticZhConfig(name="f", fonts=("/x/c.ttf", "/y/a.ttf", "/z/b.ttf"),
                                                   heldout_fonts=1), data_dir="/nonexistent")
    s = b.split_fonts()
    assert s["test"] == ["/x/c.ttf"] and s["train"] == s["val"] == ["/y/a.ttf", "/z/b.ttf"]
    b1 = OcrSyntheticZh(config=OcrSyntheticZhConfig(name="g", fonts=("/y/a.ttf",), heldout_fonts=1),
                        data_dir="/nonexistent")
    assert b1.split_fonts()["test"] == ["/y/a.ttf"]  # one font: nothing to hold out (warned)


def _synthetic_config(name, tmp_path, fonts, sources, n=(12, 4, 4)):
    return OcrSyntheticZhConfig(name=name, num_examples=n, degraded_fraction=0.5, fonts=fonts,
                                text_sources=sources, optional_text_sources=(), heldout_fonts=0,
                                min_font_size=16, max_font_size=24, max_chars=12, seed=7)


def test_synthetic_latin_deterministic_and_filtered(tmp_path):
    # Pillow's built-in font + Latin text: runs on machines without CJK fonts.
    lines = tmp_path / "lines.txt"
    kept = [f"line {i}" for i in range(30)]
    lines.write_text("\n".join(kept + [EXCLUDED_LINE, "Lorem ipsum"]) + "\n", encoding="utf-8")
    cfg = dict(fonts=(render.PIL_DEFAULT,), sources=("alnum", f"file:{lines}"))
    a = prepare(OcrSyntheticZh(config=_synthetic_config("lat", tmp_path, **cfg), data_dir=tmp_path / "a"))
    b = prepare(OcrSyntheticZh(config=_synthetic_config("lat", tmp_path, **cfg), data_dir=tmp_path / "b"))
    for split in ("train", "val", "test"):
        ea, eb = as_pairs(read_split(a, split)), as_pairs(read_split(b, split))
        assert ea == eb  # same seed, same bytes
        assert all(text != EXCLUDED_LINE for _, text in ea)
    train_texts = {t for _, t in as_pairs(read_split(a, "train"))}
    test_texts = {t for _, t in as_pairs(read_split(a, "test"))}
    assert not (train_texts & test_texts & set(kept))  # fixed lines are split by hash
    ex = read_split(a, "train")[0]
    assert ex["font"] == b"pil-default"


@pytest.mark.skipif(not render.find_cjk_fonts(), reason="no CJK font installed (pip install paperang-p2-fonts-cjk)")
def test_synthetic_cjk_renders(tmp_path):
    from PIL import Image
    import io

    b = prepare(OcrSyntheticZh(config=_synthetic_config("cjk", tmp_path, fonts=(),
                                                        sources=("gb2312",), n=(6, 2, 2)),
                               data_dir=tmp_path / "t"))
    exs = read_split(b, "train")
    assert len(exs) == 6
    for e in exs:
        img = Image.open(io.BytesIO(e["image"]))
        assert img.mode == "RGB" and img.size[0] > img.size[1] >= 16
        assert all(render.font_has_char(render.find_cjk_fonts()[0], ch) for ch in e["text"].decode())


def test_font_collections_draw_their_simplified_chinese_face():
    """Noto's CJK collections open on their Japanese face; the renderer must pick the SC one."""
    from PIL import ImageFont

    assert render.face_index(render.PIL_DEFAULT) == 0
    fonts = render.find_cjk_fonts()
    noto = [p for p in fonts if render.font_key(p).startswith("NotoSansCJK")]
    if not noto:
        pytest.skip("fonts-noto-cjk not installed")
    for p in noto:
        i = render.face_index(p)
        assert ImageFont.truetype(p, 16, index=0).getname()[0].endswith(" JP")
        assert ImageFont.truetype(p, 16, index=i).getname()[0].endswith(" SC")
        assert render.load_font(p, 16).getname()[0].endswith(" SC")
        # the two faces draw 直 differently, and lines are rendered with the Chinese one
        masks = [bytes(ImageFont.truetype(p, 32, index=k).getmask("直")) for k in (0, i)]
        assert masks[0] != masks[1] and bytes(render.load_font(p, 32).getmask("直")) == masks[1]
    for p in fonts:  # single-face files and collections without a Chinese-tagged face keep face 0
        if not p.endswith(".ttc") or render.font_key(p).startswith("wqy"):
            assert render.face_index(p) == 0


def test_build_cli_folder(tmp_path, capsys):
    import json

    from ofa_jax.data.build import main

    write_label_folder(tmp_path / "d", sample_records(3, with_excluded=True))
    assert main(["ocr_folder", "--folder", str(tmp_path / "d"), "--name", "cli",
                 "--data_dir", str(tmp_path / "tfds")]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["dataset"] == "ocr_folder/cli" and out["splits"] == {"train": 3}
    assert out["filtered"]["ocr_folder/train"]["dropped_eval_lines"] == 1


def test_build_cli_set_overrides(tmp_path):
    from ofa_jax.data import build

    args = ["ocr_synthetic_zh/printed", "--data_dir", str(tmp_path), "--num_examples", "6", "2", "2",
            "--name", "short", "--set", "max_chars=4", "min_chars=3", "heldout_fonts=0"]
    assert build.main(args) == 0
    ds = tfds.data_source("ocr_synthetic_zh/short", data_dir=str(tmp_path), split="train")
    lens = {len(ds[i]["text"].decode() if isinstance(ds[i]["text"], bytes) else ds[i]["text"]) for i in range(len(ds))}
    assert len(ds) == 6 and lens <= {3, 4}
    with pytest.raises(SystemExit):
        build.main(["ocr_synthetic_zh/printed", "--data_dir", str(tmp_path), "--set", "colour=red", "--name", "x"])


def test_split_larger_than_the_shuffle_buffer_builds_without_tensorflow(tmp_path, monkeypatch):
    """TFDS spills splits over its 1 GB in-memory buffer to files via tf.io.gfile (a 200k-line build
    died there); shrink the buffer to force the spill path."""
    from tensorflow_datasets.core import shuffle

    from ofa_jax.data import build

    monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", 1000)
    assert build.main(["ocr_synthetic_zh/printed", "--data_dir", str(tmp_path), "--num_examples", "8", "2", "2",
                       "--name", "spill", "--set", "max_chars=4"]) == 0
    ds = tfds.data_source("ocr_synthetic_zh/spill", data_dir=str(tmp_path), split="train")
    assert len(ds) == 8 and len({ds[i]["id"] for i in range(8)}) == 8


def test_render_source_equals_the_built_dataset(tmp_path):
    """`render:` draws example i of a split exactly as the build writes it (so training can skip
    the build and evaluation can score the same held-out test lines)."""
    from ofa_jax.data import build
    from ofa_jax.data.sources import load_eval_source

    assert build.main(["ocr_synthetic_zh/mixed", "--data_dir", str(tmp_path), "--num_examples", "4", "3", "3",
                       "--name", "same", "--set", "max_chars=6", "degraded_fraction=0.5"]) == 0
    for split in ("train", "test"):
        built = load_eval_source("tfds:ocr_synthetic_zh/same", split, tmp_path)
        rendered = load_eval_source("render:mixed,max_chars=6,degraded_fraction=0.5,n=4,n_eval=3", split)
        assert len(built) == len(rendered)
        by_id = {}
        for i in range(len(built)):
            r = built[i]
            by_id[r["id"].decode() if isinstance(r["id"], bytes) else r["id"]] = r
        for i in range(len(rendered)):
            r = rendered[i]
            b = by_id[r["id"]]
            assert (b["text"].decode() if isinstance(b["text"], bytes) else b["text"]) == r["text"]
            from ofa_jax.data.pipeline import decode_image
            assert np.array_equal(np.asarray(decode_image(b["image"])), np.asarray(decode_image(r["image"])))
    with pytest.raises(ValueError, match="KEY=VALUE"):
        load_eval_source("render:colour=red", "train")


def test_render_source_decoded_gives_the_same_training_elements():
    """Training reads `render:` lines with ``decoded=True`` (clean lines as pixels, no PNG round trip):
    the pipeline's elements (augmentation included) are the same as from the encoded records."""
    from ofa_jax.data import pipeline
    from ofa_jax.data.sources import load_eval_source
    from ofa_jax.tokenizer import OFATokenizer

    spec = "render:mixed,max_chars=6,degraded_fraction=0.5,n=12"
    encoded, decoded = load_eval_source(spec, "train"), load_eval_source(spec, "train")
    decoded.decoded = True
    kinds = {type(decoded[i]["image"]) for i in range(len(decoded))}
    assert kinds == {bytes, np.ndarray}  # degraded lines keep their JPEG bytes
    cfg = pipeline.PipelineConfig(batch_size=4, image_size=(32, 128), max_target_tokens=8, train=True, seed=3)
    tok = OFATokenizer.default()
    it_a, it_b = pipeline.make_iterator(encoded, cfg, tok), pipeline.make_iterator(decoded, cfg, tok)
    for _ in range(3):  # one epoch: every line once
        a, b = next(it_a), next(it_b)
        for key in a:
            assert np.array_equal(a[key], b[key]), key


def test_synthetic_lines_stay_in_the_ofa_vocabulary():
    from ofa_jax.data.sources import load_eval_source
    from ofa_jax.tokenizer import OFATokenizer

    tok = OFATokenizer.default()
    src = load_eval_source("render:printed,min_chars=8,max_chars=12,n=60", "train")
    assert all(tok.unk_id not in tok.encode(src[i]["text"]) for i in range(len(src)))
    assert not src.builder.in_vocab("\u4e0e\U00020000")  # a CJK Extension B character: not in bert-base-chinese
