"""Training checkpoints: Orbax ``CheckpointManager`` with the train state and the data-iterator state.

Layout of ``WORKDIR/checkpoints/<step>/``:

    state/   the train state (step, params, batch_stats, opt_state) as Orbax/TensorStore arrays,
             sharded as they were in training; restorable onto any other mesh
    data/    JSON: the grain iterator state of every process (``{"process_0": {...}, ...}``), so a
             resumed run sees exactly the batches an uninterrupted run would have seen

Retention: the last ``keep`` checkpoints plus the ``keep_best`` best ones by a validation metric
(only checkpoints saved together with validation metrics compete for "best"). Saves are
asynchronous: the train loop continues while TensorStore writes; an interrupted save never becomes
a visible step (Orbax finalises a step directory atomically).

Failures: a save that cannot be written (disk full, quota, permissions) raises
:class:`CheckpointWriteError` with one line naming the step, the directory and the OS reason; its
partial ``<step>.orbax-checkpoint-tmp*`` directory is removed and the earlier checkpoints are untouched
(a step only becomes visible once complete). A run killed in the middle of a save leaves such a tmp
directory, which Orbax ignores (and cleans up): the next run resumes from the last complete step.

The state is stored unboxed (plain arrays, no ``nn.Partitioned`` boxes): boxes in a restore target
make Orbax restore the box metadata instead of the array. Shardings travel in the restore target.
"""
from __future__ import annotations

import errno
import glob
import json
import os
import re
import shutil
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp


def _allgather_json(obj) -> list:
    """Every process's JSON-able ``obj``, in process order (works on one process too)."""
    if jax.process_count() == 1:
        return [obj]
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    n = int(np.max(multihost_utils.process_allgather(np.array([data.size], np.int32))))
    buf = np.zeros((n,), np.uint8)
    buf[:data.size] = data
    gathered = np.asarray(multihost_utils.process_allgather(buf)).reshape(jax.process_count(), n)
    return [json.loads(bytes(row).rstrip(b"\0").decode()) for row in gathered]


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the message is one line (step, directory, reason)."""


class CheckpointReadError(ValueError):
    """No checkpoint of a directory can be restored; the message is one line."""


def _sync_processes(name: str):
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _os_reason(e: BaseException) -> str:
    """'No space left on device (ENOSPC)' from an OSError or a TensorStore message with an errno."""
    code = getattr(e, "errno", None)
    if code is None:
        m = re.search(r"os_error_code='?(\d+)", str(e))
        code = int(m.group(1)) if m else None
    if code:
        return f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg if len(msg) <= 300 else msg[:297] + "..."


class Checkpointer:
    def __init__(self, directory: str, *, keep: int = 3, keep_best: int = 1, best_metric: str = "acc",
                 best_mode: str = "max", async_save: bool = True):
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
        self.best_metric, self.best_mode = best_metric, best_mode
        policies = [pp.LatestN(n=keep)]
        if keep_best:
            policies.append(pp.BestN(get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min",
                                     n=keep_best, keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=pp.AnyPreservationPolicy(policies), enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True)
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(self.directory, item_names=("state", "data"), options=options)
        self._async = async_save
        self._in_flight: Optional[int] = None  # step of an async save not yet known to be complete

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def best_step(self) -> Optional[int]:
        """The step with the best validation metric among kept checkpoints (None if none has one)."""
        best = None
        for step in self.manager.all_steps():
            m = self.manager.metrics(step)
            if not m or self.best_metric not in m:
                continue
            v = float(m[self.best_metric])
            if best is None or (v > best[1] if self.best_mode == "max" else v < best[1]):
                best = (step, v)
        return None if best is None else best[0]

    def save(self, step: int, state: Any, data_state: Any, metrics: Optional[dict] = None) -> bool:
        """Starts an (async) save; ``data_state`` is this process's iterator state (gathered here)."""
        per_process = _allgather_json(data_state)
        data = {f"process_{i}": s for i, s in enumerate(per_process)}
        metrics = None if metrics is None else {k: float(v) for k, v in metrics.items()
                                                if isinstance(v, (int, float, np.floating, np.integer))}
        self._check_in_flight()  # an earlier async save that failed is reported as itself
        self._in_flight = step
        try:
            ok = self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                                 data=ocp.args.JsonSave(data)),
                                   metrics=metrics, force=True)
        except Exception as e:
            raise self._write_error(e) from None
        if not self._async:
            self._in_flight = None
        return ok

    def _check_in_flight(self):
        if self._in_flight is None:
            return
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            raise self._write_error(e) from None
        self._in_flight = None

    def _write_error(self, e: BaseException) -> CheckpointWriteError:
        step, self._in_flight = self._in_flight, None
        if jax.process_index() == 0:  # free the space the partial step took; Orbax never lists it
            for tmp in glob.glob(os.path.join(self.directory, f"{step}.orbax-checkpoint-tmp*")):
                shutil.rmtree(tmp, ignore_errors=True)
        try:
            kept = [s for s in self.manager.all_steps() if s != step]
        except Exception:
            kept = []
        intact = (f"the earlier checkpoints ({', '.join(map(str, sorted(kept)))}) are intact: fix the cause and "
                  f"rerun to resume from step {max(kept)}") if kept else "no earlier checkpoint exists"
        return CheckpointWriteError(f"could not write checkpoint step {step} in {self.directory}: {_os_reason(e)}; "
                                    f"{intact}")

    def restore(self, step: int, abstract_state: Any, data: bool = True):
        """-> (state, this process's data state or None). ``abstract_state``: ShapeDtypeStructs with
        the shardings wanted now (any mesh)."""
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data:
            items["data"] = ocp.args.JsonRestore()
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
        data_state = None
        if data:
            saved = out["data"] or {}
            key = f"process_{jax.process_index()}"
            if key not in saved:
                raise ValueError(f"checkpoint step {step} has data states for {sorted(saved)}, not {key}: "
                                 "resume with the same number of processes (or start the data over)")
            data_state = saved[key]
        return out["state"], data_state

    def wait(self):
        self._check_in_flight()

    def close(self):
        err = None
        try:
            self._check_in_flight()
        except CheckpointWriteError as e:
            err = e
        try:
            self.manager.close()
        except Exception:
            if err is None:
                raise
        if err is not None:
            raise err

    def restore_latest(self, abstract_state: Any, data: bool = True, log=print):
        """-> (step, state, data state) of the newest checkpoint that restores, or None if there is none.

        A step that is listed but cannot be read (files lost or damaged after it was written, e.g. on a
        file system without atomic renames) is reported with one line and the step before it is tried.
        Once an older step restores, the unreadable newer ones are moved aside to ``corrupt-<step>``
        (kept for inspection; Orbax ignores them; the resumed run writes those steps again). If no step
        restores - typically a model or mesh config other than the run's - nothing is moved and
        :class:`CheckpointReadError` says so.
        """
        steps = sorted(self.all_steps(), reverse=True)
        failed = []
        for i, step in enumerate(steps):
            try:
                state, data_state = self.restore(step, abstract_state, data)
            except Exception as e:
                failed.append(step)
                reason = _os_reason(e)
                if i + 1 == len(steps):
                    raise CheckpointReadError(
                        f"no checkpoint in {self.directory} can be restored (step {steps[0]}"
                        f"{' and all older ones' if len(steps) > 1 else ''}; step {step}: {reason}); is the model "
                        "config the run's? Nothing was moved or deleted") from None
                log(f"warning: checkpoint step {step} in {self.directory} cannot be restored ({reason}); "
                    f"trying step {steps[i + 1]}")
                continue
            if failed:
                if jax.process_index() == 0:
                    for bad in failed:
                        aside = os.path.join(self.directory, f"corrupt-{bad}")
                        if os.path.exists(aside):
                            shutil.rmtree(aside, ignore_errors=True)
                        os.replace(os.path.join(self.directory, str(bad)), aside)
                _sync_processes(f"ofa_jax_ckpt_aside_{step}")
                self.manager.reload()
                log(f"warning: step {step} restored; moved the unreadable step(s) "
                    f"{', '.join(f'{b} to corrupt-{b}' for b in failed)} (kept for inspection)")
            return step, state, data_state
        return None


def abstract_like(tree, shardings):
    """ShapeDtypeStructs of ``tree`` (arrays or ShapeDtypeStructs) carrying ``shardings``."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
