"""`ocr_synthetic_zh`: single Chinese text lines rendered offline from local fonts.

Configs: ``printed`` (clean renders, PNG), ``degraded`` (blur, noise, JPEG, small rotation and
perspective, textured/gradient backgrounds, low contrast), ``mixed`` (half and half). Build your own
variant with ``OcrSyntheticZhConfig(name=..., ...)``.

Reproducible: example ``i`` of split ``s`` is drawn from ``numpy.random.default_rng([seed, s, i])``,
so the same config, fonts and Pillow version give the same bytes.

Fonts: ``fonts=()`` means every CJK font found offline (`ofa_jax.data.render.find_cjk_fonts`), sorted
by file name. The last ``heldout_fonts`` fonts render only the test split, so test accuracy measures
generalisation to unseen fonts; with too few fonts nothing can be held out and a warning says so
(the ``font`` feature records which font drew each example).

Text: see `ofa_jax.data.corpus`. Every split drops the held-out evaluation lines
(`ofa_jax.data.text.load_eval_exclude`); fixed-text lines are split by hash so val/test lines are
never rendered for train.
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import numpy as np
import tensorflow_datasets as tfds

from ofa_jax.data import corpus, render
from ofa_jax.data.builders.common import ArrayRecordBuilder, base_features
from ofa_jax.data.text import load_eval_exclude

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class OcrSyntheticZhConfig(tfds.core.BuilderConfig):
    num_examples: tuple[int, int, int] = (100_000, 2_000, 2_000)  # train, val, test
    degraded_fraction: float = 0.0
    text_sources: tuple[str, ...] = ("gb2312",)
    optional_text_sources: tuple[str, ...] = ("hsk",)  # used when installed, skipped otherwise
    fixed_text_fraction: float = 0.5  # share of lines drawn from fixed-text sources when present
    min_chars: int = 2
    max_chars: int = 24
    fonts: tuple[str, ...] = ()  # font files (or "pil-default"); () -> all CJK fonts found
    heldout_fonts: int = 1
    in_vocab_only: bool = True  # skip lines with characters the OFA vocabulary lacks (they decode to nothing)
    min_font_size: int = 24
    max_font_size: int = 48
    render_style: str = "classic"  # `ofa_jax.data.render.STYLES`: "real" adds colour, rules, uneven light
    seed: int = 0


class OcrSyntheticZh(ArrayRecordBuilder):
    """Rendered Chinese text lines (features: id, image bytes, text, font, degraded)."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "1.1.0": "Font collections draw with their simplified-Chinese face (Noto CJK SC, was JP); "
                 "the WenQuanYi test fonts are unchanged.",
    }
    BUILDER_CONFIGS = [
        OcrSyntheticZhConfig(name="printed", description="clean renders", degraded_fraction=0.0),
        OcrSyntheticZhConfig(name="degraded", description="degraded renders", degraded_fraction=1.0),
        OcrSyntheticZhConfig(name="mixed", description="half clean, half degraded", degraded_fraction=0.5),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Synthetic single-line Chinese text images rendered from offline fonts.",
            features=base_features(
                font=tfds.features.Text(doc="font file name used to render"),
                degraded=tfds.features.Scalar(dtype=np.bool_, doc="degradations applied"),
            ),
            supervised_keys=("image", "text"),
        )

    # ------------------------------------------------------------------ fonts and text per split

    @functools.cached_property
    def _tokenizer(self):
        from ofa_jax.tokenizer import OFATokenizer

        return OFATokenizer.default()

    @functools.cached_property
    def _char_in_vocab(self) -> dict:
        return {}

    def in_vocab(self, text: str) -> bool:
        """False if ``in_vocab_only`` and some character of ``text`` tokenizes to ``<unk>``: ~1 in 6
        random GB2312 lines has a level-2 character bert-base-chinese lacks, which no OFA model can
        output; training on them teaches ``<unk>``, and testing on them scores every engine wrong."""
        if not self.builder_config.in_vocab_only:
            return True
        for ch in text:
            ok = self._char_in_vocab.get(ch)
            if ok is None:
                ok = self._char_in_vocab[ch] = ch.isspace() or self._tokenizer.unk_id not in self._tokenizer.encode(ch)
            if not ok:
                return False
        return True

    def split_fonts(self) -> dict[str, list[str]]:
        cfg = self.builder_config
        fonts = sorted(cfg.fonts, key=render.font_key) if cfg.fonts else render.find_cjk_fonts()
        if not fonts:
            raise FileNotFoundError(
                "ocr_synthetic_zh: no CJK font found. Install one (pip install paperang-p2-fonts-cjk, "
                "or apt-get install fonts-wqy-zenhei fonts-arphic-ukai ...), or set "
                f"${render.FONT_DIRS_ENV} / OcrSyntheticZhConfig(fonts=...).")
        k = cfg.heldout_fonts
        if k > 0 and len(fonts) > k:
            seen, unseen = fonts[:-k], fonts[-k:]
            return {"train": seen, "val": seen, "test": unseen}
        if k > 0:
            log.warning("ocr_synthetic_zh: only %d font(s); cannot hold out %d for test, all splits "
                        "share the same fonts", len(fonts), k)
        return {s: list(fonts) for s in SPLITS}

    def text_pools(self) -> tuple[dict[str, list[str]], list[str]]:
        """({split: fixed lines}, [random sources]) after the eval-line filter."""
        cfg = self.builder_config
        exclude = load_eval_exclude()
        sources = list(cfg.text_sources) + [s for s in cfg.optional_text_sources if corpus.available(s)]
        pools: dict[str, list[str]] = {s: [] for s in SPLITS}
        randoms = []
        for src in dict.fromkeys(sources):
            lines = corpus.fixed_lines(src)
            if lines is None:
                # one draw: a source that needs a package or file fails here, naming it, not in a worker
                corpus.random_line(src, np.random.default_rng(0), cfg.min_chars, cfg.max_chars)
                randoms.append(src)
                continue
            for line in dict.fromkeys(lines):
                if line in exclude or not cfg.min_chars <= len(line) <= cfg.max_chars or not self.in_vocab(line):
                    continue
                pools[SPLITS[corpus.split_of_line(line)]].append(line)
        return pools, randoms

    # ------------------------------------------------------------------ generation

    def _split_generators(self, dl_manager):
        del dl_manager
        fonts = self.split_fonts()
        pools, randoms = self.text_pools()
        return {split: self._generate_examples(split, fonts[split], pools[split], randoms)
                for split in SPLITS}

    def _generate_examples(self, split, fonts, pool, randoms):
        cfg = self.builder_config
        exclude = load_eval_exclude()
        n = cfg.num_examples[SPLITS.index(split)]
        for i in range(n):
            rng = np.random.default_rng([cfg.seed, SPLITS.index(split), i])
            yield f"{i:09d}", self.make_example(rng, fonts, pool, randoms, exclude, f"{split}-{i:09d}")

    def make_example(self, rng, fonts, pool, randoms, exclude, uid, encode_clean: bool = True):
        """One example; ``encode_clean=False`` leaves a clean line's image as its uint8 pixels instead of
        PNG bytes (lossless, so the same pixels; degraded lines keep their JPEG, part of the degradation)."""
        cfg = self.builder_config
        for _ in range(100):
            if pool and (not randoms or rng.random() < cfg.fixed_text_fraction):
                text = pool[int(rng.integers(len(pool)))]
            elif randoms:
                src = randoms[int(rng.integers(len(randoms)))]
                text = corpus.random_line(src, rng, cfg.min_chars, cfg.max_chars)
            else:
                raise ValueError("ocr_synthetic_zh: no text (empty fixed pool and no random source)")
            if text in exclude or not self.in_vocab(text):
                continue
            order = rng.permutation(len(fonts))
            font = next((fonts[j] for j in order if render.font_covers(fonts[j], text)), None)
            if font is not None:
                break
        else:
            raise RuntimeError(f"{uid}: no font covers 100 sampled lines; check fonts/text sources")
        degraded = bool(rng.random() < cfg.degraded_fraction)
        opts = render.RenderOptions(min_font_size=cfg.min_font_size, max_font_size=cfg.max_font_size,
                                    degrade=degraded, **render.style_options(cfg.render_style))
        img = render.render_line(text, font, rng, opts)
        if degraded:
            lo, hi = opts.jpeg_quality
            data = render.encode_image(img, "JPEG", quality=int(rng.integers(lo, hi + 1)))
        elif encode_clean:
            data = render.encode_image(img, "PNG")
        else:
            data = np.asarray(img, dtype=np.uint8)
        return {"id": uid, "image": data, "text": text, "font": render.font_key(font),
                "degraded": degraded}


# ---------------------------------------------------------------------- rendered on access

SETTABLE = ("degraded_fraction", "text_sources", "fixed_text_fraction", "min_chars", "max_chars",
            "heldout_fonts", "min_font_size", "max_font_size", "render_style", "seed")


def config_overrides(pairs, base: OcrSyntheticZhConfig) -> dict:
    """``["max_chars=12", "heldout_fonts=2", ...]`` -> typed config overrides (``text_sources``: ``a+b``)."""
    out = {}
    for kv in pairs:
        key, sep, value = kv.partition("=")
        if not sep or key not in SETTABLE:
            raise ValueError(f"{kv!r}: expected KEY=VALUE with KEY one of {', '.join(SETTABLE)}")
        out[key] = tuple(value.split("+")) if key == "text_sources" else type(getattr(base, key))(value)
    return out


class RenderedSynthetic:
    """``render:[CONFIG,]KEY=VALUE,...``: the examples of ``ocr_synthetic_zh/CONFIG`` (default
    ``mixed``) with those overrides, rendered when read instead of built first.

    Example ``i`` of a split is exactly the example ``i`` that ``python -m ofa_jax.data.build`` would
    write for the same settings (same seeds, fonts per split, texts per split, eval-line filter), so a
    training run can draw from millions of lines without a build, and ``python -m ofa_jax.evaluate
    --data render:...`` scores the same held-out test lines a built dataset holds. ``n=`` sets the
    train split's size (default 1,000,000), ``n_eval=`` val's and test's (default 2,000).
    """

    def __init__(self, spec: str, split: str):
        parts = [p for p in spec.split(",") if p]
        name = "mixed"
        if parts and "=" not in parts[0]:
            name = parts.pop(0)
        base = next((c for c in OcrSyntheticZh.BUILDER_CONFIGS if c.name == name), None)
        if base is None:
            raise ValueError(f"render:{spec}: unknown config {name!r} (printed, degraded, mixed)")
        n, n_eval, rest = 1_000_000, 2_000, []
        for p in parts:
            if p.startswith("n="):
                n = int(p[2:])
            elif p.startswith("n_eval="):
                n_eval = int(p[len("n_eval="):])
            else:
                rest.append(p)
        if split not in SPLITS:
            split = {"validation": "val"}.get(split, split)
            if split not in SPLITS:
                raise KeyError(f"render:{spec}: no split {split!r} (train, val, test)")
        cfg = dataclasses.replace(base, name=f"render_{name}", num_examples=(n, n_eval, n_eval),
                                  **config_overrides(rest, base))
        import tempfile

        self.builder = OcrSyntheticZh(config=cfg, data_dir=tempfile.gettempdir())
        self.split, self.cfg = split, cfg
        self.fonts = self.builder.split_fonts()[split]
        pools, self.randoms = self.builder.text_pools()
        self.pool = pools[split]
        self.exclude = load_eval_exclude()
        # True: clean lines come as pixels (ofa_jax/train/inputs.py sets it: skips a PNG encode + decode
        # per line, ~25% of the cost of a line; the pipeline sees the same pixels). False: records as a
        # build writes them.
        self.decoded = False

    def __len__(self) -> int:
        return self.cfg.num_examples[SPLITS.index(self.split)]

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(i)
        rng = np.random.default_rng([self.cfg.seed, SPLITS.index(self.split), i])
        return self.builder.make_example(rng, self.fonts, self.pool, self.randoms, self.exclude,
                                         f"{self.split}-{i:09d}", encode_clean=not self.decoded)
