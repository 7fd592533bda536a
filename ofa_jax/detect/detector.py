"""``TextDetector``: pages in, text-line quadrilaterals out (PP-OCR's DB detector in JAX).

A detector dir (what ``python -m tools.convert_detector`` writes; one ships in
``ofa_jax/models/ppocrv6-det-small``):

    config.json          DetectorConfig (architecture)
    params.safetensors   Flax parameters by path ("params/backbone/stem/stem1/kernel", ...), float32
    detection.json       pre/post-processing defaults (sizes, thresholds), RapidOCR's values
    metadata.json        format, source file and its SHA-256
    LICENSE, NOTICE.md   Apache-2.0 and the attribution of the upstream weights

Sizes (the documented rule, RapidOCR's): a page whose longer side exceeds ``max_side_len`` (2000) is
first shrunk to it (sides rounded to 32, at least 32); then it is scaled so that its shorter side is at least ``limit_side_len`` (736;
``limit_type`` "min") and each side is rounded to a multiple of 32 (the network's stride); a side that
would then exceed ``MAX_DET_SIDE`` (4096) shrinks the page to fit (short side at least 32). Boxes come back in the coordinates
of the page as given.

Buckets: the resized page is zero-padded to the next size in ``BUCKETS`` per side (the network
ignores the padding exactly, see ``ofa_jax.detect.net``), so one jit compilation serves every page
with the same bucket pair: a run over pages of many sizes compiles a handful of programs, not one per
page. Pages of one bucket pair run together in a few fixed batch sizes, split over the devices
(``TextDetector.prob_maps``).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

import numpy as np

from ofa_jax.detect.net import DetectorConfig
from ofa_jax.detect.postprocess import DBParams, boxes_from_prob
from ofa_jax.modeldir import ModelDirError, flatten, read_optional_json, unflatten

FORMAT = "ofa-jax-detector-dir"
FORMAT_VERSION = 1
PARAMS_FILE = "params.safetensors"
BUNDLED_DETECTOR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models",
                                "ppocrv6-det-small")
BUCKETS = (128, 256, 384, 512, 640, 736, 864, 1024, 1280, 1536, 1792, 2048, 2560, 3072, 4096)
MAX_DET_SIDE = BUCKETS[-1]
DEFAULT_DETECTION = {"max_side_len": 2000, "limit_side_len": 736, "limit_type": "min", "mean": 0.5, "std": 0.5,
                     "channel_order": "BGR", **dataclasses.asdict(DBParams())}


def bucket(side: int) -> int:
    """The padded size of a resized side (a multiple of 32 up to MAX_DET_SIDE)."""
    for b in BUCKETS:
        if side <= b:
            return b
    raise ValueError(f"side {side} exceeds the largest bucket {MAX_DET_SIDE}")


def _round32(x: float) -> int:
    return int(round(x / 32) * 32)


def shrink_shape(h: int, w: int, max_side_len: int) -> tuple[int, int]:
    """The huge-page rule: the longer side down to ``max_side_len``, sides rounded to 32 (RapidOCR's
    ``reduce_max_side``); unchanged when it fits."""
    if max(h, w) <= max_side_len:
        return h, w
    ratio = max_side_len / (h if h > w else w)
    return max(32, _round32(int(h * ratio))), max(32, _round32(int(w * ratio)))


def det_shape(h: int, w: int, limit_side_len: int = 736, limit_type: str = "min") -> tuple[int, int]:
    """The network's input size for an (h, w) image: RapidOCR's DetPreProcess rule (see the module
    docstring), then capped at MAX_DET_SIDE. (0, 0) for an image too small to round to 32."""
    if limit_type == "max":
        ratio = limit_side_len / (h if h > w else w) if max(h, w) > limit_side_len else 1.0
    elif limit_type == "min":
        ratio = limit_side_len / (h if h < w else w) if min(h, w) < limit_side_len else 1.0
    else:
        raise ValueError(f"limit_type must be 'min' or 'max', not {limit_type!r}")
    rh, rw = _round32(int(h * ratio)), _round32(int(w * ratio))
    if max(rh, rw) > MAX_DET_SIDE:
        s = MAX_DET_SIDE / max(rh, rw)
        rh, rw = (min(MAX_DET_SIDE, max(32, _round32(int(rh * s)))),
                  min(MAX_DET_SIDE, max(32, _round32(int(rw * s)))))
    return (rh, rw) if rh > 0 and rw > 0 else (0, 0)


def normalize_lut(mean: float = 0.5, std: float = 0.5) -> np.ndarray:
    """uint8 -> float32 as RapidOCR normalises ((x * (1/255) in float32, then - mean, / std in float64)."""
    x = np.arange(256, dtype=np.float32) * np.float32(1 / 255.0)
    return ((x.astype(np.float64) - mean) / std).astype(np.float32)


# ---------------------------------------------------------------------------------------------- dirs


@dataclasses.dataclass
class DetectorDir:
    path: str
    config: DetectorConfig
    params: dict
    detection: dict
    metadata: dict


def save_detector_dir(path: str, config: DetectorConfig, params: dict, detection: Optional[dict] = None,
                      metadata: Optional[dict] = None) -> None:
    from safetensors.numpy import save_file
    os.makedirs(path, exist_ok=True)
    tensors = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in flatten(params).items()}
    tmp = os.path.join(path, PARAMS_FILE + ".tmp")
    save_file(tensors, tmp, metadata={"format": FORMAT})
    os.replace(tmp, os.path.join(path, PARAMS_FILE))
    config.save(os.path.join(path, "config.json"))
    for name, d in (("detection.json", dict(DEFAULT_DETECTION, **(detection or {}))),
                    ("metadata.json", {"format": FORMAT, "format_version": FORMAT_VERSION, **(metadata or {})})):
        with open(os.path.join(path, name), "w") as f:
            json.dump(d, f, indent=2, ensure_ascii=False)
            f.write("\n")


def load_detector_dir(path: str) -> DetectorDir:
    """Reads and checks a detector dir; ModelDirError (one line, naming the file) if anything is off."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    from ofa_jax.detect.net import abstract_params

    if not os.path.isdir(path):
        raise ModelDirError(f"detector dir not found: {path}")
    for name in ("config.json", PARAMS_FILE):
        if not os.path.isfile(os.path.join(path, name)):
            hint = " (an ONNX detector? convert it with `python -m tools.convert_detector`)" \
                if any(n.endswith(".onnx") for n in os.listdir(path)) else ""
            raise ModelDirError(f"{path}: missing {name}{hint}")
    try:
        config = DetectorConfig.load(os.path.join(path, "config.json"))
    except (ValueError, TypeError, OSError) as e:
        raise ModelDirError(f"{path}/config.json: {e}") from None
    try:
        flat = load_file(os.path.join(path, PARAMS_FILE))
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise ModelDirError(f"{path}/{PARAMS_FILE}: unreadable ({e})") from None
    want = {k: tuple(v.shape) for k, v in flatten(abstract_params(config)).items()}
    have = {k: tuple(v.shape) for k, v in flat.items()}
    if want != have:
        bad = sorted(set(want) ^ set(have)) or [k for k in want if want[k] != have[k]]
        raise ModelDirError(f"{path}/{PARAMS_FILE} does not match {path}/config.json ({len(bad)} tensors differ, "
                            f"e.g. {bad[0]})")
    detection = {**DEFAULT_DETECTION, **read_optional_json(path, "detection.json")}
    meta = read_optional_json(path, "metadata.json")
    return DetectorDir(path, config, unflatten(flat), detection, meta)


# ---------------------------------------------------------------------------------------------- detector


@dataclasses.dataclass
class Detection:
    boxes: np.ndarray     # (n, 4, 2) float32 page coordinates: top-left, top-right, bottom-right, bottom-left
    scores: np.ndarray    # (n,) mean text probability inside each box
    shape: tuple          # (h, w) of the page


class TextDetector:
    """PP-OCR DB detection, jitted per bucket shape and batch size (see the module docstring).

    ``devices`` (default: all of ``jax.devices()``, or ``[device]``): pages are split over them on a
    ``data`` mesh axis (parameters replicated), as the ``Recognizer`` splits lines. ``batch_size``:
    the most pages per network call (default 2 per device); a bucket's pages run in batches of
    ``len(devices) * 2**k`` pages (the smallest that holds them, padded with empty pages), so the
    compiled programs are at most (bucket pairs used) x (log2(batch_size / len(devices)) + 1)."""

    def __init__(self, ddir: DetectorDir, device=None, devices=None, batch_size: Optional[int] = None,
                 **overrides):
        import jax
        import jax.numpy as jnp
        from ofa_jax.detect.net import DBNet

        unknown = sorted(set(overrides) - set(DEFAULT_DETECTION))
        if unknown:
            raise ValueError(f"unknown detection settings {unknown}")
        self.dir = ddir
        self.settings = {**ddir.detection, **{k: v for k, v in overrides.items() if v is not None}}
        self.db = DBParams.from_dict(self.settings)
        if self.settings.get("channel_order", "BGR") not in ("BGR", "RGB"):
            raise ValueError(f"channel_order must be BGR or RGB, not {self.settings['channel_order']!r}")
        if devices is None:
            devices = [device] if device is not None else jax.devices()
        self.devices = list(devices)
        n = len(self.devices)
        per_device = max(1, -(-(batch_size or 2 * n) // n))
        self.batch_sizes = tuple(n * 2 ** k for k in range(per_device.bit_length())
                                 if 2 ** k <= per_device)
        self.batch_size = self.batch_sizes[-1]
        self.device = self.devices[0]
        params = jax.tree_util.tree_map(np.asarray, ddir.params)
        if n > 1:
            from jax.sharding import NamedSharding, PartitionSpec as P
            from ofa_jax import partitioning
            mesh = partitioning.make_mesh({"data": -1}, self.devices)
            self.params = jax.device_put(params, NamedSharding(mesh, P()))
            self._shardings = (partitioning.batch_sharding(mesh, 4), partitioning.batch_sharding(mesh, 2))
        else:
            self.params = jax.device_put(params, self.device)
            self._shardings = (self.device, self.device)
        net = DBNet(ddir.config)
        lut = jnp.asarray(normalize_lut(self.settings["mean"], self.settings["std"]))

        def prob(params, pixels, valid):
            return net.apply(params, lut[pixels], valid)

        self._prob = jax.jit(prob)
        self._net_float = jax.jit(lambda params, x, valid: net.apply(params, x, valid))

    @classmethod
    def from_pretrained(cls, path: Optional[str] = None, device=None, devices=None,
                        batch_size: Optional[int] = None, **overrides) -> "TextDetector":
        """A detector dir (default: the one shipped with ofa-jax); ``overrides``: detection.json keys."""
        return cls(load_detector_dir(path or BUNDLED_DETECTOR), device=device, devices=devices,
                   batch_size=batch_size, **overrides)

    def compiled_programs(self) -> int:
        """How many (bucket, batch) programs the page path has compiled so far."""
        return int(self._prob._cache_size())

    # ------------------------------------------------------------------------------------------
    def network_input(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """uint8 (H, W, 3) in the detector's channel order -> (resized uint8 (h, w, 3), (h, w)), with
        (0, 0) for an image too small to detect in."""
        import cv2
        h, w = image.shape[:2]
        rh, rw = det_shape(h, w, self.settings["limit_side_len"], self.settings["limit_type"])
        if rh == 0:
            return np.zeros((0, 0, 3), np.uint8), (0, 0)
        return cv2.resize(image, (rw, rh)), (rh, rw)

    def prob_map_float(self, x: np.ndarray) -> np.ndarray:
        """Normalised float32 (B, h, w, 3) in the detector's channel order (RapidOCR's input, NHWC)
        -> (B, h, w) probabilities, unpadded: the network as onnxruntime runs it (parity tests)."""
        valid = np.tile(np.asarray(x.shape[1:3], np.int32), (x.shape[0], 1))
        return np.asarray(self._net_float(self.params, x, valid))

    def prob_maps(self, resized: list) -> list:
        """Resized uint8 (h, w, 3) pages (h, w multiples of 32) -> their (h, w) probability maps.
        Pages are grouped by bucket pair, each group run in the fixed batch sizes, split over the
        devices."""
        import jax
        groups: dict = {}
        for i, r in enumerate(resized):
            groups.setdefault((bucket(r.shape[0]), bucket(r.shape[1])), []).append(i)
        out: list = [None] * len(resized)
        for (bh, bw), idx in groups.items():
            for start in range(0, len(idx), self.batch_size):
                part = idx[start:start + self.batch_size]
                size = next(b for b in self.batch_sizes if b >= len(part))
                pixels = np.zeros((size, bh, bw, 3), np.uint8)
                valid = np.zeros((size, 2), np.int32)
                for j, i in enumerate(part):
                    h, w = resized[i].shape[:2]
                    pixels[j, :h, :w] = resized[i]
                    valid[j] = (h, w)
                maps = self._prob(self.params, jax.device_put(pixels, self._shardings[0]),
                                  jax.device_put(valid, self._shardings[1]))
                maps = np.asarray(jax.device_get(maps))
                for j, i in enumerate(part):
                    out[i] = maps[j, :valid[j, 0], :valid[j, 1]]
        return out

    def prob_map(self, resized: np.ndarray) -> np.ndarray:
        """One resized page -> its (h, w) probability map (run padded to its bucket)."""
        return self.prob_maps([resized])[0]

    def to_channels(self, rgb: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(rgb[..., ::-1]) if self.settings.get("channel_order", "BGR") == "BGR" else rgb

    def _boxes(self, prob: Optional[np.ndarray], shape: tuple) -> Detection:
        if prob is None:
            return Detection(np.zeros((0, 4, 2), np.float32), np.zeros((0,)), shape)
        boxes, scores = boxes_from_prob(prob, shape, self.db)
        return Detection(boxes, scores, shape)

    def detect_array(self, image: np.ndarray) -> Detection:
        """uint8 (H, W, 3) already in the detector's channel order, without the huge-page rule:
        RapidOCR's ``TextDetector`` stage exactly."""
        resized, (h, w) = self.network_input(image)
        return self._boxes(self.prob_map(resized) if h else None, image.shape[:2])

    def detect_many(self, pages: list) -> list:
        """RGB uint8 (H, W, 3) pages -> their Detections in page coordinates (the huge-page rule,
        then RapidOCR's detector stage), the network run batched per bucket (``prob_maps``)."""
        import cv2
        work, inputs = [], []
        for rgb in pages:
            h, w = rgb.shape[:2]
            sh, sw = shrink_shape(h, w, self.settings["max_side_len"])
            img = self.to_channels(rgb)
            if (sh, sw) != (h, w):
                img = cv2.resize(img, (sw, sh))
            resized, (rh, _) = self.network_input(img)
            work.append(((h, w), (sh, sw), len(inputs) if rh else None))
            if rh:
                inputs.append(resized)
        maps = self.prob_maps(inputs) if inputs else []
        out = []
        for (h, w), (sh, sw), k in work:
            det = self._boxes(None if k is None else maps[k], (sh, sw))
            if (sh, sw) != (h, w) and len(det.boxes):   # back to the page as given
                det.boxes = det.boxes * np.array([w / sw, h / sh], np.float32)
            det.shape = (h, w)
            out.append(det)
        return out

    def detect_rgb(self, rgb: np.ndarray) -> Detection:
        """One RGB uint8 (H, W, 3) page -> its text boxes in page coordinates (``detect_many``)."""
        return self.detect_many([rgb])[0]

    def __call__(self, image: Any) -> Detection:
        """A page (path, bytes, PIL image, RGB uint8 array) -> its text boxes in page coordinates.
        Raises ofa_jax.ImageError for an unreadable page."""
        from ofa_jax.preprocess import load_image
        return self.detect_rgb(np.asarray(load_image(image)))
