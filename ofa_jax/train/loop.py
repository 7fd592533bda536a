"""The train loop (`train_and_evaluate`): start or resume, step, log, validate, checkpoint, and stop on
the last step, a non-finite step or SIGTERM."""
from __future__ import annotations

import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from ofa_jax import partitioning
from ofa_jax.data.report import DataError, DataReport
from ofa_jax.preprocess import NORMALIZE_LUT, image_hw
from ofa_jax.train.inputs import check_data_sizes, global_batch, load_config_source, make_train_iterator
from ofa_jax.train.metrics import MetricWriter, fmt_time
from ofa_jax.train.runconfig import compute_dtype, input_size
from ofa_jax.train.state import build, checkpointer, initial_state
from ofa_jax.train.step import accum_loop, make_host_accum_step, make_train_step
from ofa_jax.train.validation import evaluate
from ofa_jax.xla_options import compiler_options


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
    ckpt = checkpointer(cfg, workdir)
    restored = ckpt.restore_latest(s.abstract_state, log=log) if ckpt.latest_step() is not None else None
    if restored is not None:
        start, state, data_state = restored
        log(f"resume: step {start} from {ckpt.directory}")
        train_iter.set_state(data_state)
    else:
        state = initial_state(cfg, s, log)
        start = 0

    lut = jnp.asarray(NORMALIZE_LUT)
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
                f"elapsed {fmt_time(time.perf_counter() - t_start)} eta {fmt_time(eta)}")
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
