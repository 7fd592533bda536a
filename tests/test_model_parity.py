"""Parity with ModelScope's PyTorch OFA on golden fixtures (tools/reference/make_model_fixtures.py).

Two checks per case. In float64 both implementations must agree to ~1e-12: any difference there is
a real implementation difference. In float32 they agree to rounding noise; the reference's own
float32 result differs from its float64 result by about as much (printed by ``-s``).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ofa_jax.model import OFA
from ofa_jax.testing import pixels_to_float
from tools.convert_weights import state_dict_to_variables

from reference_weights import reference_state_dict

CASES = ["micro", "micro_entangle", "tiny_wide", "tiny_480"]
TOL = 1e-4       # the float32 bar for encoder output and logits
TOL_F64 = 1e-9   # float64: exact up to summation order


@pytest.fixture(scope="module", params=CASES)
def case(request):
    sd, data, meta, cfg = reference_state_dict(request.param)
    variables, _ = state_dict_to_variables(sd, cfg)
    return request.param, cfg, variables, data


def _maxabs(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _run(cfg, variables, data, dtype):
    model = OFA(cfg, dtype=dtype)
    v = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype) if a.dtype == np.float32 else jnp.asarray(a), variables)
    images = jnp.asarray(pixels_to_float(data["pixels"]), dtype)
    feats = model.apply(v, images, method=OFA.resnet_features)
    enc = jax.jit(lambda v, i, s: model.apply(v, i, s, method=OFA.encode))(v, images, data["src_tokens"])
    logits = jax.jit(lambda v, p, e: model.apply(v, p, e, method=OFA.decode))(v, data["prev_tokens"], enc)
    return feats, enc.hidden, logits


def test_float32(case):
    name, cfg, variables, data = case
    feats, enc, logits = _run(cfg, variables, data, jnp.float32)
    enc_err, logit_err = _maxabs(enc, data["encoder_out"]), _maxabs(logits, data["logits"])
    print(f"\n{name} fp32: encoder max abs err {enc_err:.2e}, logits {logit_err:.2e}")
    assert logits.shape == data["logits"].shape
    assert enc_err < TOL
    assert logit_err < TOL
    if "resnet" in data:  # deep conv stacks amplify rounding: judge relative to the feature scale
        rel = _maxabs(feats, data["resnet"]) / float(np.abs(data["resnet"]).max())
        print(f"{name} fp32: resnet max abs err / max |feature| = {rel:.2e}")
        assert rel < 5e-5


def test_float64_exact(case):
    name, cfg, variables, data = case
    if "f64/encoder_out" not in data:
        pytest.skip("no float64 reference stored for this case")
    with jax.enable_x64(True):
        feats, enc, logits = _run(cfg, variables, data, jnp.float64)
        errs = {"encoder": _maxabs(enc, data["f64/encoder_out"]),
                "logits": _maxabs(logits[..., :data["f64/logits_head"].shape[-1]], data["f64/logits_head"])}
        if "f64/resnet" in data:
            errs["resnet"] = _maxabs(feats, data["f64/resnet"])
    print(f"\n{name} fp64: " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
    assert all(v < TOL_F64 for v in errs.values()), errs
