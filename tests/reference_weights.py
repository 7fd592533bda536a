"""Rebuild the reference fixtures' weights (see tools/reference/make_model_fixtures.py)."""
import json
import os

import numpy as np

from ofa_jax.config import PRESETS
from ofa_jax.testing import digest, load_manifest, random_state_dict

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def load_case(case: str):
    data = dict(np.load(os.path.join(FIXTURES, f"model_{case}.npz")))
    meta = json.loads(str(data.pop("meta")))
    return data, meta


def reference_state_dict(case: str):
    """The exact ModelScope state dict (numpy) the fixture was recorded with, minus recomputed buffers."""
    data, meta = load_case(case)
    manifest = load_manifest(os.path.join(FIXTURES, f"manifest_{meta['preset']}.json"))
    params = random_state_dict(manifest, meta["seed"])
    assert digest(params) == meta["weights_digest"], "numpy RNG drifted: regenerate the fixtures"
    sd = dict(params)
    sd.update({k[len("bn/"):]: v for k, v in data.items() if k.startswith("bn/")})
    return sd, data, meta, PRESETS[meta["preset"]].replace(**meta.get("overrides", {}))


def decode_case():
    """Weights, inputs and reference beams of tools/reference/make_decode_fixtures.py."""
    data = dict(np.load(os.path.join(FIXTURES, "decode_micro.npz")))
    meta = json.loads(str(data.pop("meta")))
    manifest = load_manifest(os.path.join(FIXTURES, f"manifest_{meta['preset']}.json"))
    params = random_state_dict(manifest, meta["seed"])
    assert digest(params) == meta["weights_digest"], "numpy RNG drifted: regenerate the fixtures"
    sd = dict(params)
    sd.update({k[len("bn/"):]: v for k, v in data.items() if k.startswith("bn/")})
    # the same "peaking" as make_decode_fixtures.peak, in float32
    e = sd["encoder.embed_tokens.weight"] * np.float32(meta["embed_scale"])
    e[2] = e[2] * np.float32(meta["eos_boost"])
    e[21133:] = e[21133:] * np.float32(meta["code_rows_scale"])
    sd["encoder.embed_tokens.weight"] = e
    for k in list(sd):
        if k.startswith("decoder.layers.") and (k.endswith("fc2.weight") or k.endswith("cross_attn.out_proj.weight")):
            sd[k] = sd[k] * np.float32(meta["branch_scale"])
    for alias in ("decoder.embed_tokens.weight", "decoder.output_projection.weight"):
        sd[alias] = e
    return sd, data, meta, PRESETS[meta["preset"]].replace(**meta.get("overrides", {}))
