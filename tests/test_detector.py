"""The JAX detector against the reference (onnxruntime running PP-OCR's ONNX file, RapidOCR's
detector stage): probability maps within 1e-4, boxes matched at IoU >= 0.99.

Without onnxruntime: on the committed fixtures (``python -m tools.convert_detector.make_fixtures``).
With it (``pip install -e '.[detector-convert]'``): also directly, on full-size synthetic pages at
RapidOCR's default settings, and the shipped detector dir is what the converter writes.
"""
import json
import os

import numpy as np
import pytest
from PIL import Image

from ofa_jax.detect import BUCKETS, TextDetector, load_detector_dir
from ofa_jax.detect.detector import BUNDLED_DETECTOR, det_shape, normalize_lut
from ofa_jax.detect.postprocess import boxes_from_prob
from ofa_jax.modeldir import ModelDirError, flatten

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "detector")
MAP_TOL = 1e-4


def one_device():
    import jax
    return jax.devices()[:1]


def quad_iou(a, b) -> float:
    """IoU of two quadrilaterals (rasterised at 4x: exact enough for 0.99 on integer boxes)."""
    import cv2
    s = 4
    lo = np.floor(np.minimum(a.min(0), b.min(0))) - 1
    hi = np.ceil(np.maximum(a.max(0), b.max(0))) + 1
    shape = tuple(int(v) for v in ((hi - lo) * s)[::-1])
    ma, mb = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    cv2.fillPoly(ma, [np.round((a - lo) * s).astype(np.int32)], 1)
    cv2.fillPoly(mb, [np.round((b - lo) * s).astype(np.int32)], 1)
    union = np.logical_or(ma, mb).sum()
    return float(np.logical_and(ma, mb).sum() / union) if union else 1.0


def assert_boxes_match(ours, ref, min_iou=0.99):
    """Same number of boxes, each of ours matched one-to-one to a reference box at IoU >= min_iou."""
    assert len(ours) == len(ref), (len(ours), len(ref))
    free = list(range(len(ref)))
    for box in ours:
        ious = [quad_iou(box, np.asarray(ref[j], np.float32)) for j in free]
        j = int(np.argmax(ious))
        assert ious[j] >= min_iou, (box.tolist(), ious[j])
        free.pop(j)


@pytest.fixture(scope="module")
def detector():
    import jax
    return TextDetector.from_pretrained(devices=jax.devices()[:1])


@pytest.fixture(scope="module")
def fixtures():
    with open(os.path.join(FIX, "reference.json")) as f:
        meta = json.load(f)
    ref = np.load(os.path.join(FIX, "reference.npz"))
    pages = [np.asarray(Image.open(os.path.join(FIX, n)).convert("RGB")) for n in meta["pages"]]
    return meta, ref, pages


def test_fixture_maps_within_1e4(detector, fixtures):
    """Our resize + bucketed (padded) network = RapidOCR's preprocessing + onnxruntime, per page."""
    meta, ref, pages = fixtures
    det = TextDetector.from_pretrained(limit_side_len=meta["limit_side_len"], devices=one_device())
    for i, rgb in enumerate(pages):
        resized, (h, w) = det.network_input(det.to_channels(rgb))
        ours = det.prob_map(resized)
        want = ref[f"map_{i}"]
        assert ours.shape == want.shape
        assert np.abs(ours - want).max() <= MAP_TOL, (i, np.abs(ours - want).max())
    # the pages carry text: a test that passed on all-zero maps would prove nothing
    assert max(float(ref[f"map_{i}"].max()) for i in range(len(pages))) > 0.9


def test_fixture_boxes_match_rapidocr(fixtures):
    """Boxes and scores of the whole detector stage (ours end to end) = RapidOCR's TextDetector."""
    meta, ref, pages = fixtures
    det = TextDetector.from_pretrained(limit_side_len=meta["limit_side_len"], devices=one_device())
    total = 0
    for i, rgb in enumerate(pages):
        out = det.detect_array(det.to_channels(rgb))
        assert_boxes_match(out.boxes, ref[f"boxes_{i}"])
        np.testing.assert_allclose(np.sort(out.scores), np.sort(ref[f"scores_{i}"]), atol=1e-4)
        total += len(out.boxes)
    assert total >= 10 and len(ref[f"boxes_{len(pages) - 1}"]) == 0  # text found; the blank page has none


def test_postprocess_on_reference_maps(fixtures):
    """The post-processing alone, fed onnxruntime's own maps, gives RapidOCR's boxes."""
    meta, ref, pages = fixtures
    for i, rgb in enumerate(pages):
        boxes, scores = boxes_from_prob(ref[f"map_{i}"], rgb.shape[:2])
        assert_boxes_match(boxes, ref[f"boxes_{i}"])
        np.testing.assert_allclose(np.sort(scores), np.sort(ref[f"scores_{i}"]), atol=1e-6)


def test_padding_does_not_change_the_map(detector):
    """A page run unpadded and run padded into its bucket (and into a much larger one) gives the same
    map: the masks make the network ignore the padding (what makes bucketing free)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)
    img[20:40, 10:140] = 10
    x = normalize_lut()[img][None]
    unpadded = detector.prob_map_float(x)[0]
    padded = detector.prob_map(img)                       # bucket 128 x 256
    big = np.zeros((1, 256, 384, 3), np.float32)
    big[0, :96, :160] = x[0]
    wide = np.asarray(detector._net_float(detector.params, big, np.array([[96, 160]], np.int32)))[0, :96, :160]
    assert np.abs(padded - unpadded).max() < 1e-5 and np.abs(wide - unpadded).max() < 1e-5


def test_resize_rule_and_buckets():
    """RapidOCR's size rule (short side up to 736, sides to multiples of 32) and bucket cover."""
    assert det_shape(170, 230, 160) == (160, 224)
    assert det_shape(150, 200, 160) == (160, 224)   # 213 rounds to 224
    assert det_shape(600, 800) == (736, 992)
    assert det_shape(1000, 1500) == (992, 1504)      # already large: only rounded
    assert det_shape(10, 9000) == (32, BUCKETS[-1])   # capped
    assert all(b % 32 == 0 for b in BUCKETS)


def test_bad_detector_dir_is_one_line(tmp_path):
    with pytest.raises(ModelDirError, match="detector dir not found"):
        load_detector_dir(str(tmp_path / "nope"))
    d = tmp_path / "det"
    d.mkdir()
    (d / "model.onnx").write_bytes(b"x")
    with pytest.raises(ModelDirError, match="convert it with `python -m tools.convert_detector`"):
        load_detector_dir(str(d))


# ---------------------------------------------------------------------------------------------- with onnxruntime


@pytest.fixture(scope="module")
def reference():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("rapidocr")
    from tools.convert_detector.make_fixtures import reference_detector
    return reference_detector(736)


def test_direct_parity_on_full_pages(detector, reference):
    """Full-size synthetic pages at RapidOCR's default settings (short side 736): same input tensor,
    maps within 1e-4, same boxes."""
    from ofa_jax.detect.synth import render_page
    from tools.convert_detector.make_fixtures import reference_map
    for seed, kind, warp in ((11, "columns", False), (12, "receipt", True)):
        rgb = np.asarray(render_page(seed, kind, warp=warp).image)
        bgr = detector.to_channels(rgb)
        x, want = reference_map(reference, bgr)
        resized, _ = detector.network_input(bgr)
        np.testing.assert_array_equal(normalize_lut()[resized], x[0].transpose(1, 2, 0))
        ours = detector.prob_map(resized)
        assert np.abs(ours - want).max() <= MAP_TOL, np.abs(ours - want).max()
        out = detector.detect_array(bgr)
        ref = reference(bgr)
        assert len(out.boxes) >= 5
        assert_boxes_match(out.boxes, np.asarray(ref.boxes))


def test_shipped_dir_is_the_converters_output(tmp_path):
    """Converting rapidocr's ONNX file again gives the shipped parameters bit for bit."""
    pytest.importorskip("onnx")
    pytest.importorskip("rapidocr")
    from tools.convert_detector.convert import convert, find_rapidocr_model
    convert(find_rapidocr_model(), str(tmp_path / "det"))
    a, b = load_detector_dir(BUNDLED_DETECTOR), load_detector_dir(str(tmp_path / "det"))
    fa, fb = flatten(a.params), flatten(b.params)
    assert fa.keys() == fb.keys() and len(fa) == 162
    assert all(np.array_equal(fa[k], fb[k]) for k in fa)
    assert a.metadata["source_sha256"] == b.metadata["source_sha256"]


# ---------------------------------------------------------------------------------------------- scale


def _text_page(h, w, texts=("第一行文字", "你好世界")):
    """A white (h, w) page with a few lines of 28-pixel text (enough for the detector at small sizes)."""
    from PIL import Image, ImageDraw
    from ofa_jax.data.render import find_cjk_fonts, load_font
    fonts = find_cjk_fonts()
    if not fonts:
        pytest.skip("no CJK font")
    font = load_font(fonts[0], 28)
    im = Image.new("RGB", (w, h), (255, 255, 255))
    d = ImageDraw.Draw(im)
    for k, t in enumerate(texts):
        d.text((12, 12 + 50 * k), t, font=font, fill=(0, 0, 0))
    return np.asarray(im)


def test_one_program_per_bucket_whatever_the_page_size():
    """Pages of five sizes that resize into one bucket pair compile one program (counted in the jitted
    function's cache); a page in another bucket pair compiles a second; none recompiles."""
    import jax
    det = TextDetector.from_pretrained(limit_side_len=96, devices=jax.devices()[:1], batch_size=1)
    sizes = [(100, 120), (110, 125), (90, 100), (120, 140), (97, 131)]   # all -> at most 128 x 128
    assert {tuple(BUCKETS[next(i for i, b in enumerate(BUCKETS) if b >= s)] for s in det_shape(h, w, 96))
            for h, w in sizes} == {(128, 128)}
    for h, w in sizes:
        det.detect_rgb(np.full((h, w, 3), 255, np.uint8))
        assert det.compiled_programs() == 1
    det.detect_rgb(np.full((300, 100, 3), 255, np.uint8))            # -> 288 x 96: bucket 384 x 128
    assert det.compiled_programs() == 2
    det.detect_many([np.full((h, w, 3), 255, np.uint8) for h, w in sizes])
    assert det.compiled_programs() == 2


def test_batched_and_sharded_detection_equals_one_page_at_a_time():
    """Pages of different sizes detected together, batched per bucket and split over 8 (fake) devices,
    give each page's boxes from a one-device run one page at a time."""
    import jax
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 (fake) devices")
    pages = [_text_page(h, w) for h, w in ((128, 256), (140, 250), (200, 260), (128, 230))]   # 2 bucket pairs
    one = TextDetector.from_pretrained(limit_side_len=128, devices=jax.devices()[:1], batch_size=1)
    eight = TextDetector.from_pretrained(limit_side_len=128, devices=jax.devices()[:8])
    assert eight.batch_sizes == (8, 16)
    together = eight.detect_many(pages)
    for page, got in zip(pages, together):
        want = one.detect_rgb(page)
        assert len(want.boxes) == 2 and got.shape == page.shape[:2]
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
