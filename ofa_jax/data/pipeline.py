"""The input pipeline (grain): records -> padded uint8 image batches + OFA targets.

    source -> [shard] -> seeded shuffle (reshuffled each epoch) -> repeat -> decode (PIL)
           -> [train-only augmentation] -> OCR resize+pad to uint8 (size, size, 3)
           -> target tokenisation -> batch with padding -> [worker processes]

Batches are dicts of numpy arrays:

* ``image``  uint8 (B, S, S, 3), ModelScope's OCR resize + edge pad (`ofa_jax.preprocess`).
  Normalise on device with ``jnp.asarray(NORMALIZE_LUT)[x]`` (`ofa_jax.preprocess.NORMALIZE_LUT`):
  bit-identical to ModelScope's ``ToTensor`` + ``Normalize(0.5, 0.5)``, which arithmetic in XLA
  (``x / 255``, ``x / 127.5 - 1``) is not (1 ulp off for about half of the values).
* ``target`` int32 (B, T): tokens + eos, padded with pad (1); T = ``max_target_tokens + 1``.
* ``prev_output_tokens`` int32 (B, T): bos + target[:-1] (pad where target is pad).
* ``target_mask`` bool (B, T): non-pad target positions.
* ``truncated`` bool (B,): the target was cut to ``max_target_tokens`` (sum it and report it).
* ``oov_tokens`` int32 (B,): ``<unk>`` tokens in the target: characters outside the vocabulary, mapped
  to ``<unk>`` as the reference's BERT tokenizer does (and trained on, as the reference does).
* ``empty_label`` bool (B,): the label is empty after normalisation (the target is eos alone, as in
  the reference).
* ``bad_record`` bool (B,): the record could not be read (undecodable image, label not UTF-8, missing
  LMDB key): with ``bad_records="skip"`` (default) the row is a blank image with an all-pad target, so
  it adds nothing to the loss; the first few are named on stderr. ``bad_records="error"`` raises.
* ``valid`` bool (B,): False for filler rows of a padded last eval batch and for bad records.
* eval only (``keep_text=True``): ``id``, ``text`` - numpy unicode arrays (the raw label, for metrics).

Target normalisation is ModelScope's training one (`ofa_jax.data.text.train_normalize`: zhconv
zh-hans, NFKC), then - as ModelScope does - whitespace words are re-joined with single spaces
(optionally only the first ``max_target_words``, its ``max_tgt_length``), tokenised without bos, cut
to ``max_target_tokens`` and given an eos.

Determinism: element order and augmentation randomness depend only on (seed, position); the same
config gives the same batches, and ``iterator.get_state()`` / ``set_state()`` (JSON-able dicts, save
them with Orbax next to the train state) resume exactly. With worker processes the batch order is
still deterministic but differs from the in-process order (each worker batches its own slice).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Protocol, Sequence

import grain
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from ofa_jax.data.text import train_normalize
from ofa_jax.data.records import RecordError
from ofa_jax.preprocess import ImageError, load_image, resize_and_pad_uint8
from ofa_jax.tokenizer import OFATokenizer

BOS, PAD, EOS = 0, 1, 2

__all__ = ["PipelineConfig", "make_dataset", "make_map_dataset", "make_iterator", "encode_target", "augment_image",
           "augment_geometry", "decode_image", "default_tokenizer", "resize_and_pad_uint8", "BOS", "PAD", "EOS"]


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...


def default_tokenizer() -> OFATokenizer:
    """The tokenizer of the released Chinese OCR models (`OFATokenizer.default()`)."""
    return OFATokenizer.default()


# ----------------------------------------------------------------------------- config

@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    batch_size: int = 8
    image_size: int | tuple[int, int] = 480  # square (reference rule) or (height, width)
    max_target_tokens: int = 64  # tokens before eos (OFA decodes at most 64)
    max_target_words: int | None = None  # ModelScope's word-level `max_tgt_length` cut (None: off)
    spell_alnum: bool = False  # targets spell Latin/digit runs one token per character (not the reference's)
    train: bool = True
    seed: int = 0
    num_epochs: int | None = None  # None: forever when training, 1 otherwise
    augment: bool | None = None  # None: same as `train`
    augment_geometry: bool = False  # with `augment`: glyph aspect, margin and stroke-weight jitter too
    drop_remainder: bool | None = None  # None: same as `train`; eval pads the last batch instead
    keep_text: bool | None = None  # None: `not train`
    num_workers: int = 0  # grain worker processes (0: in-process)
    worker_buffer_size: int = 2  # batches prefetched per worker
    num_threads: int = 1  # read/transform threads per process (1 was fastest on 2 cores: bench/)
    shard_index: int = 0  # data-parallel hosts: this host's shard ...
    shard_count: int = 1  # ... of this many
    bad_records: str = "skip"  # unreadable records: "skip" (blank row, counted, named) or "error" (raise)


# ----------------------------------------------------------------------------- element transforms

def encode_target(text: str, tokenizer: Tokenizer, max_tokens: int,
                  max_words: int | None = None, spell_alnum: bool = False) -> tuple[np.ndarray, bool]:
    """(tokens + eos as int32, truncated?) for one label, with OFA's training normalisation;
    ``spell_alnum``: letter/digit runs one token per character (`OFATokenizer.spell_alnum`)."""
    words = train_normalize(text).strip().split()
    if max_words is not None:
        words = words[:max_words]
    ids = list(tokenizer.encode(" ".join(words)))
    if spell_alnum:
        ids = tokenizer.spell_alnum(ids)
    truncated = len(ids) > max_tokens
    return np.asarray(ids[:max_tokens] + [EOS], np.int32), truncated


def augment_image(img: Image.Image, rng: np.random.Generator, geometry: bool = False) -> Image.Image:
    """Light train-time photometric/geometric jitter on the original-size line image; ``geometry``
    adds `augment_geometry` (after the others, so the default draws stay as they were)."""
    if rng.random() < 0.5:
        img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.7, 1.3)))
    if rng.random() < 0.5:
        img = ImageEnhance.Contrast(img).enhance(float(rng.uniform(0.6, 1.4)))
    if rng.random() < 0.3:
        fill = img.getpixel((0, 0))
        img = img.rotate(float(rng.uniform(-2.0, 2.0)), resample=Image.BILINEAR, expand=True, fillcolor=fill)
    if rng.random() < 0.2:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 1.0))))
    if geometry:
        img = augment_geometry(img, rng)
    return img


def augment_geometry(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """What sets one font apart from another, beyond the glyph shapes: glyph aspect (width x 0.8-1.25),
    margins (which change a long line's glyph size after the line resize) and stroke weight (about half
    a pixel thicker or thinner: a 3x3 min/max filter at twice the size). Why: a model trained on
    eleven fonts reads 87.0% of held-out-font lines, 69.7% when they are 15% wider, 80.9% with 10%
    more margin, 57.6% with strokes 1 px thicker (bench/RESULTS.md, section "image changes")."""
    if rng.random() < 0.5:
        f = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
        img = img.resize((max(1, round(img.width * f)), img.height), Image.BICUBIC)
    if rng.random() < 0.3:
        fill = img.getpixel((0, 0))
        px, py = (int(round(img.height * float(rng.uniform(0, 0.15)))) for _ in range(2))
        out = Image.new(img.mode, (img.width + 2 * px, img.height + 2 * py), fill)
        out.paste(img, (px, py))
        img = out
    if rng.random() < 0.2:
        w, h = img.size
        f = ImageFilter.MinFilter(3) if rng.random() < 0.5 else ImageFilter.MaxFilter(3)
        img = img.resize((2 * w, 2 * h), Image.BICUBIC).filter(f).resize((w, h), Image.BICUBIC)
    return img


def decode_image(data: bytes | np.ndarray) -> Image.Image:
    """Encoded bytes (or an already decoded uint8 array, e.g. a TFDS source without SkipDecoding)
    -> RGB PIL image, as the Recognizer reads it (`ofa_jax.preprocess.load_image`: EXIF orientation
    applied); raises `ofa_jax.preprocess.ImageError` for unreadable data."""
    return load_image(data)


class _Prepare:
    """record -> element; picklable (sent to worker processes)."""

    def __init__(self, cfg: PipelineConfig, tokenizer: Tokenizer, augment: bool, keep_text: bool):
        self.cfg, self.tokenizer, self.augment, self.keep_text = cfg, tokenizer, augment, keep_text

    def __call__(self, rec: dict, rng: np.random.Generator) -> dict:
        img = decode_image(rec["image"])
        if self.augment:
            img = augment_image(img, rng, self.cfg.augment_geometry)
        text = rec["text"].decode("utf-8") if isinstance(rec["text"], bytes) else rec["text"]
        target, truncated = encode_target(text, self.tokenizer, self.cfg.max_target_tokens,
                                          self.cfg.max_target_words, self.cfg.spell_alnum)
        out = {"image": resize_and_pad_uint8(img, size=self.cfg.image_size),
               "target": target, "truncated": truncated}
        if self.keep_text:
            rid = rec.get("id", "")
            out["id"] = rid.decode("utf-8") if isinstance(rid, bytes) else str(rid)
            out["text"] = text
        return out


class _GuardedSource:
    """A record source whose unreadable records come back as ``{"_error": message}`` instead of
    raising inside grain (which would end the run with a traceback); picklable if the source is."""

    def __init__(self, source: Any):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i):
        try:
            return self.source[i]
        except IndexError:
            raise
        except Exception as e:  # RecordError, KeyError, OSError, UnicodeDecodeError, ...
            return {"_error": _one_line_error(e, f"record {int(i)}")}


def _one_line_error(e: BaseException, where: str) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, RecordError):  # names its source and record already
        return msg
    return f"{where}: {msg}" if isinstance(e, ImageError) else f"{where}: {type(e).__name__}: {msg}"


class _Guarded:
    """Wraps `_Prepare`: label statistics for every element; with ``bad_records="skip"`` a record that
    cannot be read becomes a blank, all-pad, flagged element (named on stderr, the first few times)."""

    MAX_REPORTED = 10

    def __init__(self, prepare: "_Prepare", policy: str):
        if policy not in ("skip", "error"):
            raise ValueError(f"bad_records must be 'skip' or 'error', got {policy!r}")
        self.prepare, self.policy = prepare, policy
        self.unk_id = getattr(prepare.tokenizer, "unk_id", None)
        self._blank = None
        self._reported = 0

    def __call__(self, rec: dict, rng: np.random.Generator) -> dict:
        error = rec.get("_error")
        if error is None:
            try:
                out = self.prepare(rec, rng)
            except Exception as e:
                if self.policy == "error" or not isinstance(e, (ImageError, RecordError, UnicodeError, OSError,
                                                                  KeyError)):
                    raise
                rid = rec.get("id", "?")
                error = _one_line_error(e, f"record {rid.decode('utf-8', 'replace') if isinstance(rid, bytes) else rid}")
            else:
                tgt = out["target"]
                out["oov_tokens"] = int(np.sum(tgt == self.unk_id)) if self.unk_id is not None else 0
                out["empty_label"] = len(tgt) == 1
                out["bad_record"] = False
                return out
        elif self.policy == "error":
            raise RecordError(error)
        if self._reported < self.MAX_REPORTED:
            self._reported += 1
            more = " (further ones are counted, not named)" if self._reported == self.MAX_REPORTED else ""
            print(f"warning: skipping unreadable record: {error}{more}", file=sys.stderr, flush=True)
        if self._blank is None:
            self._blank = resize_and_pad_uint8(np.zeros((1, 1), np.uint8), size=self.prepare.cfg.image_size)
        out = {"image": self._blank, "target": np.zeros((0,), np.int32), "truncated": False,
               "oov_tokens": 0, "empty_label": False, "bad_record": True}
        if self.prepare.keep_text:
            out["id"], out["text"] = "", ""
        return out


class _Collate:
    """Pad targets to a fixed length and (eval) the batch to a fixed size; picklable."""

    def __init__(self, batch_size: int, target_len: int, pad_batch: bool):
        self.batch_size, self.target_len, self.pad_batch = batch_size, target_len, pad_batch

    def __call__(self, elems: Sequence[dict]) -> dict:
        n = len(elems)
        b = self.batch_size if self.pad_batch else n
        t = self.target_len
        image = np.zeros((b,) + elems[0]["image"].shape, np.uint8)
        target = np.full((b, t), PAD, np.int32)
        prev = np.full((b, t), PAD, np.int32)
        for i, e in enumerate(elems):
            image[i] = e["image"]
            k = len(e["target"])
            target[i, :k] = e["target"]
            if k:  # a skipped bad record has no target at all: its row stays pad (no loss)
                prev[i, 0] = BOS
            prev[i, 1:k] = e["target"][:k - 1]
        out = {
            "image": image,
            "target": target,
            "prev_output_tokens": prev,
            "target_mask": target != PAD,
            "truncated": np.array([e["truncated"] for e in elems] + [False] * (b - n), bool),
            "oov_tokens": np.array([e.get("oov_tokens", 0) for e in elems] + [0] * (b - n), np.int32),
            "empty_label": np.array([e.get("empty_label", False) for e in elems] + [False] * (b - n), bool),
            "bad_record": np.array([e.get("bad_record", False) for e in elems] + [False] * (b - n), bool),
        }
        out["valid"] = (np.arange(b) < n) & ~out["bad_record"]
        if "text" in elems[0]:
            out["text"] = np.array([e["text"] for e in elems] + [""] * (b - n))
            out["id"] = np.array([e["id"] for e in elems] + [""] * (b - n))
        return out


# ----------------------------------------------------------------------------- dataset

def _ensure_absl_flags_parsed():
    # grain's worker processes read absl flags; unparsed flags (no absl.app.run) crash them.
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def leave_stop_signals_to_parent(*_worker_index_and_count) -> None:
    """In a data worker process (grain's, `ofa_jax.data.replay`'s): Ctrl-C, which a terminal sends to
    the whole process group, and SIGTERM are the trainer's to act on. It saves a checkpoint at the end
    of its step (`ofa_jax.train.loop`) and then stops its workers."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def make_map_dataset(source: Any, cfg: PipelineConfig, tokenizer: Tokenizer | None = None) -> grain.MapDataset:
    """The random-access grain MapDataset of prepared elements (before batching): element ``j`` is the
    ``j``-th element the batched pipeline sees in-process, whoever computes it (`ofa_jax.data.replay`)."""
    tokenizer = tokenizer if tokenizer is not None else default_tokenizer()
    augment = cfg.train if cfg.augment is None else cfg.augment
    keep_text = (not cfg.train) if cfg.keep_text is None else cfg.keep_text
    num_epochs = (None if cfg.train else 1) if cfg.num_epochs is None else cfg.num_epochs

    ds = grain.MapDataset.source(_GuardedSource(source))
    if cfg.shard_count > 1:
        ds = ds[cfg.shard_index::cfg.shard_count]
    if cfg.train:
        ds = ds.shuffle(seed=cfg.seed)
    if num_epochs != 1:
        ds = ds.repeat(num_epochs)
    return ds.random_map(_Guarded(_Prepare(cfg, tokenizer, augment, keep_text), cfg.bad_records), seed=cfg.seed)


def make_dataset(source: Any, cfg: PipelineConfig, tokenizer: Tokenizer | None = None) -> grain.IterDataset:
    """The grain IterDataset of batches for a record source (see `ofa_jax.data.sources`)."""
    drop_remainder = cfg.train if cfg.drop_remainder is None else cfg.drop_remainder
    ds = make_map_dataset(source, cfg, tokenizer)
    read = grain.ReadOptions(num_threads=cfg.num_threads, prefetch_buffer_size=max(2 * cfg.batch_size, 8))
    it = ds.to_iter_dataset(read)
    it = it.batch(cfg.batch_size, drop_remainder=drop_remainder,
                  batch_fn=_Collate(cfg.batch_size, cfg.max_target_tokens + 1, pad_batch=not drop_remainder))
    if cfg.num_workers > 0:
        _ensure_absl_flags_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=cfg.num_workers, per_worker_buffer_size=cfg.worker_buffer_size),
            worker_init_fn=leave_stop_signals_to_parent)
    return it


def make_iterator(source: Any, cfg: PipelineConfig, tokenizer: Tokenizer | None = None):
    """`iter(make_dataset(...))`: a `grain.DatasetIterator` with `get_state()` / `set_state()`."""
    return iter(make_dataset(source, cfg, tokenizer))
