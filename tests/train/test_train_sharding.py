"""The same 5 training steps on 1 device, on data=8 and on data=2 x fsdp=2 x tensor=2 (fake CPU devices)."""
import jax
import numpy as np
import pytest

from helpers import tiny_config, train_losses
from ofa_jax import train


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    wd = tmp_path_factory.mktemp("single")
    train.train_and_evaluate(tiny_config(), str(wd))
    return train_losses(wd)


@pytest.mark.parametrize("mesh", [pytest.param({"data": 8}, marks=pytest.mark.slow), {"data": 2, "fsdp": 2, "tensor": 2}],
                         ids=["data8", "d2f2t2"])  # data8: slow (~2 min); d2f2t2 shards all three axes
def test_mesh_losses_match_single_device(tmp_path, single, mesh):
    if jax.device_count() < 8:
        pytest.skip("needs 8 (fake) devices")
    cfg = tiny_config(**{"mesh.num_devices": 8, **{f"mesh.{k}": v for k, v in mesh.items()}})
    train.train_and_evaluate(cfg, str(tmp_path))
    losses = train_losses(tmp_path)
    assert len(losses) == len(single) == 5
    # Within 1e-5 relative (losses ~9-11): sharded reductions sum in another order than one device's,
    # and XLA:CPU's own reduction loops (ofa_jax/xla_options.py) round differently from YNNPACK's;
    # measured 2.2e-6 relative at worst.
    np.testing.assert_allclose(losses, single, rtol=1e-5, atol=0)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("accum_loop", ["host", pytest.param("scan", marks=pytest.mark.slow)])  # scan: ~25 s more
def test_grad_accumulation_matches_full_batch(tmp_path, accum_loop):
    """Without dropout (micro-batches draw their own masks), 2 micro-batches of 4 == one batch of 8,
    looped from the host (the CPU default: one jitted micro-batch step called twice) or with a scan
    (the accelerators' default)."""
    runs = []
    for accum, loop in ((1, "auto"), (2, accum_loop)):  # unroll == host: the next test
        wd = tmp_path / f"accum{accum}{loop}"
        train.train_and_evaluate(tiny_config(grad_accum_steps=accum, grad_accum_loop=loop, total_steps=2,
                                             **{"model.overrides": {"dropout": 0.0}}), str(wd))
        runs.append(train_losses(wd))
    for r in runs[1:]:
        np.testing.assert_allclose(r, runs[0], atol=1e-5, rtol=0)


@pytest.mark.slow  # two accumulation runs (~2.5 min); test_grad_accumulation_matches_full_batch stays
def test_host_accumulation_equals_one_program_with_dropout(tmp_path):
    """The host loop draws micro-batch i's dropout masks as the one-program step does, so with dropout
    on the two give the same losses; also sharded over 4 (fake) devices."""
    runs = {}
    meshes = [("unroll", {}), ("host", {"grad_accum_per_call": 1}), ("host", {"grad_accum_per_call": 2})]
    if jax.device_count() >= 4:  # micro-batches of 4 over data=2 x tensor=2
        meshes.append(("host", {"mesh.num_devices": 4, "mesh.data": 2, "mesh.tensor": 2}))
    for i, (loop, mesh) in enumerate(meshes):
        wd = tmp_path / f"{loop}{i}"
        train.train_and_evaluate(tiny_config(grad_accum_steps=2, grad_accum_loop=loop, total_steps=3, **mesh), str(wd))
        runs[i] = train_losses(wd)
    assert len(runs[0]) == 3 and runs[0][-1] != runs[0][0]
    for i in range(1, len(meshes)):
        np.testing.assert_allclose(runs[i], runs[0], atol=1e-5, rtol=0)


def test_grad_accum_per_call_must_divide_the_micro_batches(tmp_path):
    with pytest.raises(ValueError, match="grad_accum_per_call=3 must divide grad_accum_steps=2"):
        train.train_and_evaluate(tiny_config(grad_accum_steps=2, grad_accum_loop="host", grad_accum_per_call=3,
                                             total_steps=1), str(tmp_path))
