"""The train step: loss and gradients over ``grad_accum_steps`` micro-batches, the AdamW update and
the non-finite guard. One jitted program (micro-batches unrolled or in a ``lax.scan``:
`make_train_step`) or three driven from Python (`make_host_accum_step`); `accum_loop` picks."""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ofa_jax import losses, partitioning
from ofa_jax.model import OFA
from ofa_jax.remat import exact_zero
from ofa_jax.train.runconfig import ConfigError
from ofa_jax.train.state import TrainState, frozen_predicate
from ofa_jax.xla_options import compiler_options


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
    8 micro-batches its compiled form alone held ~1 GB and took ~95 s to compile; docs/performance.md).
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
