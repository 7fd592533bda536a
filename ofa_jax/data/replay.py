"""A growing replay buffer: train faster than lines can be rendered, with the same batches every run.

On an accelerator a small OCR model takes lines faster than CPU processes can render them (the GPU training run
in ``docs/performance.md`` waited on its 15 rendering workers). `ReplayIterator` prepares every line once,
in worker processes, into a buffer on disk-backed shared memory, and draws each batch from lines
already prepared:

* line ``j`` is element ``j`` of the pipeline's random-access dataset (`pipeline.make_map_dataset`:
  the same shuffle, augmentation and tokenisation as the batched pipeline);
* the batch of step ``s`` draws ``batch_size`` lines, with replacement and seeded by ``s``, from the
  window ``[hi(s) - window, hi(s))``, where ``hi(s) = batch_size + s * fresh`` and
  ``fresh = round(batch_size / reuse)``: each step brings ``fresh`` new lines and every line is drawn
  ``reuse`` times on average.

Only the step number decides a batch, never timing: the trainer waits when rendering falls behind, and
workers pause ``ahead`` lines past the window so they never overwrite a line the trainer may still draw.
``get_state()`` is the step; a resumed run renders its window again and continues exactly. The cost is
memory: ``window + ahead`` prepared images (e.g. 100,000 lines of 32x320 RGB: 3.1 GB) in files under
``directory`` (the system temp dir by default, which unlike ``/dev/shm`` is not capped in containers),
removed when the run ends (or, after a kill -9, by the next run that uses the directory).
"""

from __future__ import annotations

import atexit
import math
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from typing import Any

import numpy as np

from ofa_jax.data.pipeline import PAD, _Collate, leave_stop_signals_to_parent
from ofa_jax.data.report import DataError

_ROW_KEYS = ("image", "target", "prev_output_tokens", "truncated", "oov_tokens", "empty_label", "bad_record")


_PREFIX = "ofa_jax_replay_"


def _remove_orphans(parent: str) -> None:
    """Remove buffers left by processes that no longer run (a run killed with -9 cannot clean up)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        pid = name[len(_PREFIX):].split("_", 1)[0]
        if not (name.startswith(_PREFIX) and pid.isdigit()):
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        except PermissionError:  # another user's live process
            pass


def _layout(slots: int, image_shape: tuple, target_len: int) -> dict:
    """name -> (dtype, shape) of the buffer files."""
    return {"image": (np.uint8, (slots,) + tuple(image_shape)),
            "target": (np.int32, (slots, target_len)),
            "prev_output_tokens": (np.int32, (slots, target_len)),
            "flags": (np.int32, (slots, 4))}  # truncated, oov_tokens, empty_label, bad_record


def _open(directory: str, layout: dict, mode: str) -> dict:
    return {k: np.memmap(os.path.join(directory, k), dtype=dt, mode=mode, shape=shape)
            for k, (dt, shape) in layout.items()}


def _write_row(buf: dict, slot: int, row: dict) -> None:
    buf["image"][slot] = row["image"][0]
    buf["target"][slot] = row["target"][0]
    buf["prev_output_tokens"][slot] = row["prev_output_tokens"][0]
    buf["flags"][slot] = (row["truncated"][0], row["oov_tokens"][0], row["empty_label"][0], row["bad_record"][0])


def _worker(dataset, directory, layout, slots, chunk, start, w, n_workers, limit, progress, stop, errors):
    """Prepare lines ``j >= start`` of chunks ``c`` with ``c % n_workers == w``, in increasing order,
    each only once ``j < limit``; ``progress[w] = j + 1`` after line ``j`` is written."""
    leave_stop_signals_to_parent()
    parent = os.getppid()
    try:
        buf = _open(directory, layout, "r+")
        collate = _Collate(1, layout["target"][1][1], pad_batch=False)
        c = start // chunk
        c += (w - c) % n_workers
        while True:
            for j in range(max(start, c * chunk), (c + 1) * chunk):
                while j >= limit.value:
                    if stop.is_set() or os.getppid() != parent:
                        return
                    time.sleep(0.002)
                _write_row(buf, j % slots, collate([dataset[j]]))
                with progress.get_lock():  # a lock: the rows are visible before the count says so
                    progress[w] = j + 1
            c += n_workers
    except BaseException as e:  # noqa: BLE001 - reported by the parent as one line
        errors.put(f"replay worker {w}: {type(e).__name__}: {' '.join(str(e).split())}")
        raise SystemExit(1) from None  # the parent reports it as one line: no traceback here


class ReplayIterator:
    """Batches drawn from a growing window of prepared lines (see the module docstring).

    ``dataset``: random access to prepared elements (`pipeline.make_map_dataset`, training config);
    ``stream``: this process's index among data-parallel processes (seeds its draws).
    ``workers=0`` prepares lines in this process (same batches, slower). ``directory``: where the
    buffer files go (None: the system temp dir).
    """

    def __init__(self, dataset: Any, batch_size: int, image_shape: tuple, target_len: int, *,
                 reuse: float, window: int, workers: int = 0, seed: int = 0, stream: int = 0,
                 chunk: int = 32, ahead: int | None = None, directory: str | None = None):
        if reuse < 1:
            raise DataError(f"replay reuse must be >= 1 (times each line is drawn on average), got {reuse}")
        if window < batch_size:
            raise DataError(f"replay window ({window} lines) must hold at least one batch ({batch_size})")
        self.dataset, self.batch_size, self.seed, self.stream = dataset, int(batch_size), int(seed), int(stream)
        self.fresh = max(1, int(round(batch_size / reuse)))
        self.window, self.workers, self.chunk = int(window), int(workers), int(chunk)
        self.ahead = int(ahead) if ahead else max(4 * self.fresh, 2 * self.chunk * max(1, self.workers))
        self.slots = self.window + self.ahead
        self.layout = _layout(self.slots, image_shape, target_len)
        self.directory = directory
        self.step = 0
        self._procs: list = []
        self._dir = None
        self._buf = None
        atexit.register(self.close)  # workers and buffer files go with the process, however it ends

    # ------------------------------------------------------------------ schedule

    def hi(self, step: int) -> int:
        return self.batch_size + step * self.fresh

    def lo(self, step: int) -> int:
        return max(0, self.hi(step) - self.window)

    def nbytes(self) -> int:
        return sum(int(np.dtype(dt).itemsize * math.prod(shape)) for dt, shape in self.layout.values())

    # ------------------------------------------------------------------ buffer and workers

    def _start(self) -> None:
        self.close()
        if self.directory:
            os.makedirs(self.directory, exist_ok=True)
        _remove_orphans(self.directory or tempfile.gettempdir())
        self._dir = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}_", dir=self.directory)
        self._buf = _open(self._dir, self.layout, "w+")
        self._start_line = self.lo(self.step) // self.chunk * self.chunk
        self._done = self._start_line  # workers=0: lines < _done are prepared
        if self.workers <= 0:
            self._collate = _Collate(1, self.layout["target"][1][1], pad_batch=False)
            return
        ctx = mp.get_context("spawn")
        self._limit = ctx.Value("q", self.hi(self.step) + self.ahead, lock=False)
        self._progress = ctx.Array("q", [self._start_line] * self.workers)
        self._stop, self._errors = ctx.Event(), ctx.Queue()
        self._procs = [ctx.Process(target=_worker, daemon=True, name=f"ofa-jax-replay-{w}",
                                   args=(self.dataset, self._dir, self.layout, self.slots, self.chunk,
                                         self._start_line, w, self.workers, self._limit, self._progress,
                                         self._stop, self._errors))
                       for w in range(self.workers)]
        # Workers never need an accelerator: keep any JAX they import on the CPU (on a GPU host each
        # process that touched the GPU would reserve most of its memory).
        saved = os.environ.get("JAX_PLATFORMS")
        os.environ["JAX_PLATFORMS"] = "cpu"
        try:
            for p in self._procs:
                p.start()
        except Exception as e:  # e.g. a dataset that cannot be pickled for the spawned workers
            self.close()
            raise DataError(f"replay workers could not start: {type(e).__name__}: {' '.join(str(e).split())}") from None
        finally:
            if saved is None:
                os.environ.pop("JAX_PLATFORMS", None)
            else:
                os.environ["JAX_PLATFORMS"] = saved

    def _needed(self, hi: int) -> list:
        """Per worker, the count its progress must reach for every line below ``hi`` to be ready."""
        need = [0] * self.workers
        last = (hi - 1) // self.chunk
        for c in range(max(self._start_line // self.chunk, last - self.workers + 1), last + 1):
            need[c % self.workers] = min(hi, (c + 1) * self.chunk)
        return need

    def _wait(self, hi: int) -> None:
        if self.workers <= 0:
            for j in range(max(self._done, self.lo(self.step)), hi):
                _write_row(self._buf, j % self.slots, self._collate([self.dataset[j]]))
            self._done = max(self._done, hi)
            return
        need = self._needed(hi)
        while True:
            with self._progress.get_lock():
                done = list(self._progress)
            if all(d >= n for d, n in zip(done, need)):
                return
            dead = [p for p in self._procs if not p.is_alive()]
            if dead:
                msg = ""
                try:
                    msg = self._errors.get(timeout=1.0)
                except Exception:  # noqa: BLE001 - no message: it died without raising (killed)
                    msg = f"replay worker {dead[0].name} exited with code {dead[0].exitcode}"
                self.close()
                raise DataError(msg)
            time.sleep(0.001)

    # ------------------------------------------------------------------ iterator protocol

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._buf is None:
            self._start()
        hi, lo = self.hi(self.step), self.lo(self.step)
        if self.workers > 0:
            self._limit.value = hi + self.ahead  # lines below it may overwrite only lines below lo
        self._wait(hi)
        rng = np.random.default_rng([self.seed, 0x7e91a7, self.step, self.stream])
        slots = rng.integers(lo, hi, size=self.batch_size) % self.slots
        buf = self._buf
        flags = np.asarray(buf["flags"][slots])
        out = {"image": np.asarray(buf["image"][slots]),
               "target": np.asarray(buf["target"][slots]),
               "prev_output_tokens": np.asarray(buf["prev_output_tokens"][slots]),
               "truncated": flags[:, 0].astype(bool), "oov_tokens": flags[:, 1].astype(np.int32),
               "empty_label": flags[:, 2].astype(bool), "bad_record": flags[:, 3].astype(bool)}
        out["target_mask"] = out["target"] != PAD
        out["valid"] = ~out["bad_record"]
        self.step += 1
        return out

    def get_state(self) -> dict:
        return {"replay": {"step": self.step, "fresh": self.fresh, "window": self.window}}

    def set_state(self, state: dict) -> None:
        r = state.get("replay") if isinstance(state, dict) else None
        if r is None:
            raise DataError("the checkpoint's data state was written without data.replay_reuse; resume with the "
                            "run's own data settings")
        if (int(r["fresh"]), int(r["window"])) != (self.fresh, self.window):
            raise DataError(f"the checkpoint drew {r['fresh']} new lines per step from a window of {r['window']}; "
                            f"this config draws {self.fresh} from {self.window} (data.replay_reuse / "
                            "data.replay_window must match the run's)")
        self.step = int(r["step"])
        if self._buf is not None:
            self._start()

    def close(self) -> None:
        if self._procs:
            self._stop.set()
            for p in self._procs:
                if p.pid is None:  # never started (its start failed)
                    continue
                p.join(timeout=5)
                if p.is_alive():
                    p.terminate()
            self._procs = []
        self._buf = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def replay_iterator(source, pcfg, tokenizer, *, reuse: float, window: int, workers: int,
                    stream: int = 0, directory: str | None = None) -> ReplayIterator:
    """A `ReplayIterator` over ``source`` prepared as the training pipeline config ``pcfg`` says."""
    from ofa_jax.data.pipeline import make_map_dataset
    from ofa_jax.preprocess import image_hw

    h, w = image_hw(pcfg.image_size)
    return ReplayIterator(make_map_dataset(source, pcfg, tokenizer), pcfg.batch_size, (h, w, 3),
                          pcfg.max_target_tokens + 1, reuse=reuse, window=window, workers=workers,
                          seed=pcfg.seed, stream=stream, directory=directory)


__all__ = ["ReplayIterator", "replay_iterator"]
