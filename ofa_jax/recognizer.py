"""``Recognizer``: the Python API for OCR with an ofa-jax model dir.

    from ofa_jax import Recognizer
    r = Recognizer.from_pretrained("models/ofa-ocr-base")
    r(["line1.png", "line2.jpg"])        # -> [Result(text=..., score=...), ...]

Images of any kind go in (paths, bytes, PIL images, uint8 arrays); unreadable ones come back with
``error`` set and do not disturb the rest of the batch. ``views=("id", "w1.15", ...)`` reads each line
as several changed copies in one search that averages their log-probabilities (:mod:`ofa_jax.views`);
a model dir's ``generation.json`` may name a default. Batches are padded to a fixed size so a
long run compiles once; with several devices the batch is split over them (data parallel, same
logical-axis rules as training).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from typing import Any, Optional

import numpy as np

from ofa_jax.decoding import GenerationConfig, make_generate_fn
from ofa_jax.modeldir import check_variables, load_model_dir
from ofa_jax.preprocess import ImageError, ImageWarning, resize_and_pad_uint8
from ofa_jax.tokenizer import OCR_PROMPT, OFATokenizer
from ofa_jax.views import apply_views, parse_views

BUNDLED_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "ofa-ocr-zh-small")


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ofa_jax", "jax_cache")


def enable_compilation_cache(path: Optional[str] = None) -> None:
    """JAX's persistent compilation cache: a second run skips XLA compilation (seconds -> ~0)."""
    import jax
    path = path or os.environ.get("OFA_JAX_CACHE_DIR") or default_cache_dir()
    try:
        if "://" not in path:  # gs://...: JAX writes through etils
            os.makedirs(path, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    except OSError:  # read-only home: run without the cache
        pass


@dataclasses.dataclass
class Result:
    text: Optional[str]
    score: Optional[float]
    error: Optional[str] = None
    source: Any = None
    warnings: tuple = ()  # one-line ImageWarning messages (e.g. a 16-bit image clipped to 8 bits)

    @property
    def ok(self) -> bool:
        return self.error is None


class Recognizer:
    def __init__(self, model_dir, gen: GenerationConfig, batch_size: int = 8, dtype: Optional[str] = None,
                 devices=None, views=None, polarity: Optional[str] = None, max_aspect: Optional[float] = None):
        import jax
        import jax.numpy as jnp
        from ofa_jax.model import OFA

        self.model_dir = model_dir
        self.config = model_dir.config
        self.gen = gen
        size = model_dir.generation.get("patch_image_size", 480)
        self.image_size = tuple(size) if isinstance(size, (list, tuple)) else int(size)
        self.prompt = model_dir.generation.get("prompt", OCR_PROMPT)
        where = os.path.join(model_dir.path, "generation.json")
        if views is not None:
            self.views = parse_views(views)
        else:
            try:
                self.views = parse_views(model_dir.generation.get("views"))
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
        self.polarity = polarity if polarity is not None else model_dir.generation.get("polarity", "keep")
        if self.polarity not in ("keep", "auto"):
            raise ValueError(f"polarity {self.polarity!r}: expected keep or auto"
                             + ("" if polarity is not None else f" ({where})"))
        aspect = max_aspect if max_aspect is not None else model_dir.generation.get("max_piece_aspect")
        try:
            self.max_aspect = None if aspect is None or float(aspect) == 0 else float(aspect)
        except (TypeError, ValueError):
            self.max_aspect = -1.0  # not a number: the error below
        if self.max_aspect is not None and not self.max_aspect >= 1:
            raise ValueError(f"max_piece_aspect {aspect!r}: expected a number of text heights >= 1, or 0 for "
                             "never" + ("" if max_aspect is not None else f" ({where})"))
        self.tokenizer = OFATokenizer.from_model_dir(model_dir.path)
        compute = {None: jnp.float32, "float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
        self.model = OFA(self.config, dtype=compute)
        self.devices = list(devices if devices is not None else jax.devices())
        n = len(self.devices)
        self.batch_size = max(n, -(-batch_size // n) * n)  # a multiple of the device count
        self._src = np.asarray([self.tokenizer.encode_prompt(self.prompt)] * self.batch_size, np.int32)
        variables = jax.tree_util.tree_map(np.asarray, model_dir.variables)
        if dtype == "bfloat16":
            variables["params"] = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), variables["params"])
        if n > 1:
            from ofa_jax import partitioning
            from ofa_jax.model import init_params
            mesh = partitioning.make_mesh({"data": -1}, self.devices)
            boxed = jax.eval_shape(lambda: init_params(self.config))
            shardings = partitioning.variable_shardings(boxed, mesh)
            import flax.linen as nn
            self.variables = jax.device_put(variables, nn.meta.unbox(shardings))
            self._batch_sharding = partitioning.batch_sharding(mesh, 4)
            self._src_sharding = partitioning.batch_sharding(mesh, 2)
        else:
            self.variables = jax.device_put(variables, self.devices[0])
            self._batch_sharding = self._src_sharding = None
        self._generate = make_generate_fn(self.model, gen, pad_id=self.tokenizer.pad_id, eos_id=self.tokenizer.eos_id,
                                          bos_id=self.tokenizer.bos_id, unk_id=self.tokenizer.unk_id,
                                          num_views=len(self.views))

    @classmethod
    def from_pretrained(cls, path: Optional[str] = None, *, beam_size: Optional[int] = None,
                        max_len: Optional[int] = None, min_len: Optional[int] = None, batch_size: int = 8,
                        dtype: Optional[str] = None, devices=None, compilation_cache: bool = True,
                        views=None, polarity: Optional[str] = None, max_aspect: Optional[float] = None
                        ) -> "Recognizer":
        """Loads an ofa-jax model dir (default: the model shipped with the package). ``views``: test-time
        views (``"id,w1.15"`` or a sequence; default: the model dir's, else plain decoding).
        ``polarity``: "auto" reads light-on-dark lines inverted, "keep" as they are; ``max_aspect``: a
        line wider than this many text heights is read in pieces cut between characters, 0 never
        (`ofa_jax.lines`); both default to the model dir's generation.json (``polarity``,
        ``max_piece_aspect``), else "keep" and never, the reference's behaviour."""
        if compilation_cache:
            enable_compilation_cache()
        md = load_model_dir(path or BUNDLED_MODEL)
        check_variables(md)
        g = dict(md.generation)
        for k, v in (("beam_size", beam_size), ("max_len_b", max_len), ("min_len", min_len)):
            if v is not None:
                g[k] = v
        return cls(md, GenerationConfig.from_dict(g), batch_size=batch_size, dtype=dtype, devices=devices,
                   views=views, polarity=polarity, max_aspect=max_aspect)

    # ------------------------------------------------------------------------------------------
    def preprocess(self, image) -> np.ndarray:
        """One image -> uint8 (S, S, 3), or (V, S, S, 3) with several views (one per view, in order)."""
        if self.views == ("id",):
            return resize_and_pad_uint8(image, self.image_size)
        from ofa_jax.preprocess import load_image
        return np.stack([resize_and_pad_uint8(v, self.image_size) for v in apply_views(load_image(image), self.views)])

    def readings(self, image) -> list[tuple[list, Optional[list]]]:
        """One image -> the ways to read it, each (the model inputs of its pieces, as `preprocess`
        makes them; their `lines.Piece` list, None for the image as it is). One way, the image as it
        is, unless ``polarity`` or ``max_aspect`` asks for more (`lines.readings`)."""
        if self.polarity == "keep" and self.max_aspect is None:
            return [([self.preprocess(image)], None)]
        from PIL import Image

        from ofa_jax import lines
        from ofa_jax.preprocess import load_image
        rgb = np.asarray(load_image(image))
        dark_on_light = lines.dark_text_on_light(rgb)  # where the ink is, whatever the polarity read
        if self.polarity == "auto":
            rgb = dark_on_light
        ways = lines.readings(dark_on_light, self.max_aspect) if self.max_aspect else [[lines.Piece(0, rgb.shape[1])]]
        crop = lambda p: self.preprocess(Image.fromarray(np.ascontiguousarray(rgb[:, p.x0:p.x1])))
        return [([crop(p) for p in cuts], cuts) for cuts in ways]

    def _batch(self, pixels: np.ndarray):
        """uint8 (n, S, S, 3), or (n, V, S, S, 3) with views, n <= batch_size -> the normalised device
        batch padded to batch_size images (view-major with views: view v of image i at v * batch_size + i)."""
        import jax
        import jax.numpy as jnp
        from ofa_jax.preprocess import NORMALIZE_LUT

        if pixels.ndim == 5:
            pixels = np.moveaxis(pixels, 1, 0)  # (V, n, S, S, 3)
            batch = np.zeros((pixels.shape[0], self.batch_size) + pixels.shape[2:], np.uint8)
            batch[:, :pixels.shape[1]] = pixels
            batch = batch.reshape((-1,) + batch.shape[2:])
        else:
            batch = np.zeros((self.batch_size,) + pixels.shape[1:], np.uint8)
            batch[:len(pixels)] = pixels
        images = jnp.asarray(NORMALIZE_LUT)[jnp.asarray(batch)]  # bit-identical to ToTensor+Normalize
        src = self._src
        if self._batch_sharding is not None:
            images = jax.device_put(images, self._batch_sharding)
            src = jax.device_put(src, self._src_sharding)
        return images, src

    def recognize_pixels(self, pixels: np.ndarray):
        """uint8 (n, S, S, 3) with n <= batch_size -> list of (text, score); (n, V, S, S, 3) with views."""
        import jax

        out = jax.device_get(self._generate(self.variables, *self._batch(pixels)))
        results = []
        for i in range(len(pixels)):
            length = int(out.lengths[i, 0])
            text = self.tokenizer.decode_ocr(out.tokens[i, 0, :length].tolist())
            results.append((text, float(out.scores[i, 0])))
        return results

    def __call__(self, images, progress: bool = False) -> list[Result]:
        """Recognises one image or a sequence of images; returns one Result per input, in order. A line
        read in pieces (``max_aspect``) gets their texts joined (`lines.join_texts`) and the mean of
        their scores weighted by their lengths; of a line read two ways, the better-scoring reading."""
        from ofa_jax.lines import join_texts

        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        results: list[Optional[Result]] = [None] * len(items)
        pending: list[tuple[int, int, np.ndarray]] = []  # (item, reading, pixels of one piece), in order
        read: dict[int, list] = {}  # item -> per reading, the (text, score) of its pieces read so far
        ways_of: dict[int, list] = {}  # item -> per reading, its pieces (None: the image as it is)
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(items), unit="img", file=sys.stderr, disable=None)

        def finish(i):
            best = None
            for got, cuts in zip(read.pop(i), ways_of.pop(i)):
                if len(got) == 1:
                    text, score = got[0]
                else:
                    text = join_texts([t for t, _ in got], cuts)
                    weights = [len(t) + 1 for t, _ in got]  # + 1: the end of sequence each piece scored
                    score = sum(w * sc for w, (_, sc) in zip(weights, got)) / sum(weights)
                if best is None or score > best[1]:
                    best = (text, score)
            results[i] = Result(text=best[0], score=best[1], source=items[i] if isinstance(items[i], str) else None,
                                warnings=item_warnings.pop(i, ()))
            if bar is not None:
                bar.update(1)

        def flush():
            if not pending:
                return
            for (i, r, _), got in zip(pending, self.recognize_pixels(np.stack([p for *_, p in pending]))):
                read[i][r].append(got)
                if all(len(g) == len(c or [None]) for g, c in zip(read[i], ways_of[i])):
                    finish(i)
            pending.clear()

        item_warnings: dict[int, tuple] = {}
        for i, item in enumerate(items):
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", ImageWarning)
                    ways = self.readings(item)
                for w in caught:  # ours are kept with the result; anything else goes on as usual
                    if isinstance(w.message, ImageWarning):
                        item_warnings[i] = item_warnings.get(i, ()) + (str(w.message),)
                    else:
                        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            except Exception as e:  # ImageError; anything else (a bug, an exotic decoder) is still one line
                if not isinstance(e, ImageError):
                    from ofa_jax.preprocess import _describe, _one_line
                    e = f"{_describe(item)}: cannot preprocess ({type(e).__name__}: {_one_line(e)})"
                results[i] = Result(text=None, score=None, error=str(e),
                                    source=item if isinstance(item, str) else None)
                if bar is not None:
                    bar.update(1)
                continue
            read[i], ways_of[i] = [[] for _ in ways], [cuts for _, cuts in ways]
            for r, (pieces, _) in enumerate(ways):
                for pixels in pieces:
                    pending.append((i, r, pixels))
                    if len(pending) == self.batch_size:
                        flush()
        flush()
        if bar is not None:
            bar.close()
        return results[0] if single else results
