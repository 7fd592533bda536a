"""Deterministic random OFA weights in the ModelScope state-dict layout (numpy only, no JAX/torch).

Used twice: by ``tools/reference/make_model_fixtures.py`` inside the PyTorch reference environment
(to fill a ModelScope ``OFAModel`` before recording golden outputs) and by the tests (to rebuild the
very same weights from the committed key manifest). Golden fixtures therefore stay small: they
store inputs, outputs and calibrated BatchNorm statistics, never the weights themselves.

Values are drawn per key from ``np.random.default_rng([seed, crc32(key)])`` so they do not depend
on key order, and every parameter is non-trivial (LayerNorm scales != 1, relative-position tables
!= 0, head scales != 1) so that each code path shows up in the outputs.
"""
from __future__ import annotations

import hashlib
import json
import re
import zlib

import numpy as np

# Keys that are buffers, not parameters (recomputed, or calibrated and stored in the fixture).
BUFFER_RE = re.compile(r"(rp_bucket|image_position_idx|num_batches_tracked|running_mean|running_var|\.version)$")
# Keys that alias encoder.embed_tokens.weight in a ModelScope state dict.
ALIASES = {"decoder.embed_tokens.weight": "encoder.embed_tokens.weight",
           "decoder.output_projection.weight": "encoder.embed_tokens.weight"}
_EMBEDDINGS = re.compile(r"(embed_tokens|embed_positions|embed_image_positions|type_embedding)\.weight$")


def random_param(key: str, shape, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    n = rng.standard_normal(tuple(shape), dtype=np.float32)
    shape = tuple(shape)
    if key.endswith("c_attn"):
        return 1.0 + 0.1 * n
    if len(shape) == 1:
        return (1.0 + 0.1 * n) if key.endswith(".weight") else 0.05 * n
    if len(shape) == 4:  # conv OIHW, kaiming fan_out
        return n * np.float32(np.sqrt(2.0 / (shape[0] * shape[2] * shape[3])))
    if "rel_pos_table" in key:
        return 0.5 * n
    if _EMBEDDINGS.search(key):
        return n * np.float32(shape[1] ** -0.5)
    return n * np.float32(shape[1] ** -0.5)  # nn.Linear (out, in)


def random_state_dict(manifest: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Parameters (not buffers) for every key of a manifest {key: [shape, dtype]}."""
    out = {}
    for key, (shape, _dtype) in manifest.items():
        if BUFFER_RE.search(key) or key in ALIASES:
            continue
        out[key] = random_param(key, shape, seed)
    for alias, target in ALIASES.items():
        if alias in manifest:
            out[alias] = out[target]
    return out


def digest(arrays: dict[str, np.ndarray]) -> str:
    """Order-independent sha256 over names and bytes (checks the generator is reproducible here)."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        h.update(k.encode())
        h.update(np.ascontiguousarray(arrays[k]).tobytes())
    return h.hexdigest()


def pixels_to_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 fixture pixels -> float32 in [-1, 1] (identical arithmetic on both sides)."""
    return pixels.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def load_manifest(path: str) -> dict:
    with open(path) as f:
        return json.load(f)
