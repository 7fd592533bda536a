"""The train state and what makes it: the optimizer (AdamW with ModelScope's schedule), ``optim.freeze``,
the sharded abstract state (`build`, nothing allocated) and the first state (`initial_state`), and the
run's checkpoints."""
from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from ofa_jax import partitioning
from ofa_jax.checkpointing import Checkpointer, abstract_like
from ofa_jax.config import OFAConfig
from ofa_jax.model import OFA, init_params
from ofa_jax.preprocess import image_hw
from ofa_jax.train.runconfig import ConfigError, compute_dtype, input_size, model_config, resolve_total_steps


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
    everything is a mistake (a typo in a path, or ``.``): an error, not a run that quietly
    trains everything or nothing."""
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
        # their gradients are never computed (step._StepParts stops them), so clipping sees the trained ones.
        is_frozen = frozen_predicate(cfg)
        labels = lambda params: jax.tree_util.tree_map_with_path(
            lambda p, _: "frozen" if is_frozen(p) else "train", params)
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
    return tx, sched


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
    fused = bool(cfg.model.get("fused_attention", False))
    model = OFA(mcfg, dtype=compute_dtype(cfg.model.dtype), frozen_bn=not cfg.model.train_bn,
                remat=cfg.model.get("remat", "none"), scan=scan, fused_attention=fused)
    devices = list(jax.devices() if devices is None else devices)
    if fused and devices[0].platform != "tpu":
        raise ConfigError(f"model.fused_attention runs on TPUs only (a Pallas TPU kernel), not on {devices[0].platform}")
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


def checkpointer(cfg, workdir) -> Checkpointer:
    """The run's Orbax checkpoints (``WORKDIR/checkpoints``) with the config's retention."""
    c = cfg.ckpt
    return Checkpointer(os.path.join(workdir, "checkpoints"), keep=c.keep, keep_best=c.keep_best,
                        best_metric=c.best_metric, best_mode=c.best_mode, async_save=c.async_save)
