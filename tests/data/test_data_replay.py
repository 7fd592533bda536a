"""Replay buffer: batches depend only on the step (not on workers or timing), rows are pipeline
elements from the step's window, exact resume, clear errors."""

import numpy as np
import pytest

from ocr_data_helpers import CharTokenizer, FailingAt, assert_batches_equal, sample_records, take
from ofa_jax.data import pipeline as P
from ofa_jax.data.replay import ReplayIterator
from ofa_jax.data.report import DataError
from ofa_jax.data.sources import ListSource

SIZE = 64


def dataset(n=23):
    src = ListSource([{"id": str(i), "image": img, "text": t} for i, (img, t) in enumerate(sample_records(n))])
    cfg = P.PipelineConfig(batch_size=4, image_size=SIZE, max_target_tokens=8, seed=3)
    return P.make_map_dataset(src, cfg, CharTokenizer())


def replay(ds=None, **kw):
    args = dict(reuse=2, window=8, workers=0, seed=5, chunk=2, ahead=4)
    args.update(kw)
    return ReplayIterator(ds if ds is not None else dataset(), 4, (SIZE, SIZE, 3), 9, **args)


def test_rows_are_pipeline_elements_from_the_steps_window():
    ds = dataset()
    it = replay(ds)
    rows = P._Collate(100, 9, pad_batch=False)([ds[j] for j in range(40)])
    seen = set()
    for step in range(12):
        lo, hi = it.lo(step), it.hi(step)
        b = next(it)
        assert set(b) == {"image", "target", "prev_output_tokens", "target_mask", "truncated", "oov_tokens",
                          "empty_label", "bad_record", "valid"}
        assert b["image"].shape == (4, SIZE, SIZE, 3) and b["image"].dtype == np.uint8
        for r in range(4):
            match = [j for j in range(lo, hi) if np.array_equal(rows["image"][j], b["image"][r])
                     and np.array_equal(rows["target"][j], b["target"][r])]
            assert match, f"step {step} row {r} is no element of its window [{lo}, {hi})"
            np.testing.assert_array_equal(b["prev_output_tokens"][r], rows["prev_output_tokens"][match[0]])
            seen.add(match[0])
        np.testing.assert_array_equal(b["target_mask"], b["target"] != P.PAD)
    # 2 new lines per step (batch 4, reuse 2): step 11's window is [18, 26)
    assert (it.hi(11), it.lo(11)) == (26, 18)
    assert len(seen) > 12  # draws spread over the growing window, not one batch repeated


def test_worker_processes_give_the_inline_batches():
    a = take(replay(workers=0), 15)   # 8-line window in a 12-slot ring: wraps several times
    b = take(replay(workers=2), 15)
    assert_batches_equal(a, b)
    c = take(replay(workers=0, seed=6), 15)
    assert any(not np.array_equal(x["image"], y["image"]) for x, y in zip(a, c))


def test_resume_from_state_is_exact():
    it = replay(workers=2)
    take(it, 6)
    state = it.get_state()
    rest = take(it, 6)
    it.close()
    again = replay(workers=2)
    again.set_state(state)
    assert_batches_equal(take(again, 6), rest)
    fresh = replay(workers=0)
    fresh.set_state(state)
    assert_batches_equal(take(fresh, 6), rest)


def test_mismatched_state_and_bad_settings_are_clear_errors():
    it = replay()
    with pytest.raises(DataError, match="window of 8.*draws 1 from 8"):
        replay(reuse=4).set_state(it.get_state())
    with pytest.raises(DataError, match="without data.replay_reuse"):
        it.set_state({"shards": [{}]})
    with pytest.raises(DataError, match="reuse must be >= 1"):
        replay(reuse=0.5)
    with pytest.raises(DataError, match="must hold at least one batch"):
        replay(window=3)


def test_a_failing_worker_is_one_error_line():
    it = replay(FailingAt(dataset(), 9), workers=2)
    with pytest.raises(DataError, match=r"^replay worker \d: RuntimeError: boom at line 9$"):
        take(it, 20)


class _Env:
    """Element = the worker's JAX_PLATFORMS (picklable: a module-level class)."""

    def __len__(self):
        return 10 ** 6

    def __getitem__(self, j):
        import os

        platforms = os.environ.get("JAX_PLATFORMS", "")
        return {"image": np.zeros((SIZE, SIZE, 3), np.uint8), "target": np.array([len(platforms)], np.int32),
                "truncated": False, "oov_tokens": 0, "empty_label": False, "bad_record": False}


def test_workers_keep_jax_on_the_cpu(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")  # what a GPU host may have set
    it = replay(_Env(), workers=1)
    b = next(it)
    it.close()
    assert set(b["target"][:, 0]) == {len("cpu")}
    import os

    assert os.environ["JAX_PLATFORMS"] == "cuda,cpu"


def test_a_failing_worker_prints_no_traceback(capfd):
    it = replay(FailingAt(dataset(), 3), workers=1)
    with pytest.raises(DataError):
        take(it, 10)
    assert "Traceback" not in capfd.readouterr().err


class _Unpicklable:
    """A dataset the spawned workers cannot receive."""

    def __init__(self):
        self.fn = lambda j: j

    def __len__(self):
        return 10

    def __getitem__(self, j):
        raise AssertionError("never read")


def test_workers_that_cannot_start_are_one_error_line(capfd):
    it = replay(_Unpicklable(), workers=2)
    with pytest.raises(DataError, match=r"^replay workers could not start: \w+Error: .*lambda"):
        next(it)
    it.close()  # nothing left to join or remove
    assert it._procs == [] and it._dir is None
    assert "Traceback" not in capfd.readouterr().err
