"""python -m ofa_jax.aot: the train step and decoding compiled for a TPU topology on this CPU host.

Runs the command as the README writes it, in a fresh process. Needs libtpu (CI installs it; see
.ci/run); without it the tool's own one-line error is checked instead.
"""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_LIBTPU = importlib.util.find_spec("libtpu") is not None
needs_libtpu = pytest.mark.skipif(not HAVE_LIBTPU, reason='needs libtpu: pip install "jax[tpu]"')


def _aot(*args, timeout=900):
    env = dict(os.environ)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # compile for real: the tool reports compile time
    return subprocess.run([sys.executable, "-m", "ofa_jax.aot", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@needs_libtpu
def test_micro_train_step_and_decode_compile_for_v5e_2x2():
    r = _aot("--topology", "v5e:2x2", "--config", "configs/ocr_cpu_synthetic.py", "--config.mesh.data=2",
             "--config.mesh.fsdp=2", "--config.batch_size=8", "--config.model.dtype=bfloat16",
             "--decode", "micro", "--image_size", "96", "--batch", "8", "--beam", "2", "--max_len", "8", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    train, dec = [json.loads(line) for line in r.stdout.splitlines()]
    assert train["program"] == "train step" and dec["program"] == "decode"
    for rep in (train, dec):
        assert rep["chips"] == 4 and rep["chip"]["kind"] == "TPU v5 lite"
        m = rep["memory"]
        assert m["total"] == m["arguments"] + m["outputs"] - m["aliased"] + m["temporaries"]
        assert 0 < m["total"] < rep["chip"]["hbm"] and rep["fits"]
        assert rep["xla_flops"] > 0 and rep["bytes_accessed"] > 0 and rep["model_flops"] > 0
        assert 0 < rep["hbm_bytes"] < rep["bytes_accessed"]
        assert rep["compile_s"] > 0
        roof = rep["roofline"]
        assert roof["floor_s"] == pytest.approx(max(roof["compute_s"], roof["memory_s"]))
        assert 0 < roof["mfu_bound"] <= 1
    assert train["mesh"] == {"data": 2, "fsdp": 2, "tensor": 1}
    # Per chip the arguments hold float32 parameters and two Adam moments, each sharded over fsdp=2
    # or replicated, plus the batch: between half and all of 12 bytes per parameter.
    import jax
    import numpy as np
    from ofa_jax.config import get_config
    from ofa_jax.model import abstract_variables

    n = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(abstract_variables(get_config("micro"))["params"]))
    assert 12 * n / 2 <= train["memory"]["arguments"] <= 12 * n * 1.02 + 8 * 96 * 96 * 3 + 2**20
    # Donation: the new state reuses the old state's buffers.
    assert train["memory"]["aliased"] > 0.9 * (train["memory"]["arguments"] - 8 * 96 * 96 * 3 / 4)


@pytest.mark.slow  # a TPU compile (~1.5 min); the kernel's values and gradients: tests/test_fused_attention.py
@needs_libtpu
def test_fused_attention_compiles_as_a_mosaic_kernel_per_device():
    """model.fused_attention: the Pallas kernel inside a shard_map over data x fsdp (XLA cannot partition
    a Mosaic call); the train step compiles for the slice and the kernel is in it."""
    r = _aot("--topology", "v5e:2x2", "--config", "configs/ocr_cpu_synthetic.py", "--config.mesh.data=2",
             "--config.mesh.fsdp=2", "--config.batch_size=8", "--config.model.dtype=bfloat16",
             "--config.model.fused_attention=True", "--json", "--top", "100000")
    assert r.returncode == 0, r.stderr[-3000:]
    train = json.loads(r.stdout)
    assert train["what"].endswith("fused attention") and train["fits"]
    # the forward kernel and the backward one, in each of micro's 2 encoder layers
    kernels = [op["source"].split("/")[-2] for op in train["heaviest_ops"]
               if op["op"] == "custom-call" and op["source"].endswith("/pallas_call")]
    assert sorted(kernels) == ["ofa_attention_bwd"] * 2 + ["ofa_attention_fwd"] * 2, kernels


def test_fused_attention_off_tpu_is_a_config_error():
    import runpy

    from ofa_jax import train

    cfg = runpy.run_path(os.path.join(ROOT, "configs", "ocr_cpu_synthetic.py"))["get_config"]()
    with cfg.unlocked():
        cfg.model.fused_attention = True
    with pytest.raises(train.ConfigError, match="TPUs only"):
        train.build(cfg, 100)


@needs_libtpu
def test_compile_profile_says_where_the_compile_time_goes():
    """--compile_profile: libtpu's stage times, the kernels its backend took longest on (each with the
    JAX op it came from) and its top-level program apart (parsed from libtpu's own log; the pinned
    libtpu writes these lines)."""
    r = _aot("--topology", "v5e:2x2", "--decode", "micro", "--image_size", "96", "--batch", "8", "--beam", "2",
             "--max_len", "8", "--json", "--compile_profile")
    assert r.returncode == 0, r.stderr[-3000:]
    p = json.loads(r.stdout)["compile_profile"]
    assert {"hlo_passes", "backend_passes", "end_to_end"} <= set(p["stages"]), p["stages"]
    assert 0 < p["stages"]["hlo_passes"] < p["stages"]["end_to_end"]
    assert p["kernels"] > 10 and 0 < p["schedule_s"] <= p["stages"]["end_to_end"]
    slowest = p["slowest_kernels"]
    assert slowest == sorted(slowest, key=lambda k: -k["backend_s"]) and slowest[0]["llo_instructions"] > 0
    assert all(0 <= k["schedule_s"] <= k["backend_s"] + 1e-3 for k in slowest), slowest
    assert slowest[0]["backend_s"] <= p["stages"]["backend_passes"] + 1e-3
    assert any(k["source"].startswith("jit(beam_search)/") for k in slowest), slowest
    # The top-level program is reported apart: it compiles beside the kernels and waits for them.
    assert all(k["kernel"] != "<no-hlo-instruction>" for k in slowest), slowest
    assert p["threads"] >= 1 and slowest[0]["backend_s"] <= p["kernel_s"] + 1e-3
    tl = p["top_level"]
    assert tl["llo_instructions"] > 0 and 0 <= tl["after_last_kernel_s"] <= tl["backend_s"] + 1e-3, tl


@needs_libtpu
def test_bad_topology_and_mesh_are_one_line_errors():
    r = _aot("--topology", "v5e:3x3", "--decode", "micro", timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: topology 'v5e:3x3'")
    assert "Traceback" not in r.stderr
    r = _aot("--topology", "v5e:2x2", "--decode", "micro", "--decode_mesh", "data=3", timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: mesh"), r.stderr


def test_cpu_compiler_options_do_not_reach_other_platforms():
    from ofa_jax.xla_options import compiler_options

    assert compiler_options("tpu") == {} and compiler_options("gpu") == {}


def test_hbm_traffic_counts_fusion_boundaries_not_their_insides():
    """Thirty elementwise ops over a 4 MB array, fused: the count follows the fusions' operands and
    results (XLA:CPU makes three fusions here, and its own cost analysis counts the same way), not
    the 30 x 8 MB the ops inside them would touch one by one."""
    import jax
    import jax.numpy as jnp

    from ofa_jax.aot import heaviest_ops

    def f(x):
        for i in range(10):
            x = jnp.sin(x) * (i + 1.0) + x
        return x.sum()

    compiled = jax.jit(f).lower(jax.ShapeDtypeStruct((1024, 1024), jnp.float32)).compile()
    rows = heaviest_ops(compiled, None)
    total = sum(r["bytes"] for r in rows)
    assert total == pytest.approx(compiled.cost_analysis()["bytes accessed"], rel=0.05), rows
    assert 4 * 2**20 <= total <= 10 * 4 * 2**20
    assert rows[0]["bytes"] >= 4 * 2**20 and rows[0]["source"].startswith("jit(f)/")


def test_hbm_traffic_of_a_scan_counts_every_iteration():
    """A scan over 6 layers moves 6 times what one iteration moves (XLA's cost analysis counts the
    loop body once; the roofline must not)."""
    import jax
    import jax.numpy as jnp

    from ofa_jax.aot import heaviest_ops

    def body(x, w):
        return jnp.tanh(x @ w), None

    def one(x, w0):
        return body(x, w0)[0]

    def six(x, w):
        return jax.lax.scan(body, x, w)[0]

    x = jax.ShapeDtypeStruct((512, 512), jnp.float32)
    w = jax.ShapeDtypeStruct((6, 512, 512), jnp.float32)
    total = lambda f, w: sum(r["bytes"] for r in heaviest_ops(jax.jit(f).lower(x, w).compile(), None))
    w0 = jax.ShapeDtypeStruct((512, 512), jnp.float32)
    assert 5 * total(one, w0) <= total(six, w) <= 12 * total(one, w0)  # the loop adds copies of its carry


def test_tlp_breakdown_charges_each_stretch_to_the_launch_after_it(tmp_path):
    """bench/tlp_breakdown.py on a hand-written dump: the instructions before the first launch are the
    entry, each stretch since the previous launch (the launch included) goes to the kernel it launches,
    what follows the last launch to exit."""
    from bench import tlp_breakdown
    (tmp_path / "1-TLP-hlo.txt").write_text(
        "HloModule jit_step\n"
        "  %fusion.1 = f32[4]{0} fusion(%p), metadata={op_name=\"jit(step)/jvp(OFA)/encoder/embed_images/conv1\"}\n"
        "  %fusion.2 = f32[4]{0} fusion(%q), metadata={op_name=\"jit(step)/transpose(jvp(OFA))/decoder/layers_0/fc1\"}\n"
        "  %all-gather.3 = f32[8]{0} all-gather(%r), metadata={op_name=\"jit(step)/jvp(OFA)/decoder/layers_1/fc2\"}\n"
        "ENTRY %main (param.1: (f32[4], f32[4], s32[])) -> (f32[4]) {\n")
    (tmp_path / "1-TLP-00-original.txt").write_text(
        "$region0:\n  #allocation0 [shape = 'u32[]']\n"
        "  %1 = sld [smem:[#allocation0]]\n  %2 = sadd.s32 %1, 1\n"
        "  %3 = call [#allocation1] /* %fusion.1 = fusion(%p) */\n"
        "  // a comment\n  %4 = sld [smem:[#allocation0]]\n  %5 = inlined_call /* %fusion.2 = fusion(%q) */\n"
        "  %6 = call [#allocation2] /* %all-gather.3 = all-gather(%r) */\n  %7 = vst\n  %8 = vst\n")
    rows, total, n_args = tlp_breakdown.breakdown(str(tmp_path))
    assert total == 8 and n_args == 3
    assert {p: (n, ins) for p, n, ins in rows} == {
        "entry (before the first launch)": (0, 2), "forward: ResNet": (1, 1),
        "backward: decoder layers": (1, 2), "collectives (unfused)": (1, 1), "exit (after the last launch)": (0, 2)}
