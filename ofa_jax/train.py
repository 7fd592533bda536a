"""Fine-tune (or train from scratch) OFA-OCR: one sharded train loop with Orbax checkpoints.

    python -m ofa_jax.train --config configs/ocr_cpu_synthetic.py --workdir runs/cpu [--config.key=value ...]
    python -m ofa_jax.train --config configs/ocr_cpu_synthetic.py --workdir runs/cpu --export OUT [--export_which best]

The config file is a Python file whose ``get_config()`` returns an ``ml_collections.ConfigDict``
(``configs/*.py``); any field can be overridden with ``--config.a.b=value``. A run writes to WORKDIR:

    checkpoints/<step>/{state,data}   Orbax: train state + data iterator state (ofa_jax.checkpointing)
    metrics.jsonl                     one JSON object per logged step / validation
    tb/                               TensorBoard event files (when tensorboardX is installed)
    config.json                       the resolved config of the run

Start: if WORKDIR has a checkpoint the run resumes from the latest one (same batches, same dropout
masks: the per-step rng is ``fold_in(seed, step)``); otherwise parameters come from
``config.init.model_dir`` (an ofa-jax model dir, e.g. a converted ModelScope checkpoint) or from a
random init of ``config.model.preset``. SIGTERM (preemption) saves a checkpoint and exits with 0.
``--export`` rebuilds the model from WORKDIR's ``config.json``, so it needs no training flags.

Input: the grain pipeline (``ofa_jax.data.pipeline``), or with ``data.replay_reuse`` > 0 the replay
buffer (``ofa_jax.data.replay``: each prepared line drawn that many times on average, for accelerators
that would wait on the input); both resume exactly.

Faults (each is one ``error:``/``warning:`` line, never a traceback, from the command line):

* non-finite loss or gradients: the update is never applied; ``nan_policy="stop"`` (default) saves a
  checkpoint (finite parameters) and exits with 3, ``"skip"`` logs the step and goes on;
* a checkpoint that cannot be written (disk full, quota): exit 4, the partial step is removed, earlier
  checkpoints are intact; a save interrupted by a kill leaves only a tmp directory that is ignored:
  the next run resumes from the last complete step (an unreadable step is moved aside to
  ``corrupt-<step>`` and the one before it is used);
* data: an empty training/validation set, or one with fewer records than one batch, exits with 2;
  unreadable records are skipped (``data.bad_records="skip"``) and named; truncated labels,
  out-of-vocabulary characters (``<unk>``), empty labels and skipped records are counted in the log
  and in ``metrics.jsonl`` (``data/...``); more than half of the records unreadable exits with 2.

Sharding: ``config.mesh`` = sizes of the ``data``/``fsdp``/``tensor`` axes (-1: the rest). Parameters
and optimizer state are laid out by ``ofa_jax.partitioning``'s logical axis rules; the batch is split
over data x fsdp. ``train_step`` is one ``jax.jit`` with in/out shardings and the state donated.

Multi-host (TPU pod slice, several GPU hosts, or several CPU processes): run the same command on
every host with the coordinator flags; each host reads its own shard of the training data
(``shard_index = process_index``) and only process 0 logs and exports:

    # on host i of N (GPU clusters / CPU); on Cloud TPU pods and SLURM ``--distributed`` alone suffices
    python -m ofa_jax.train --config configs/ocr_base_fudanvi_scene.py --workdir gs://bucket/run \\
        --distributed --coordinator_address=HOST0:1234 --num_processes=N --process_id=i

The global batch ``config.batch_size`` is split evenly over processes; the workdir must be shared
(a bucket or a network file system) so that Orbax can write one checkpoint from all hosts.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal
import sys
import time
from typing import Any, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from ofa_jax import losses, partitioning
from ofa_jax.checkpointing import Checkpointer, CheckpointReadError, CheckpointWriteError, abstract_like
from ofa_jax.data.report import DataError, DataReport
from ofa_jax.config import OFAConfig, get_config
from ofa_jax.model import OFA, init_params
from ofa_jax.preprocess import image_hw
from ofa_jax.remat import exact_zero
from ofa_jax.xla_options import compiler_options


class ConfigError(ValueError):
    """A config value that cannot work (or that does not fit the model dir or checkpoint it names): the
    command line prints it as one line and exits 2."""


# ----------------------------------------------------------------------------- state


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    nonfinite: jax.Array  # how many steps were skipped for a non-finite loss or gradient


def polynomial_decay_with_warmup(lr: float, total_steps: int, warmup_steps: int, end_lr: float = 1e-7,
                                 power: float = 1.0):
    """transformers' ``get_polynomial_decay_schedule_with_warmup`` (what ModelScope's OFA trainer uses):
    linear warmup 0 -> lr, then ``(lr - end) * (1 - progress)**power + end``, then ``end``."""
    if not lr > end_lr:
        raise ConfigError(f"end_lr ({end_lr}) must be smaller than lr ({lr})")

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        warm = step / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        decay = (lr - end_lr) * (1 - jnp.clip(progress, 0.0, 1.0)) ** power + end_lr
        return jnp.where(step < warmup_steps, lr * warm, jnp.where(step > total_steps, end_lr, decay))

    return schedule


def param_path(path) -> str:
    """A key path of the params tree as ``"encoder/embed_images/conv1/kernel"`` (what ``optim.freeze``
    matches, and what model dirs name their tensors)."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def frozen_predicate(cfg):
    """``is_frozen(key_path) -> bool`` for ``optim.freeze`` (a regular expression searched in each
    parameter's path; "" freezes nothing)."""
    pattern = cfg.optim.get("freeze") or ""
    if not pattern:
        return lambda path: False
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"optim.freeze={pattern!r} is not a regular expression ({e})") from None
    return lambda path: bool(rx.search(param_path(path)))


def check_freeze(cfg, params) -> Optional[str]:
    """None without ``optim.freeze``; else a one-line summary. A pattern that freezes nothing or
    everything is a mistake (a typo in a path, or ``.``): an error, not a silent no-op."""
    if not cfg.optim.get("freeze"):
        return None
    is_frozen = frozen_predicate(cfg)
    leaves = jax.tree_util.tree_leaves_with_path(params)
    sizes = [(is_frozen(p), math.prod(x.shape)) for p, x in leaves]
    frozen = sum(n for f, n in sizes if f)
    total = sum(n for _, n in sizes)
    if frozen == 0:
        raise ConfigError(f"optim.freeze={cfg.optim.freeze!r} matches no parameter "
                         f"(paths look like {param_path(leaves[0][0])!r})")
    if frozen == total:
        raise ConfigError(f"optim.freeze={cfg.optim.freeze!r} matches every parameter: nothing would train")
    n_frozen = sum(1 for f, _ in sizes if f)
    return (f"freeze: {frozen / 1e6:.2f} M of {total / 1e6:.2f} M parameters ({n_frozen} of {len(sizes)} tensors) "
            f"frozen by {cfg.optim.freeze!r}")


def make_optimizer(cfg, total_steps: int):
    o = cfg.optim
    warmup = int(o.warmup_ratio * total_steps) if o.get("warmup_steps") is None else int(o.warmup_steps)
    sched = polynomial_decay_with_warmup(o.lr, total_steps, warmup, o.end_lr, o.power)
    parts = []
    if o.clip_norm:
        parts.append(optax.clip_by_global_norm(o.clip_norm))
    # torch.optim.AdamW semantics: decoupled decay lr * wd * p on every parameter.
    parts.append(optax.adamw(sched, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay))
    tx = optax.chain(*parts)
    if o.get("freeze"):
        # Frozen parameters get no update, no weight decay and no Adam moments (less optimizer memory);
        # their gradients are never computed (_StepParts stops them), so clipping sees the trained ones.
        is_frozen = frozen_predicate(cfg)
        labels = lambda params: jax.tree_util.tree_map_with_path(
            lambda p, _: "frozen" if is_frozen(p) else "train", params)
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
    return tx, sched


# ----------------------------------------------------------------------------- config helpers


def model_config(cfg) -> OFAConfig:
    """Architecture from the init model dir (if any) or the preset, plus ``model.overrides``."""
    base = cfg.init.model_dir or cfg.model.preset
    return get_config(base, **dict(cfg.model.get("overrides", {})))


def compute_dtype(name: str):
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


def resolve_total_steps(cfg, train_len: Optional[int]) -> int:
    if cfg.total_steps:
        return int(cfg.total_steps)
    if not cfg.get("num_epochs") or train_len is None:
        raise ConfigError("set config.total_steps (or config.num_epochs with a sized training source)")
    return int(math.ceil(cfg.num_epochs * train_len / cfg.batch_size))


# ----------------------------------------------------------------------------- data


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


def input_size(cfg):
    """``data.image_size`` (square, the reference's rule) or ``(data.image_height, data.image_size)``."""
    h, w = int(cfg.data.get("image_height", 0) or 0), int(cfg.data.image_size)
    return w if h in (0, w) else (h, w)


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


def replicated_batch(full: dict, mesh, keys) -> dict:
    """The same full batch on every process -> global arrays split over (data, fsdp)."""
    out = {}
    for k in keys:
        a = full[k]
        out[k] = jax.make_array_from_callback(a.shape, partitioning.batch_sharding(mesh, a.ndim), lambda idx, a=a: a[idx])
    return out


def to_host(x) -> np.ndarray:
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


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


# ----------------------------------------------------------------------------- train step


def _after(x, dep):
    """``x``, available only once ``dep`` is computed (`ofa_jax.remat.exact_zero` added; uint8 pixels
    through float32, where the sum is exact)."""
    zero = exact_zero(dep).astype(jnp.float32)
    return (x.astype(jnp.float32) + zero).astype(x.dtype) if x.dtype == jnp.uint8 else x + zero.astype(x.dtype)


class _StepParts:
    """The pieces of one train step, shared by the one-program step (`make_train_step`) and the
    host-driven gradient accumulation (`make_host_accum_step`), so both compute the same thing:

    * ``start(state, batch) -> (carry, n_total)``: zero gradients, the batch's token count;
    * ``micro(params, carry, mb, rng, n_total) -> carry``: add one micro-batch's loss and gradients;
    * ``finish(state, carry, n_total) -> (state, metrics)``: clip/AdamW update, the non-finite guard.

    ``carry = (gradient sum, loss, nll sum, batch_stats)``; micro-batch ``i`` uses dropout rng
    ``fold_in(fold_in(base_rng, step), i)`` however the loop is run.
    """

    def __init__(self, model: OFA, tx, cfg, src_tokens, lut):
        self.accum = int(cfg.grad_accum_steps)
        self.tx = tx
        eps, use_rdrop, alpha = cfg.loss.label_smoothing, cfg.loss.rdrop, cfg.loss.rdrop_alpha
        self.use_rdrop = use_rdrop
        debug = cfg.get("debug", {})
        self.nan_loss_at = tuple(int(x) for x in (debug.get("nan_loss_at_steps") or ()))
        self.inf_grad_at = tuple(int(x) for x in (debug.get("inf_grad_at_steps") or ()))
        train_bn = cfg.model.train_bn

        def micro_loss(params, batch_stats, mb, rng):
            images = lut[mb["image"]]
            tgt, prev, mask = mb["target"], mb["prev_output_tokens"], mb["target_mask"]
            if use_rdrop:  # the two copies get different dropout masks (one forward over the doubled batch)
                images, tgt, prev = (jnp.concatenate([a, a]) for a in (images, tgt, prev))
                mask = jnp.concatenate([mask, mask])
            src = jnp.broadcast_to(src_tokens, (images.shape[0], src_tokens.shape[-1]))
            variables = {"params": params, "batch_stats": batch_stats}
            if train_bn:
                logits, upd = model.apply(variables, images, src, prev, train=True, rngs={"dropout": rng},
                                          mutable=["batch_stats"])
                new_bs = upd["batch_stats"]
            else:
                logits = model.apply(variables, images, src, prev, train=True, rngs={"dropout": rng})
                new_bs = batch_stats
            loss_sum, nll_sum, n = losses.label_smoothed_nll(logits, tgt, mask, eps)
            kl = jnp.zeros((), jnp.float32)
            if use_rdrop:
                half = logits.shape[0] // 2
                kl = losses.rdrop_kl(logits[:half], logits[half:], mask[:half])
            return loss_sum, (nll_sum, n, kl, new_bs)

        is_frozen = frozen_predicate(cfg)

        def objective(params, batch_stats, mb, rng, n_total):
            """This micro-batch's share of the whole batch's loss (token mean uses the batch total)."""
            # optim.freeze: no gradient flows into frozen parameters, so XLA never computes their
            # backward pass (with the whole encoder frozen, only the decoder's is left).
            params = jax.tree_util.tree_map_with_path(
                lambda p, x: jax.lax.stop_gradient(x) if is_frozen(p) else x, params)
            loss_sum, (nll_sum, n, kl, bs) = micro_loss(params, batch_stats, mb, rng)
            return loss_sum / n_total + alpha * kl, (nll_sum, bs)

        self._val_grad = jax.value_and_grad(objective, has_aux=True)

    def start(self, state: TrainState, batch):
        # ModelScope averages over the batch's non-pad tokens (both copies with R-Drop): known upfront,
        # so every micro-batch contributes loss_sum / n_total and the accumulated gradient is exact.
        n_total = jnp.maximum(jnp.sum(batch["target_mask"]).astype(jnp.float32) * (2 if self.use_rdrop else 1), 1.0)
        z = jnp.zeros((), jnp.float32)
        return (jax.tree.map(jnp.zeros_like, state.params), z, z, state.batch_stats), n_total

    def split(self, batch):
        """(accum, batch / accum, ...) views of the batch's arrays."""
        b = batch["image"].shape[0]
        if b % self.accum:
            raise ConfigError(f"batch {b} is not divisible by grad_accum_steps={self.accum}")
        return jax.tree.map(lambda a: a.reshape((self.accum, b // self.accum) + a.shape[1:]), batch)

    def micro(self, params, carry, mb, rng, n_total):
        g_sum, loss, nll_sum, bs = carry
        (obj, (nl, bs)), g = self._val_grad(params, bs, mb, rng, n_total)
        return jax.tree.map(jnp.add, g_sum, g), loss + obj, nll_sum + nl, bs

    def micro_run(self, params, carry, mbs, indices, rng_of, n_total):
        """``micro`` on ``mbs[j]`` (micro-batch ``indices[j]``, rng ``rng_of(indices[j])``) for each j,
        unrolled and ordered: micro-batch j starts once j-1's gradients exist, else XLA may hold all
        their activations at once."""
        for j, i in enumerate(indices):
            mb = jax.tree.map(lambda a: a[j], mbs)
            if j:
                done = sum(leaf.ravel()[0] for leaf in jax.tree.leaves(carry[0]))  # all of j-1's gradients
                mb = dict(mb, image=_after(mb["image"], done))
            carry = self.micro(params, carry, mb, rng_of(i), n_total)
        return carry

    def finish(self, state: TrainState, carry, n_total):
        grads, loss, nll_sum, new_bs = carry
        if self.nan_loss_at:  # tests only (config.debug): a NaN loss (and gradients) at the given steps
            hit = jnp.isin(state.step + 1, jnp.asarray(self.nan_loss_at))
            loss = jnp.where(hit, jnp.nan, loss)
            grads = jax.tree.map(lambda g: jnp.where(hit, jnp.nan, g), grads)
        if self.inf_grad_at:  # tests only: an infinite gradient (finite loss) at the given steps
            hit = jnp.isin(state.step + 1, jnp.asarray(self.inf_grad_at))
            grads = jax.tree.map(lambda g: jnp.where(hit, jnp.inf, g), grads)
        gnorm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(gnorm)
        updates, new_opt = self.tx.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        # A non-finite step leaves the state as it was; cfg.nan_policy decides whether the run stops.
        keep = lambda new, old: jax.tree.map(lambda a, o: jnp.where(finite, a, o), new, old)
        new_state = state.replace(
            step=state.step + 1, params=keep(new_params, state.params), opt_state=keep(new_opt, state.opt_state),
            batch_stats=keep(new_bs, state.batch_stats), nonfinite=state.nonfinite + (~finite).astype(jnp.int32))
        metrics = {"loss": loss, "nll_loss": nll_sum / n_total, "ntokens": n_total, "grad_norm": gnorm,
                   "finite": finite}
        return new_state, metrics


def accum_loop(cfg, backend: Optional[str] = None) -> str:
    """How the micro-batches of ``cfg.grad_accum_steps`` run: "host", "unroll" or "scan".

    "auto" is "host" on CPU: XLA:CPU runs convolutions inside a scan's loop body 5-12x slower than
    unrolled, and the unrolled program of K micro-batches is K times larger (for tiny at 480x480 with
    8 micro-batches its compiled form alone held ~1 GB and took ~95 s to compile; bench/RESULTS_train.md).
    A Python loop over one jitted micro-batch step costs neither. Elsewhere "auto" is a scan: the loop
    stays on the device."""
    loop = cfg.get("grad_accum_loop", "auto")
    if loop not in ("auto", "host", "scan", "unroll"):
        raise ConfigError(f"grad_accum_loop must be auto, host, scan or unroll, got {loop!r}")
    if loop == "auto":
        return "host" if (backend or jax.default_backend()) == "cpu" else "scan"
    return loop


def make_train_step(model: OFA, tx, cfg, src_tokens: np.ndarray, lut, backend: Optional[str] = None, mesh=None):
    """``step(state, batch, base_rng) -> (state, metrics)`` (pure; jit it with shardings).

    Its micro-batches run unrolled when `accum_loop` says "unroll" or "host" (use
    `make_host_accum_step` for the latter's one-micro-batch programs), else in a ``lax.scan``.
    ``backend``: the platform the step is compiled for (default: this process's; ``ofa_jax.aot``
    compiles for a TPU from a CPU host). ``mesh``: the step's mesh, for the activation sharding
    constraints of scanned stacks (`partitioning.constrain_batch`)."""
    p = _StepParts(model, tx, cfg, src_tokens, lut)
    unroll = accum_loop(cfg, backend) in ("unroll", "host")

    def step(state: TrainState, batch, base_rng):
        with partitioning.activations_on(mesh):
            return _step(state, batch, base_rng)

    def _step(state: TrainState, batch, base_rng):
        rng = jax.random.fold_in(base_rng, state.step)
        carry, n_total = p.start(state, batch)
        mbs = p.split(batch)

        def one(carry, xs):
            mb, i = xs
            return p.micro(state.params, carry, mb, jax.random.fold_in(rng, i), n_total), None

        if p.accum == 1 or unroll:
            carry = p.micro_run(state.params, carry, mbs, range(p.accum), lambda i: jax.random.fold_in(rng, i), n_total)
        else:
            carry, _ = jax.lax.scan(one, carry, (mbs, jnp.arange(p.accum)))
        return p.finish(state, carry, n_total)

    return step


def make_host_accum_step(model: OFA, tx, cfg, src_tokens: np.ndarray, lut, state_shardings, batch_shardings, rep):
    """``step(state, batch, base_rng) -> (state, metrics)`` as three jitted programs driven from Python:
    start, micro-batches (``cfg.grad_accum_per_call`` of them per call, unrolled; 0 = 2 where that
    divides ``grad_accum_steps``, else 1; called
    ``grad_accum_steps / grad_accum_per_call`` times, the gradient sum donated), finish (the state
    donated). The same computation as `make_train_step`'s; only one micro-batch's activations exist
    at a time. Why several per call: the unrolled copies share work a lone micro-batch program
    redoes every call (weight re-layouts), at the price of a larger program."""
    p = _StepParts(model, tx, cfg, src_tokens, lut)
    k = int(cfg.get("grad_accum_per_call", 0)) or (2 if p.accum % 2 == 0 else 1)  # 0: auto
    if k < 1 or p.accum % k:
        raise ConfigError(f"grad_accum_per_call={k} must divide grad_accum_steps={p.accum}")
    carry_sh = (state_shardings.params, rep, rep, state_shardings.batch_stats)
    opts = compiler_options()
    start = jax.jit(p.start, in_shardings=(state_shardings, batch_shardings), out_shardings=(carry_sh, rep),
                    compiler_options=opts)

    def micro(params, carry, batch, base_rng, step, n_total, i0):
        mbs = jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, i0, k), p.split(batch))
        rng_of = lambda i: jax.random.fold_in(jax.random.fold_in(base_rng, step), i)
        with partitioning.activations_on(rep.mesh):
            return p.micro_run(params, carry, mbs, [i0 + j for j in range(k)], rng_of, n_total)

    micro = jax.jit(micro, in_shardings=(state_shardings.params, carry_sh, batch_shardings, rep, rep, rep, rep),
                    out_shardings=carry_sh, donate_argnums=(1,), compiler_options=opts)
    finish = jax.jit(p.finish, in_shardings=(state_shardings, carry_sh, rep), out_shardings=(state_shardings, rep),
                     donate_argnums=(0,), compiler_options=opts)

    def step(state: TrainState, batch, base_rng):
        carry, n_total = start(state, batch)
        for i0 in range(0, p.accum, k):
            carry = micro(state.params, carry, batch, base_rng, state.step, n_total, np.int32(i0))
        return finish(state, carry, n_total)

    step.start, step.micro, step.per_call = start, micro, k  # for benchmarks (micro's memory_analysis())
    return step


# ----------------------------------------------------------------------------- logging


class MetricWriter:
    """Console + metrics.jsonl + TensorBoard (tensorboardX, if installed); process 0 only."""

    def __init__(self, workdir: str, enabled: bool, tensorboard: bool = True):
        self.enabled = enabled
        self.tb = None
        self.jsonl = None
        if not enabled:
            return
        self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                print("ofa-jax train: tensorboardX not installed; no TensorBoard events (pip install tensorboardX)",
                      file=sys.stderr)
            else:
                self.tb = SummaryWriter(os.path.join(workdir, "tb"))

    def write(self, step: int, scalars: dict, prefix: str = ""):
        if not self.enabled:
            return
        rec = {"step": int(step), **{f"{prefix}{k}": v for k, v in scalars.items()}}
        self.jsonl.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for k, v in scalars.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(f"{prefix}{k}", v, int(step))
            self.tb.flush()

    def log(self, msg: str):
        if self.enabled:
            print(msg, flush=True)

    def close(self):
        if self.jsonl:
            self.jsonl.close()
        if self.tb is not None:
            self.tb.close()


def _due(step: int, every: int) -> bool:
    """Every ``every`` steps; ``every <= 0``: only at the end of the run (and, for checkpoints, on
    preemption or after a validation)."""
    return every > 0 and step % every == 0


MAX_STEPS_IN_FLIGHT = 2


def _throttle(pending: list, depth: int = MAX_STEPS_IN_FLIGHT) -> None:
    """Wait for the step ``depth`` steps back before the loop fetches another batch.

    ``pending``: the metrics of the steps since the last log (reading them there waited for all). JAX
    dispatches steps asynchronously; when the input is faster than the step, the loop would queue up to
    ``log.every`` steps (each holding its batch in device memory) before it next reads metrics, and a
    SIGTERM would then wait for all of them before its checkpoint (6 minutes for 50 queued steps on a
    2-core CPU). ``depth`` steps ahead keep the device busy while bounding both."""
    if len(pending) > depth:
        jax.block_until_ready(pending[-depth - 1])


def _fmt_time(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# ----------------------------------------------------------------------------- validation


def evaluate(generate, variables, source, cfg, tokenizer, mesh, src_tokens) -> dict:
    """Decode the validation split (every process reads all of it) -> ACC/NED (+ examples)."""
    from ofa_jax.data.metrics import LineMetrics
    from ofa_jax.data.pipeline import PipelineConfig, make_iterator

    e = cfg.eval
    n_dev = mesh.shape["data"] * mesh.shape["fsdp"]
    bs = max(n_dev, -(-e.batch_size // n_dev) * n_dev)
    if e.max_examples and len(source) > e.max_examples:
        from ofa_jax.data.sources import ListSource
        source = ListSource([source[i] for i in range(e.max_examples)])
    it = make_iterator(source, PipelineConfig(batch_size=bs, image_size=input_size(cfg),
                                              max_target_tokens=cfg.data.max_target_tokens, train=False),
                       tokenizer)
    metrics = LineMetrics(e.normalization)
    examples = []
    lut = np.asarray(_normalize_lut())
    for batch in it:
        images = lut[batch["image"]]
        arrays = replicated_batch({"image": images, "src": np.broadcast_to(src_tokens, (bs, src_tokens.shape[-1]))},
                                  mesh, ("image", "src"))
        out = generate(variables, arrays["image"], arrays["src"])
        tokens, lengths = to_host(out.tokens), to_host(out.lengths)
        for i in np.flatnonzero(batch["valid"]):
            pred = tokenizer.decode_ocr(tokens[i, 0, :int(lengths[i, 0])].tolist())
            gt = str(batch["text"][i])
            metrics.update_one(pred, gt)
            if len(examples) < 3:
                examples.append((gt, pred))
    r = metrics.result()
    return {"acc": r["acc"], "ned": r["ned"], "n": r["n"], "examples": examples}


def _normalize_lut():
    from ofa_jax.preprocess import NORMALIZE_LUT

    return NORMALIZE_LUT


# ----------------------------------------------------------------------------- setup


class _Preemption:
    def __init__(self):
        self.requested = False

    def install(self):
        try:
            signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not the main thread (e.g. called from a test thread)
            pass

    def _handler(self, signum, frame):
        self.requested = True

    def synced(self) -> bool:
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils

        return bool(np.max(multihost_utils.process_allgather(np.array([self.requested], np.int32))))


@dataclasses.dataclass
class Setup:
    mcfg: OFAConfig
    model: OFA
    mesh: Any
    tx: Any
    schedule: Any
    state_shardings: Any
    abstract_state: Any
    total_steps: int
    freeze: Optional[str] = None  # what optim.freeze froze, one line (check_freeze)


def build(cfg, train_len: Optional[int], devices=None) -> Setup:
    """Model, mesh, optimizer and the abstract (sharded) train state, without allocating anything.
    ``devices``: the mesh's devices (default: this process's ``jax.devices()``; ``ofa_jax.aot`` passes
    the abstract devices of a TPU topology)."""
    mcfg = model_config(cfg)
    scan = bool(cfg.model.get("scan", False))
    model = OFA(mcfg, dtype=compute_dtype(cfg.model.dtype), frozen_bn=not cfg.model.train_bn,
                remat=cfg.model.get("remat", "none"), scan=scan)
    devices = list(jax.devices() if devices is None else devices)
    if cfg.mesh.get("num_devices"):
        devices = devices[:int(cfg.mesh.num_devices)]
    mesh = partitioning.make_mesh({k: int(v) for k, v in cfg.mesh.items() if k != "num_devices"}, devices)
    total = resolve_total_steps(cfg, train_len)
    tx, schedule = make_optimizer(cfg, total)
    boxed = jax.eval_shape(lambda: init_params(mcfg, jax.random.PRNGKey(0), image_hw(input_size(cfg)), scan=scan))
    var_shardings = nn.meta.unbox(partitioning.variable_shardings(boxed, mesh))
    abstract_vars = nn.meta.unbox(boxed)
    freeze = check_freeze(cfg, abstract_vars["params"])  # a pattern that cannot work fails here, before compiling
    opt_abstract = jax.eval_shape(tx.init, abstract_vars["params"])
    rep = NamedSharding(mesh, P())
    masked = lambda x: isinstance(x, optax.MaskedNode)  # optim.freeze: no Adam state for frozen parameters
    opt_shardings = optax.tree_map_params(tx, lambda a, s: a if masked(a) else s, opt_abstract,
                                          var_shardings["params"], transform_non_params=lambda _: rep,
                                          is_leaf=masked)
    state_shardings = TrainState(step=rep, params=var_shardings["params"],
                                 batch_stats=var_shardings.get("batch_stats", {}), opt_state=opt_shardings,
                                 nonfinite=rep)
    abstract = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=abstract_vars["params"],
                          batch_stats=abstract_vars.get("batch_stats", {}), opt_state=opt_abstract,
                          nonfinite=jax.ShapeDtypeStruct((), jnp.int32))
    return Setup(mcfg, model, mesh, tx, schedule, state_shardings, abstract_like(abstract, state_shardings), total,
                 freeze)


def initial_state(cfg, s: Setup, log) -> TrainState:
    """From a model dir (sharded placement of the loaded numpy arrays) or a random init under jit."""
    size = image_hw(input_size(cfg))
    if cfg.init.model_dir:
        from ofa_jax.modeldir import load_model_dir

        md = load_model_dir(cfg.init.model_dir)
        log(f"init: parameters from model dir {cfg.init.model_dir}")
        loaded = {"params": md.variables["params"], "batch_stats": md.variables.get("batch_stats", {})}
        if s.model.scan:  # model dirs keep the per-layer layout; the scanned model stacks it
            from ofa_jax.layout import stack_layers

            loaded = stack_layers(loaded, s.mcfg)
        want = {"params": s.abstract_state.params, "batch_stats": s.abstract_state.batch_stats}
        try:
            jax.tree.map(lambda a, b: None, want, loaded)
        except ValueError as e:
            raise ConfigError(f"{cfg.init.model_dir}: parameters do not match the model config ({e})") from None

        def place(x, a):
            x = np.asarray(x)
            if x.shape != a.shape:
                raise ConfigError(f"{cfg.init.model_dir}: shape {x.shape} where the model has {a.shape}")
            x = x.astype(a.dtype)
            return jax.make_array_from_callback(a.shape, a.sharding, lambda idx: x[idx])

        v = jax.tree.map(place, loaded, want)
        params, batch_stats = v["params"], v["batch_stats"]
    else:
        log(f"init: random {cfg.model.preset} parameters (seed {cfg.seed})")

        def init_vars(rng):
            return nn.meta.unbox(init_params(s.mcfg, rng, size, scan=s.model.scan))

        shard = {"params": s.state_shardings.params, "batch_stats": s.state_shardings.batch_stats}
        v = jax.jit(init_vars, out_shardings=shard)(jax.random.PRNGKey(cfg.seed))
        params, batch_stats = v["params"], v.get("batch_stats", {})
    opt_state = jax.jit(s.tx.init, out_shardings=s.state_shardings.opt_state)(params)
    rep = s.state_shardings.step
    zero = lambda: jax.device_put(jnp.zeros((), jnp.int32), rep)  # distinct buffers: the state is donated
    return TrainState(step=zero(), params=params, batch_stats=batch_stats, opt_state=opt_state, nonfinite=zero())


def _ckpt(cfg, workdir) -> Checkpointer:
    c = cfg.ckpt
    return Checkpointer(os.path.join(workdir, "checkpoints"), keep=c.keep, keep_best=c.keep_best,
                        best_metric=c.best_metric, best_mode=c.best_mode, async_save=c.async_save)


# ----------------------------------------------------------------------------- main loop


def train_and_evaluate(cfg, workdir: str, train_source=None, val_source=None) -> dict:
    """Runs (or resumes) training; returns the last train and validation metrics."""
    from ofa_jax.tokenizer import OFATokenizer

    workdir = os.path.abspath(workdir)
    lead = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    writer = MetricWriter(workdir, lead, cfg.log.tensorboard)
    log = writer.log
    if lead:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(cfg.to_json_best_effort(indent=2, sort_keys=True) + "\n")

    tokenizer = OFATokenizer.from_model_dir(cfg.init.model_dir) if cfg.init.model_dir else OFATokenizer.default()
    src_tokens = np.asarray(tokenizer.encode_prompt(cfg.prompt), np.int32)[None]
    if cfg.nan_policy not in ("stop", "skip"):
        raise DataError(f"nan_policy must be 'stop' or 'skip', got {cfg.nan_policy!r}")
    if train_source is None:
        train_source = load_config_source(cfg, "train")
    if val_source is None:
        val_source = load_config_source(cfg, "val")
    check_data_sizes(cfg, train_source, val_source)

    s = build(cfg, len(train_source))
    n_batch_dev = s.mesh.shape["data"] * s.mesh.shape["fsdp"]
    if (cfg.batch_size // cfg.grad_accum_steps) % n_batch_dev:
        raise DataError(f"micro-batch {cfg.batch_size // cfg.grad_accum_steps} is not divisible by "
                         f"data x fsdp = {n_batch_dev}")
    train_iter = make_train_iterator(train_source, cfg, tokenizer, log)
    import glob as _glob
    partial = sorted(os.path.basename(p) for p in _glob.glob(os.path.join(workdir, "checkpoints", "*.orbax-checkpoint-tmp*")))
    if partial:
        log(f"resume: ignoring incomplete checkpoint(s) {', '.join(partial)} (a save was interrupted)")
    ckpt = _ckpt(cfg, workdir)
    restored = ckpt.restore_latest(s.abstract_state, log=log) if ckpt.latest_step() is not None else None
    if restored is not None:
        start, state, data_state = restored
        log(f"resume: step {start} from {ckpt.directory}")
        train_iter.set_state(data_state)
    else:
        state = initial_state(cfg, s, log)
        start = 0

    lut = jnp.asarray(_normalize_lut())
    batch_keys = ("image", "target", "prev_output_tokens", "target_mask")
    rep = NamedSharding(s.mesh, P())
    b_shard = {k: partitioning.batch_sharding(s.mesh, 4 if k == "image" else 2) for k in batch_keys}
    if cfg.grad_accum_steps > 1 and accum_loop(cfg) == "host":
        train_step = make_host_accum_step(s.model, s.tx, cfg, src_tokens, lut, s.state_shardings, b_shard, rep)
    else:
        train_step = jax.jit(make_train_step(s.model, s.tx, cfg, src_tokens, lut, mesh=s.mesh),
                             in_shardings=(s.state_shardings, b_shard, rep),
                             out_shardings=(s.state_shardings, rep), donate_argnums=(0,),
                             compiler_options=compiler_options())
    base_rng = jax.device_put(jax.random.PRNGKey(cfg.seed + 1), rep)

    generate = None
    if val_source is not None:
        from ofa_jax.decoding import GenerationConfig, make_generate_fn

        gen = GenerationConfig(beam_size=cfg.eval.beam_size, max_len_b=cfg.eval.max_len)
        generate = make_generate_fn(s.model.clone(dtype=compute_dtype(cfg.model.dtype), frozen_bn=True, remat="none"), gen,
                                    pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id, bos_id=tokenizer.bos_id,
                                    unk_id=tokenizer.unk_id)

    pre = _Preemption()
    pre.install()
    kill_at = cfg.get("debug", {}).get("sigkill_at_step", 0)
    kill_in_save_at = cfg.get("debug", {}).get("sigkill_during_save_at_step", 0)
    report = DataReport()
    log(f"train: {s.total_steps} steps, global batch {cfg.batch_size} (x{cfg.grad_accum_steps} accumulation), "
        f"mesh {dict(s.mesh.shape)}, {jax.process_count()} process(es), image {'x'.join(map(str, image_hw(input_size(cfg))))}")
    if s.freeze:
        log(s.freeze)
    last_train, last_val = {}, {}
    pending = []  # device metrics since the last log
    t_log, n_log = time.perf_counter(), 0
    t_start = time.perf_counter()
    step = start
    stopped = None
    while step < s.total_steps:
        batch = next(train_iter)
        report.update(batch)
        arrays = global_batch({k: batch[k] for k in batch_keys}, s.mesh, batch_keys)
        state, m = train_step(state, arrays, base_rng)
        step += 1
        pending.append(m)
        _throttle(pending)
        n_log += 1
        is_last = step == s.total_steps
        if _due(step, cfg.log.every) or is_last:
            host = jax.device_get(pending)
            pending = []
            dt = time.perf_counter() - t_log
            bad_steps = [step - len(host) + 1 + j for j, h in enumerate(host) if not bool(h["finite"])]
            if bad_steps and cfg.nan_policy == "stop":
                # the non-finite updates were not applied: the state is finite, save it before stopping
                ckpt.save(step, state, train_iter.get_state())
                stopped = (f"non-finite loss or gradient at step {', '.join(map(str, bad_steps))} (update not "
                           f"applied); saved checkpoint step {step} (finite parameters); stopping")
                log(f"error: {stopped}. Set --config.nan_policy=skip to skip such steps instead.")
                break
            if bad_steps:
                log(f"warning: non-finite loss or gradient at step {', '.join(map(str, bad_steps))}: update skipped "
                    f"({int(jax.device_get(state.nonfinite))} skipped in this run so far)")
            report.check(f"training data {cfg.data.train or '<given source>'}")
            finite = [h for h in host if bool(h["finite"])] or host
            loss = float(np.mean([h["loss"] for h in finite]))
            lr = float(s.schedule(step - 1))
            ips = n_log * cfg.batch_size / dt
            eta = (s.total_steps - step) * dt / n_log
            last_train = {"loss": loss, "nll_loss": float(np.mean([h["nll_loss"] for h in finite])),
                          "grad_norm": float(np.mean([h["grad_norm"] for h in finite])), "lr": lr,
                          "images_per_s": ips, "skipped_nonfinite": int(jax.device_get(state.nonfinite))}
            writer.write(step, last_train, "train/")
            writer.write(step, report.metrics(), "data/")
            news = report.news()
            if news:
                log(news)
            log(f"step {step}/{s.total_steps} loss {loss:.4f} lr {lr:.3g} {ips:.1f} img/s "
                f"elapsed {_fmt_time(time.perf_counter() - t_start)} eta {_fmt_time(eta)}")
            t_log, n_log = time.perf_counter(), 0
        if step == kill_at:  # tests: die like kill -9 between checkpoints
            ckpt.wait()
            os.kill(os.getpid(), signal.SIGKILL)
        val_metrics = None
        if generate is not None and (_due(step, cfg.eval.every) or is_last):
            t0 = time.perf_counter()
            variables = {"params": state.params, "batch_stats": state.batch_stats}
            r = evaluate(generate, variables, val_source, cfg, tokenizer, s.mesh, src_tokens)
            val_metrics = {"acc": r["acc"], "ned": r["ned"], "n": r["n"]}
            last_val = val_metrics
            writer.write(step, val_metrics, "val/")
            log(f"val step {step}: ACC {r['acc']:.4f} NED {r['ned']:.4f} (n={r['n']}, {cfg.eval.normalization} "
                f"normalisation, {time.perf_counter() - t0:.1f}s); e.g. " +
                "; ".join(f"{g!r} -> {p!r}" for g, p in r["examples"]))
        preempted = pre.synced()
        if _due(step, cfg.ckpt.every) or is_last or preempted or val_metrics is not None:
            ckpt.save(step, state, train_iter.get_state(), metrics=val_metrics)
            if step == kill_in_save_at:  # tests: die like kill -9 while the (async) save is being written
                _kill_when_writing(ckpt.directory, step)
        if preempted:
            log(f"SIGTERM: saved step {step}; exiting")
            stopped = "preempted"
            break
    ckpt.close()
    writer.close()
    if hasattr(train_iter, "close"):
        train_iter.close()
    if stopped and stopped != "preempted":
        raise FloatingPointError(stopped)
    return {"train": last_train, "val": last_val, "step": step, "stopped": stopped}


def _kill_when_writing(directory: str, step: int, timeout: float = 60.0):
    import glob as _glob

    deadline = time.time() + timeout
    while time.time() < deadline and not _glob.glob(os.path.join(directory, f"{step}.orbax-checkpoint-tmp*", "*")):
        time.sleep(0.001)
    os.kill(os.getpid(), signal.SIGKILL)


# ----------------------------------------------------------------------------- export


def saved_run_config(cfg, workdir: str):
    """The config the run in ``workdir`` trained with (its ``config.json``), else ``cfg``: exporting
    needs the run's model, optimizer and input size, not whatever flags the export command repeats."""
    import ml_collections

    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return cfg
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def export(cfg, workdir: str, out: str, which: str = "best", dtype: str = "float32") -> int:
    """Best (by validation metric; falls back to last) or last checkpoint -> an ofa-jax model dir.
    The model, optimizer, input size and generation defaults are the run's (`saved_run_config`)."""
    from ofa_jax.modeldir import load_model_dir, save_model_dir

    cfg = saved_run_config(cfg, workdir)
    ckpt = _ckpt(cfg, workdir)
    step = ckpt.best_step() if which == "best" else None
    if step is None:
        step = ckpt.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {ckpt.directory}")
    s = build(cfg, None if cfg.total_steps else 1)
    state, _ = ckpt.restore(step, s.abstract_state, data=False)
    ckpt.close()
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    if s.model.scan:  # a model dir has the per-layer layout whatever form trained it
        from ofa_jax.layout import unstack_layers

        variables = unstack_layers(variables, s.mcfg)
    vocab = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "vocab_zh.txt")
    extras, generation = {}, {}
    if cfg.init.model_dir:  # keep what the init model dir had (unused image-code weights, generation defaults)
        md = load_model_dir(cfg.init.model_dir)
        extras, generation, vocab = md.extras, dict(md.generation), md.vocab_path
        generation.pop("views", None)  # test-time views are chosen per model (ofa_jax/views.py), not inherited
    size = input_size(cfg)
    generation.update(patch_image_size=size if isinstance(size, int) else list(size), prompt=cfg.prompt,
                      beam_size=int(cfg.eval.beam_size), max_len_b=int(cfg.eval.max_len))
    if jax.process_index() == 0:
        save_model_dir(out, s.mcfg, variables, vocab, generation=generation, extras=extras, dtype=dtype,
                       metadata={"source": "ofa_jax.train", "step": int(step), "which": which})
    return step


# ----------------------------------------------------------------------------- CLI


def _quiet_library_tracebacks():
    """Orbax logs a failed background save at ERROR with a traceback before our one-line error: keep
    its message, drop the traceback (``--verbosity`` given on the command line keeps everything)."""
    import logging

    class _NoTraceback(logging.Filter):
        def filter(self, record):
            if "orbax" in (record.pathname or ""):
                record.exc_info, record.exc_text = None, None
            return True

    logging.getLogger("absl").addFilter(_NoTraceback())


def main(argv=None):
    from absl import flags
    from ml_collections import config_flags

    flags_ = flags.FLAGS
    config_flags.DEFINE_config_file("config", None, "config file (configs/*.py)", lock_config=True)
    flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, TensorBoard)")
    flags.DEFINE_string("export", None, "export a checkpoint of --workdir to this model dir and exit")
    flags.DEFINE_enum("export_which", "best", ["best", "last"], "which checkpoint --export writes")
    flags.DEFINE_enum("export_dtype", "float32", ["float32", "bfloat16"],
                      "parameter dtype --export writes (bfloat16 halves the dir; BatchNorm statistics stay float32)")
    flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() (multi-host)")
    flags.DEFINE_string("coordinator_address", None, "multi-host: HOST:PORT of process 0")
    flags.DEFINE_integer("num_processes", None, "multi-host: number of processes")
    flags.DEFINE_integer("process_id", None, "multi-host: this process's index")
    flags.mark_flags_as_required(["config", "workdir"])

    def run(_):
        from absl import logging as absl_logging

        from ofa_jax.modeldir import ModelDirError

        if not flags_["verbosity"].present:  # Orbax logs every save at INFO
            absl_logging.set_verbosity(absl_logging.WARNING)
            _quiet_library_tracebacks()
        if flags_.distributed or flags_.coordinator_address:
            jax.distributed.initialize(coordinator_address=flags_.coordinator_address,
                                       num_processes=flags_.num_processes, process_id=flags_.process_id)
        cfg = flags_.config
        if flags_.export:
            step = export(cfg, flags_.workdir, flags_.export, flags_.export_which, flags_.export_dtype)
            print(f"exported step {step} ({flags_.export_which}, {flags_.export_dtype}) to {flags_.export}")
            return 0
        try:
            out = train_and_evaluate(cfg, flags_.workdir)
        except FloatingPointError:
            return 3  # the message is logged
        except CheckpointWriteError as e:
            print(f"error: {e}", file=sys.stderr)
            return 4
        except (DataError, CheckpointReadError, ModelDirError, ConfigError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if jax.process_index() == 0:
            print(json.dumps({"final": {"step": out["step"], **{f"train/{k}": v for k, v in out["train"].items()},
                                        **{f"val/{k}": v for k, v in out["val"].items()}}}))
        return 0

    from ofa_jax.cli import absl_run

    absl_run(run, argv)


if __name__ == "__main__":
    main()
