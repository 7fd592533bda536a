"""grain pipeline: determinism, restore from iterator state, targets, eval padding, sources."""

import json

import numpy as np
import pytest

from ocr_data_helpers import (EXCLUDED_LINE, CharTokenizer, assert_batches_equal, sample_records, take,
                              write_label_folder, write_ofasys_tsv)
from ofa_jax.data import pipeline as P
from ofa_jax.data.records import write_fudan_lmdb
from ofa_jax.data.sources import ListSource, load_eval_source

SIZE = 64  # small canvas keeps the tests fast; the OCR resize logic is the same


def source(n=13):
    return ListSource([{"id": str(i), "image": img, "text": t}
                       for i, (img, t) in enumerate(sample_records(n))])


def cfg(**kw):
    base = dict(batch_size=4, image_size=SIZE, max_target_tokens=8, seed=3, num_threads=1)
    base.update(kw)
    return P.PipelineConfig(**base)


def test_same_seed_same_batches_across_epochs():
    a = take(P.make_iterator(source(), cfg(), CharTokenizer()), 7)  # 13 records: > 2 epochs
    b = take(P.make_iterator(source(), cfg(), CharTokenizer()), 7)
    assert_batches_equal(a, b)
    c = take(P.make_iterator(source(), cfg(seed=4), CharTokenizer()), 7)
    assert any(not np.array_equal(x["image"], y["image"]) for x, y in zip(a, c))
    b0 = a[0]
    assert b0["image"].shape == (4, SIZE, SIZE, 3) and b0["image"].dtype == np.uint8
    assert b0["target"].shape == (4, 9) and b0["target"].dtype == np.int32
    assert "text" not in b0  # train batches carry arrays only


def test_restore_from_saved_state_gives_same_next_batch():
    it = P.make_iterator(source(), cfg(), CharTokenizer())
    take(it, 5)  # into the second epoch
    state = json.loads(json.dumps(it.get_state()))  # JSON-able, as saved with the train state
    expected = take(it, 3)
    it2 = P.make_iterator(source(), cfg(), CharTokenizer())
    it2.set_state(state)
    assert_batches_equal(take(it2, 3), expected)


def test_targets_eos_bos_padding_and_truncation():
    tok = CharTokenizer()
    src = ListSource([{"id": "a", "image": sample_records(1)[0][0], "text": "繁體 ＡＢ"},
                      {"id": "b", "image": sample_records(1)[0][0], "text": "0123456789"}])
    b = next(P.make_iterator(src, cfg(batch_size=2, train=False, max_target_tokens=8), tok))
    ids_a = tok.encode("繁体 AB")  # zh-hans + NFKC before tokenising
    np.testing.assert_array_equal(b["target"][0, :5], ids_a + [P.EOS])
    assert (b["target"][0, 5:] == P.PAD).all()
    np.testing.assert_array_equal(b["prev_output_tokens"][0, :5], [P.BOS] + ids_a)
    assert (b["prev_output_tokens"][0, 5:] == P.PAD).all()
    assert b["target_mask"][0].sum() == 5
    # second label has 10 tokens > 8: cut, eos kept, counted
    assert b["truncated"].tolist() == [False, True]
    assert b["target"][1, 8] == P.EOS and b["target_mask"][1].all()
    assert b["text"].tolist() == ["繁體 ＡＢ", "0123456789"]  # raw labels for metrics


def test_encode_target_word_cut_like_modelscope():
    ids, cut = P.encode_target("ab cd ef", CharTokenizer(), max_tokens=10, max_words=2)
    assert ids.tolist() == CharTokenizer().encode("ab cd") + [P.EOS] and not cut


def test_encode_target_spell_alnum():
    tok = P.default_tokenizer()
    ids, _ = P.encode_target("ＡＢ 中", tok, max_tokens=10, spell_alnum=True)  # NFKC, then spelled
    assert tok.convert_ids_to_tokens(ids[:-1]) == ["a", "##b", "中"] and ids[-1] == P.EOS
    plain, _ = P.encode_target("ＡＢ 中", tok, max_tokens=10)
    assert tok.convert_ids_to_tokens(plain[:-1]) == ["ab", "中"]


def test_eval_is_ordered_and_pads_last_batch():
    batches = list(P.make_iterator(source(10), cfg(train=False), CharTokenizer()))
    assert len(batches) == 3
    assert batches[-1]["valid"].tolist() == [True, True, False, False]
    ids = [i for b in batches for i, v in zip(b["id"], b["valid"]) if v]
    assert ids == [str(i) for i in range(10)]
    assert (batches[-1]["image"][2:] == 0).all()


def test_augmentation_train_only_and_seeded():
    src = source(4)
    plain = next(P.make_iterator(src, cfg(train=False), CharTokenizer()))
    aug1 = next(P.make_iterator(src, cfg(train=False, augment=True), CharTokenizer()))
    aug2 = next(P.make_iterator(src, cfg(train=False, augment=True), CharTokenizer()))
    np.testing.assert_array_equal(aug1["image"], aug2["image"])
    assert not np.array_equal(plain["image"], aug1["image"])


def _ink_line(w=120, h=30):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (w, h), (230, 230, 230))
    ImageDraw.Draw(img).rectangle((10, 8, w - 10, 21), fill=(20, 20, 20))
    return img


def test_augment_geometry_comes_after_the_default_draws():
    """With ``geometry`` the default jitter draws the same numbers first, so turning the option off
    gives the images (and the training runs) of before it existed."""
    img = _ink_line()
    for seed in range(20):
        r1, r2 = np.random.default_rng(seed), np.random.default_rng(seed)
        both = P.augment_image(img, r1, geometry=True)
        then = P.augment_geometry(P.augment_image(img, r2), r2)
        np.testing.assert_array_equal(np.asarray(both), np.asarray(then))


def test_augment_geometry_ranges():
    img = _ink_line()

    def darkness(a):  # total ink: how far below the background the pixels are
        return np.clip(230.0 - np.asarray(a, np.float64)[..., 0], 0, None).sum()

    ink = darkness(img)
    widths, inks, padded = [], [], 0
    for seed in range(300):
        out = P.augment_geometry(img, np.random.default_rng(seed))
        a = np.asarray(out)
        padded += out.height > img.height
        if out.height == img.height:  # not padded: the width is the aspect jitter's
            widths.append(out.width / img.width)
            if out.width == img.width:
                inks.append(darkness(a) / ink)
    assert 0.79 <= min(widths) < 0.9 and 1.15 < max(widths) <= 1.26
    assert 0.15 < padded / 300 < 0.45
    assert min(inks) < 0.97 and max(inks) > 1.03  # strokes thinner and thicker
    assert all(0.8 < x < 1.25 for x in inks)      # by about half a pixel, not more


def test_augment_geometry_in_the_pipeline():
    src = source(4)
    plain = next(P.make_iterator(src, cfg(train=False, augment=True), CharTokenizer()))
    geo = next(P.make_iterator(src, cfg(train=False, augment=True, augment_geometry=True), CharTokenizer()))
    assert not np.array_equal(plain["image"], geo["image"])
    np.testing.assert_array_equal(plain["target"], geo["target"])
    off = next(P.make_iterator(src, cfg(train=False, augment=False, augment_geometry=True), CharTokenizer()))
    np.testing.assert_array_equal(off["image"], next(P.make_iterator(src, cfg(train=False), CharTokenizer()))["image"])


def test_resize_and_pad_matches_ocr_rule():
    from PIL import Image

    img = Image.fromarray(np.full((10, 100, 3), 200, np.uint8))
    out = P.resize_and_pad_uint8(img, size=SIZE)
    assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.uint8
    tall = P.resize_and_pad_uint8(Image.fromarray(np.zeros((100, 20, 3), np.uint8)), size=SIZE)
    assert tall.shape == (SIZE, SIZE, 3)


def test_default_tokenizer_matches_documented_prompt_ids():
    tok = P.default_tokenizer()
    assert tok.encode("图片上的文字是什么?") == [1749, 4279, 681, 4642, 3156, 2103, 3225, 788, 724, 140]


def test_shards_are_disjoint():
    a = list(P.make_iterator(source(8), cfg(train=False, shard_index=0, shard_count=2), CharTokenizer()))
    b = list(P.make_iterator(source(8), cfg(train=False, shard_index=1, shard_count=2), CharTokenizer()))
    ids_a = {i for x in a for i, v in zip(x["id"], x["valid"]) if v}
    ids_b = {i for x in b for i, v in zip(x["id"], x["valid"]) if v}
    assert ids_a | ids_b == {str(i) for i in range(8)} and not ids_a & ids_b


def test_worker_processes_deterministic_and_restorable():
    c = cfg(num_workers=2)
    a = take(P.make_iterator(source(), c, CharTokenizer()), 4)
    it = P.make_iterator(source(), c, CharTokenizer())
    take(it, 2)
    state = it.get_state()
    it2 = P.make_iterator(source(), c, CharTokenizer())
    it2.set_state(state)
    assert_batches_equal(take(it2, 2), a[2:])


# ----------------------------------------------------------------------------- load_eval_source

def test_load_eval_source_lmdb_folder_tsv(tmp_path):
    recs = sample_records(4, with_excluded=True)
    write_fudan_lmdb(tmp_path / "web" / "web_test", recs, map_size=1 << 24)
    for spec in (f"lmdb:{tmp_path / 'web' / 'web_test'}", f"lmdb:{tmp_path / 'web'}"):
        src = load_eval_source(spec, split="test")
        assert [(src[i]["image"], src[i]["text"]) for i in range(len(src))] == recs  # eval: no filter
    write_label_folder(tmp_path / "f" / "test", recs, fmt="tsv")
    src = load_eval_source(f"folder:{tmp_path / 'f'}")
    assert [(r["image"], r["text"]) for r in (src[i] for i in range(len(src)))] == recs
    write_ofasys_tsv(tmp_path / "one.tsv", recs)
    src = load_eval_source(f"folder:{tmp_path / 'one.tsv'}")
    assert src[1]["text"] == EXCLUDED_LINE and src[0]["id"] == "uid0"
    with pytest.raises(ValueError):
        load_eval_source("nope")


def test_load_eval_source_tfds(tmp_path, fudan_manual_dir):
    from ofa_jax.data.builders import OcrFudanviZh, prepare

    manual, recs = fudan_manual_dir
    prepare(OcrFudanviZh(config="scene", data_dir=tmp_path / "tfds"), manual_dir=manual)
    src = load_eval_source("tfds:ocr_fudanvi_zh/scene", split="val", data_dir=tmp_path / "tfds")
    got = sorted((src[i] for i in range(len(src))), key=lambda r: r["id"])
    assert [(r["image"], r["text"]) for r in got] == recs["val"]
    assert isinstance(got[0]["text"], str)
    batch = next(P.make_iterator(src, cfg(train=False), CharTokenizer()))
    assert batch["valid"].sum() == 3
