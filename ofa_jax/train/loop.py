"""The train loop (`train_and_evaluate`): start or resume, step, log, validate, checkpoint, and stop on
the last step, a non-finite step, SIGTERM or Ctrl-C."""
from __future__ import annotations

import dataclasses
import glob
import os
import signal
import sys
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from ofa_jax import partitioning
from ofa_jax.checkpointing import Checkpointer
from ofa_jax.data.report import DataError, DataReport
from ofa_jax.preprocess import NORMALIZE_LUT, image_hw
from ofa_jax.train.inputs import check_data_sizes, global_batch, load_config_source, make_train_iterator
from ofa_jax.train.metrics import MetricWriter, fmt_time
from ofa_jax.train.runconfig import compute_dtype, input_size
from ofa_jax.train.state import Setup, TrainState, build, checkpointer, initial_state
from ofa_jax.train.step import accum_loop, make_host_accum_step, make_train_step
from ofa_jax.train.validation import evaluate
from ofa_jax.xla_options import compiler_options

BATCH_KEYS = ("image", "target", "prev_output_tokens", "target_mask")  # what the train step reads of a batch
MAX_STEPS_IN_FLIGHT = 2  # steps dispatched but not finished, at most (`_throttle`)


def train_and_evaluate(cfg, workdir: str, train_source=None, val_source=None) -> dict:
    """Runs (or resumes) training; returns the last train and validation metrics."""
    workdir = os.path.abspath(workdir)
    writer = _open_workdir(cfg, workdir)
    log = writer.log
    run, state = _prepare(cfg, workdir, train_source, val_source, log)
    pre = _Preemption()
    pre.install()
    try:
        return _loop(cfg, run, state, writer, pre)
    finally:
        pre.uninstall()
        if hasattr(run.train_iter, "close"):  # its worker processes and their shared memory
            run.train_iter.close()


def _loop(cfg, run, state, writer, pre) -> dict:
    s, ckpt, train_iter, log = run.setup, run.ckpt, run.train_iter, writer.log
    kills = _TestKills(cfg)
    log(f"train: {s.total_steps} steps, global batch {cfg.batch_size} (x{cfg.grad_accum_steps} accumulation), "
        f"mesh {dict(s.mesh.shape)}, {jax.process_count()} process(es), image {'x'.join(map(str, image_hw(input_size(cfg))))}")
    if s.freeze:
        log(s.freeze)
    progress = _Progress(cfg, s, writer)
    last_val = {}
    step = run.start
    stopped = None
    while step < s.total_steps:
        batch = next(train_iter)
        progress.data.update(batch)
        state, m = run.train_step(state, global_batch(batch, s.mesh, BATCH_KEYS), run.base_rng)
        step += 1
        progress.add(m)
        is_last = step == s.total_steps
        if _due(step, cfg.log.every) or is_last:
            bad_steps = progress.flush(step, state)
            if bad_steps and cfg.nan_policy == "stop":
                stopped = _stop_nonfinite(step, bad_steps, state, ckpt, train_iter, log)
                break
        kills.after_step(step, ckpt)
        val_metrics = None
        if run.generate is not None and (_due(step, cfg.eval.every) or is_last):
            val_metrics = last_val = _validate(cfg, run, step, state, writer)
        if pre.abort:  # a second Ctrl-C whose KeyboardInterrupt something swallowed (e.g. a gc callback)
            raise KeyboardInterrupt
        preempted = pre.synced()
        if _due(step, cfg.ckpt.every) or is_last or preempted or val_metrics is not None:
            ckpt.save(step, state, train_iter.get_state(), metrics=val_metrics)
            kills.after_save(step, ckpt)
        if preempted:
            log(f"{pre.signal_name}: saved step {step}; exiting")
            stopped = "preempted"
            break
    ckpt.close()
    writer.close()
    if stopped and stopped != "preempted":
        raise FloatingPointError(stopped)
    return {"train": progress.last, "val": last_val, "step": step, "stopped": stopped}


# ----------------------------------------------------------------------------- before the first step


@dataclasses.dataclass
class _Run:
    """What the loop steps with (`_prepare`); the train state is kept apart, as it is replaced every step."""
    setup: Setup
    tokenizer: Any
    src_tokens: np.ndarray  # the prompt's tokens, (1, length)
    train_iter: Any
    val_source: Any
    ckpt: Checkpointer
    start: int  # the step the state is at
    train_step: Callable  # (state, batch, base_rng) -> (state, metrics)
    base_rng: jax.Array
    generate: Optional[Callable]  # validation decoding; None without a validation set


def _open_workdir(cfg, workdir: str) -> MetricWriter:
    """Creates ``workdir``; process 0 writes the resolved ``config.json`` there (what ``--export`` reads)."""
    lead = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    writer = MetricWriter(workdir, lead, cfg.log.tensorboard)
    if lead:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(cfg.to_json_best_effort(indent=2, sort_keys=True) + "\n")
    return writer


def _prepare(cfg, workdir: str, train_source, val_source, log) -> tuple[_Run, TrainState]:
    """Checks the config and the data, builds the model and its sharded state, restores the latest
    checkpoint (or initialises), jits the step: what the loop needs before its first step."""
    from ofa_jax.tokenizer import OFATokenizer

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
    ckpt, state, start = _resume_or_init(cfg, s, workdir, train_iter, log)
    train_step = _jit_step(cfg, s, src_tokens)
    base_rng = jax.device_put(jax.random.PRNGKey(cfg.seed + 1), NamedSharding(s.mesh, P()))
    generate = None if val_source is None else _validation_decoder(cfg, s, tokenizer)
    run = _Run(s, tokenizer, src_tokens, train_iter, val_source, ckpt, start, train_step, base_rng, generate)
    return run, state


def _resume_or_init(cfg, s: Setup, workdir: str, train_iter, log) -> tuple[Checkpointer, TrainState, int]:
    """The run's checkpointer and the state to start from: the latest complete checkpoint (the data
    iterator set to where it was), else `initial_state` at step 0."""
    partial = sorted(os.path.basename(p) for p in glob.glob(os.path.join(workdir, "checkpoints", "*.orbax-checkpoint-tmp*")))
    if partial:
        log(f"resume: ignoring incomplete checkpoint(s) {', '.join(partial)} (a save was interrupted)")
    ckpt = checkpointer(cfg, workdir)
    restored = ckpt.restore_latest(s.abstract_state, log=log) if ckpt.latest_step() is not None else None
    if restored is None:
        return ckpt, initial_state(cfg, s, log), 0
    start, state, data_state = restored
    log(f"resume: step {start} from {ckpt.directory}")
    train_iter.set_state(data_state)
    return ckpt, state, start


def _jit_step(cfg, s: Setup, src_tokens: np.ndarray) -> Callable:
    """The train step with the state's and the batch's shardings, the state donated: one jitted program,
    or with ``grad_accum_loop`` "host" several driven from Python (`ofa_jax.train.step.accum_loop`)."""
    lut = jnp.asarray(NORMALIZE_LUT)
    rep = NamedSharding(s.mesh, P())
    b_shard = {k: partitioning.batch_sharding(s.mesh, 4 if k == "image" else 2) for k in BATCH_KEYS}
    if cfg.grad_accum_steps > 1 and accum_loop(cfg) == "host":
        return make_host_accum_step(s.model, s.tx, cfg, src_tokens, lut, s.state_shardings, b_shard, rep)
    return jax.jit(make_train_step(s.model, s.tx, cfg, src_tokens, lut, mesh=s.mesh),
                   in_shardings=(s.state_shardings, b_shard, rep),
                   out_shardings=(s.state_shardings, rep), donate_argnums=(0,),
                   compiler_options=compiler_options())


def _validation_decoder(cfg, s: Setup, tokenizer) -> Callable:
    """Beam search with the eval settings, on the model in its inference form (compute dtype, BatchNorm
    statistics frozen, no rematerialisation)."""
    from ofa_jax.decoding import GenerationConfig, make_generate_fn

    gen = GenerationConfig(beam_size=cfg.eval.beam_size, max_len_b=cfg.eval.max_len)
    return make_generate_fn(s.model.clone(dtype=compute_dtype(cfg.model.dtype), frozen_bn=True, remat="none"), gen,
                            pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id, bos_id=tokenizer.bos_id,
                            unk_id=tokenizer.unk_id)


# ----------------------------------------------------------------------------- during the loop


def _due(step: int, every: int) -> bool:
    """Every ``every`` steps; ``every <= 0``: only at the end of the run (and, for checkpoints, on
    preemption or after a validation)."""
    return every > 0 and step % every == 0


def _throttle(pending: list, depth: int = MAX_STEPS_IN_FLIGHT) -> None:
    """Wait for the step ``depth`` steps back before the loop fetches another batch.

    ``pending``: the metrics of the steps since the last log (reading them there waited for all). JAX
    dispatches steps asynchronously; when the input is faster than the step, the loop would queue up to
    ``log.every`` steps (each holding its batch in device memory) before it next reads metrics, and a
    SIGTERM would then wait for all of them before its checkpoint (6 minutes for 50 queued steps on a
    2-core CPU). ``depth`` steps ahead keep the device busy while bounding both."""
    if len(pending) > depth:
        jax.block_until_ready(pending[-depth - 1])


class _Preemption:
    """SIGTERM (preemption) and Ctrl-C (SIGINT) as a flag the loop reads once per step: it saves a
    checkpoint at the end of the step and exits. A second Ctrl-C stops at once, without saving. With
    several processes a signal to any of them stops all, at the same step: they save one checkpoint
    together. The previous handlers come back when the loop ends (a notebook's interrupt button)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested = self.abort = False
        self.signal_name = "a signal to another process"
        self._previous = {}

    def install(self):
        try:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        except ValueError:  # not the main thread (e.g. called from a test thread)
            pass

    def uninstall(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handler(self, signum, frame):
        if signum == signal.SIGINT:
            if self.requested:
                self.abort = True
                raise KeyboardInterrupt
            print("Ctrl-C: saving a checkpoint at the end of this step (Ctrl-C again to stop without saving)",
                  file=sys.stderr, flush=True)
        self.signal_name = signal.Signals(signum).name
        self.requested = True

    def synced(self) -> bool:
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils

        return bool(np.max(multihost_utils.process_allgather(np.array([self.requested], np.int32))))


class _Progress:
    """The train metrics between two log lines: the steps' device metrics (read at a log line; in between
    the loop waits only for the step `MAX_STEPS_IN_FLIGHT` back, `_throttle`), the data report, the clocks."""

    def __init__(self, cfg, s: Setup, writer: MetricWriter):
        self.cfg, self.setup, self.writer = cfg, s, writer
        self.data = DataReport()
        self.pending = []  # device metrics since the last log
        self.t_log, self.n_log = time.perf_counter(), 0
        self.t_start = time.perf_counter()
        self.last = {}  # the metrics of the last log line

    def add(self, metrics) -> None:
        """One step's (device) metrics."""
        self.pending.append(metrics)
        _throttle(self.pending)
        self.n_log += 1

    def flush(self, step: int, state: TrainState) -> list:
        """Reads the metrics since the last log line and returns the steps among them whose loss or gradient
        was not finite. Logs and writes them (mean over the finite steps), unless a step was not finite and
        ``nan_policy`` is "stop": the loop then stops without a log line."""
        cfg, s, log = self.cfg, self.setup, self.writer.log
        host = jax.device_get(self.pending)
        self.pending = []
        dt = time.perf_counter() - self.t_log
        bad_steps = [step - len(host) + 1 + j for j, h in enumerate(host) if not bool(h["finite"])]
        if bad_steps and cfg.nan_policy == "stop":
            return bad_steps
        if bad_steps:
            log(f"warning: non-finite loss or gradient at step {', '.join(map(str, bad_steps))}: update skipped "
                f"({int(jax.device_get(state.nonfinite))} skipped in this run so far)")
        self.data.check(f"training data {cfg.data.train or '<given source>'}")
        finite = [h for h in host if bool(h["finite"])] or host
        loss = float(np.mean([h["loss"] for h in finite]))
        lr = float(s.schedule(step - 1))
        ips = self.n_log * cfg.batch_size / dt
        eta = (s.total_steps - step) * dt / self.n_log
        self.last = {"loss": loss, "nll_loss": float(np.mean([h["nll_loss"] for h in finite])),
                     "grad_norm": float(np.mean([h["grad_norm"] for h in finite])), "lr": lr,
                     "images_per_s": ips, "skipped_nonfinite": int(jax.device_get(state.nonfinite))}
        self.writer.write(step, self.last, "train/")
        self.writer.write(step, self.data.metrics(), "data/")
        news = self.data.news()
        if news:
            log(news)
        log(f"step {step}/{s.total_steps} loss {loss:.4f} lr {lr:.3g} {ips:.1f} img/s "
            f"elapsed {fmt_time(time.perf_counter() - self.t_start)} eta {fmt_time(eta)}")
        self.t_log, self.n_log = time.perf_counter(), 0
        return bad_steps


def _stop_nonfinite(step: int, bad_steps: list, state: TrainState, ckpt: Checkpointer, train_iter, log) -> str:
    """``nan_policy="stop"``: saves the state and returns why the run stops."""
    # the non-finite updates were not applied: the state is finite, save it before stopping
    ckpt.save(step, state, train_iter.get_state())
    stopped = (f"non-finite loss or gradient at step {', '.join(map(str, bad_steps))} (update not "
               f"applied); saved checkpoint step {step} (finite parameters); stopping")
    log(f"error: {stopped}. Set --config.nan_policy=skip to skip such steps instead.")
    return stopped


def _validate(cfg, run: _Run, step: int, state: TrainState, writer: MetricWriter) -> dict:
    """Decodes the validation set with the current parameters; logs and writes ACC/NED."""
    t0 = time.perf_counter()
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    r = evaluate(run.generate, variables, run.val_source, cfg, run.tokenizer, run.setup.mesh, run.src_tokens)
    val_metrics = {"acc": r["acc"], "ned": r["ned"], "n": r["n"]}
    writer.write(step, val_metrics, "val/")
    writer.log(f"val step {step}: ACC {r['acc']:.4f} NED {r['ned']:.4f} (n={r['n']}, {cfg.eval.normalization} "
               f"normalisation, {time.perf_counter() - t0:.1f}s); e.g. " +
               "; ".join(f"{g!r} -> {p!r}" for g, p in r["examples"]))
    return val_metrics


class _TestKills:
    """``debug.sigkill_at_step`` and ``debug.sigkill_during_save_at_step`` (tests): die like kill -9
    between checkpoints, or while the (async) save of that step is being written."""

    def __init__(self, cfg):
        debug = cfg.get("debug", {})
        self.at, self.in_save_at = debug.get("sigkill_at_step", 0), debug.get("sigkill_during_save_at_step", 0)

    def after_step(self, step: int, ckpt: Checkpointer):
        if step == self.at:
            ckpt.wait()
            os.kill(os.getpid(), signal.SIGKILL)

    def after_save(self, step: int, ckpt: Checkpointer, timeout: float = 60.0):
        if step != self.in_save_at:
            return
        deadline = time.time() + timeout
        while time.time() < deadline and not glob.glob(os.path.join(ckpt.directory, f"{step}.orbax-checkpoint-tmp*", "*")):
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGKILL)
