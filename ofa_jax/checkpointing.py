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

The state is stored unboxed (plain arrays, no ``nn.Partitioned`` boxes): boxes in a restore target
make Orbax restore the box metadata instead of the array. Shardings travel in the restore target.
"""
from __future__ import annotations

import json
import os
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
        return self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                               data=ocp.args.JsonSave(data)),
                                 metrics=metrics, force=True)

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
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree, shardings):
    """ShapeDtypeStructs of ``tree`` (arrays or ShapeDtypeStructs) carrying ``shardings``."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
