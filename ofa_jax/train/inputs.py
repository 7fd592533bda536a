"""Training input: the record sources a config names (``synth:`` lines rendered here, the rest from
``ofa_jax.data.sources``), their size checks, the per-shard pipeline settings, the iterator over this
process's shards, and the placement of host batches as global arrays."""
from __future__ import annotations

import os
from typing import Optional

import jax
import numpy as np

from ofa_jax import partitioning
from ofa_jax.data.report import DataError
from ofa_jax.train.runconfig import ConfigError, input_size


class RenderedLines:
    """``synth:`` spec: text lines rendered on the fly from a small character set (random access,
    deterministic per (seed, split, index)). For from-scratch CPU runs and tests, where a full
    6,763-character GB2312 corpus would need far more compute than a laptop has.

    ``synth:chars=0123456789,min=1,max=4,n=20000,seed=0,fontmin=20,fontmax=32,font=FILE`` (all
    optional; ``font``: a font file name, default the first CJK font found).
    """

    def __init__(self, spec: str, split: str):
        kw = dict(chars="0123456789", min="1", max="4", n="10000", seed="0", fontmin="20", fontmax="32", font="")
        for part in filter(None, spec.split(",")):
            k, _, v = part.partition("=")
            if k not in kw:
                raise ConfigError(f"synth spec: unknown key {k!r} (known: {', '.join(kw)})")
            kw[k] = v
        from ofa_jax.data import render

        fonts = render.find_cjk_fonts()
        if not fonts:
            raise RuntimeError("synth: no CJK font found (pip install paperang-p2-fonts-cjk)")
        if kw["font"]:  # a font file name: the same pixels whatever other fonts are installed
            named = [f for f in fonts if os.path.basename(f) == kw["font"]]
            if not named:
                raise RuntimeError(f"synth: font {kw['font']!r} not found (have: {', '.join(map(os.path.basename, fonts))})")
            fonts = named
        self.font = fonts[0]
        self.chars, self.lo, self.hi = kw["chars"], int(kw["min"]), int(kw["max"])
        self.n = int(kw["n"]) if split == "train" else max(1, int(kw["n"]) // 20)
        self.seed = [int(kw["seed"]), {"train": 0, "val": 1, "validation": 1, "test": 2}.get(split, 3)]
        self.options = render.RenderOptions(min_font_size=int(kw["fontmin"]), max_font_size=int(kw["fontmax"]))

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        from ofa_jax.data import render

        rng = np.random.default_rng(self.seed + [int(i)])
        k = int(rng.integers(self.lo, self.hi + 1))
        text = "".join(self.chars[j] for j in rng.integers(0, len(self.chars), k))
        img = render.render_line(text, self.font, rng, self.options)
        return {"id": f"synth-{i}", "image": render.encode_image(img, "PNG"), "text": text}


def load_source(spec: str, split: str, data_dir: Optional[str] = None):
    if spec.startswith("synth:"):
        return RenderedLines(spec[len("synth:"):], split)
    from ofa_jax.data.sources import load_eval_source

    return load_eval_source(spec, split, data_dir)


def load_config_source(cfg, which: str):
    """``which`` = "train" / "val": the record source the config names (None for no validation);
    DataError (one line naming the spec and split) for what is wrong with it."""
    what, spec, split = {"train": ("training", cfg.data.train, cfg.data.train_split),
                         "val": ("validation", cfg.data.val, cfg.data.val_split)}[which]
    if not spec:
        if which == "train":
            raise DataError("no training data: set --config.data.train (tfds:NAME/CONFIG, lmdb:PATH, folder:PATH "
                            "or synth:...)")
        return None
    try:
        source = load_source(spec, split, cfg.data.get("data_dir"))
        if hasattr(source, "decoded"):  # render: sources: hand clean lines over as pixels, not PNG bytes
            source.decoded = True
        return source
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise DataError(f"{what} data {spec} (split {split}): {msg}") from None


def check_data_sizes(cfg, train_source, val_source) -> None:
    """An empty training/validation set, or a training set smaller than one batch per shard, is an error:
    the loop would wait forever, or train every step on copies of the same few lines."""
    n = len(train_source)
    shards = jax.process_count() * int(cfg.data.get("shards_per_process", 1))
    per_shard = cfg.batch_size // shards
    where = f"training data {cfg.data.train or '<given source>'} (split {cfg.data.train_split})"
    if n == 0:
        raise DataError(f"{where} is empty")
    if n // shards < per_shard:
        raise DataError(f"{where} has {n} records, fewer than one batch: batch_size {cfg.batch_size} needs at "
                        f"least {per_shard * shards} ({per_shard} per shard x {shards} shards); lower "
                        "--config.batch_size or add data")
    if val_source is not None and len(val_source) == 0:
        raise DataError(f"validation data {cfg.data.val or '<given source>'} (split {cfg.data.val_split}) is empty; "
                        "set --config.data.val= to train without validation")


def global_batch(local: dict, mesh, keys=("image", "target", "prev_output_tokens", "target_mask")) -> dict:
    """This process's rows -> global arrays split over (data, fsdp)."""
    return {k: jax.make_array_from_process_local_data(partitioning.batch_sharding(mesh, local[k].ndim), local[k])
            for k in keys}


def train_pipeline_config(cfg, shard_index: int, shard_count: int):
    """The training pipeline's settings for shard ``shard_index`` of ``shard_count``."""
    from ofa_jax.data.pipeline import PipelineConfig

    return PipelineConfig(
        batch_size=cfg.batch_size // shard_count, image_size=input_size(cfg),
        max_target_tokens=cfg.data.max_target_tokens, train=True, seed=cfg.seed, augment=cfg.data.augment,
        num_workers=cfg.data.num_workers, shard_index=shard_index, shard_count=shard_count,
        bad_records=cfg.data.get("bad_records", "skip"), spell_alnum=cfg.data.get("spell_alnum", False),
        augment_geometry=cfg.data.get("augment_geometry", False))


def make_train_iterator(source, cfg, tokenizer, log=print):
    """`ShardedIterator` over grain pipelines, or with ``data.replay_reuse`` > 0 over
    `ofa_jax.data.replay.ReplayIterator` s (``data.num_workers`` processes prepare each shard's lines)."""
    reuse = float(cfg.data.get("replay_reuse", 0) or 0)
    if reuse <= 0:
        return ShardedIterator(source, cfg, tokenizer)
    from ofa_jax.data.replay import replay_iterator

    def make(shard_index, shard_count):
        return replay_iterator(source, train_pipeline_config(cfg, shard_index, shard_count), tokenizer, reuse=reuse,
                               window=int(cfg.data.get("replay_window", 100_000)),
                               workers=int(cfg.data.num_workers), stream=shard_index,
                               directory=cfg.data.get("replay_dir", "") or None)

    it = ShardedIterator(source, cfg, tokenizer, make)
    r = it.iters[0]
    log(f"replay: each line drawn {reuse:g} times on average ({r.fresh} new lines per step of "
        f"{r.batch_size}), window {r.window} lines ({r.nbytes() / 1e9:.2f} GB under "
        f"{r.directory or 'the temp dir'}) x {len(it.iters)} shard(s) in this process, "
        f"{r.workers} worker process(es) each")
    return it


class ShardedIterator:
    """This process's part of every global batch: ``data.shards_per_process`` iterators over disjoint
    shards of the source, concatenated. With k shards per process and N processes, shard
    ``process_index * k + j`` of ``N * k``: one process with k=2 sees exactly the global batches of two
    processes with k=1 (what the multi-process test compares against). ``make(shard_index,
    shard_count)`` builds one shard's iterator (default: the grain pipeline)."""

    def __init__(self, source, cfg, tokenizer, make=None):
        from ofa_jax.data.pipeline import make_iterator

        k = int(cfg.data.get("shards_per_process", 1))
        nproc, pid = jax.process_count(), jax.process_index()
        if cfg.batch_size % (nproc * k):
            raise DataError(f"batch_size {cfg.batch_size} is not divisible by {nproc} processes x {k} shards")
        if make is None:
            def make(i, n):
                return make_iterator(source, train_pipeline_config(cfg, i, n), tokenizer)
        self.iters = [make(pid * k + j, nproc * k) for j in range(k)]

    def __next__(self):
        parts = [next(it) for it in self.iters]
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

    def get_state(self):
        return {"shards": [it.get_state() for it in self.iters]}

    def set_state(self, state):
        if len(state["shards"]) != len(self.iters):
            raise ConfigError(f"checkpoint has {len(state['shards'])} data shards per process, config {len(self.iters)}")
        replay = hasattr(self.iters[0], "fresh")
        if replay != ("replay" in state["shards"][0]):
            raise DataError("the checkpoint's data state was written " + ("without" if replay else "with")
                            + " data.replay_reuse; resume with the run's own data settings")
        for it, st in zip(self.iters, state["shards"]):
            it.set_state(st)

    def close(self):
        for it in self.iters:
            if hasattr(it, "close"):
                it.close()
