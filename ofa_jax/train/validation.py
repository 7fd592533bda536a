"""Validation during training: decode the validation split with the current parameters -> ACC/NED."""
from __future__ import annotations

import jax
import numpy as np

from ofa_jax import partitioning
from ofa_jax.preprocess import NORMALIZE_LUT
from ofa_jax.train.runconfig import input_size


def evaluate(generate, variables, source, cfg, tokenizer, mesh, src_tokens) -> dict:
    """Decode the validation split (every process reads all of it) -> ACC/NED (+ examples)."""
    from ofa_jax.data.metrics import LineMetrics
    from ofa_jax.data.pipeline import PipelineConfig, make_iterator

    e = cfg.eval
    n_dev = mesh.shape["data"] * mesh.shape["fsdp"]
    bs = max(n_dev, -(-e.batch_size // n_dev) * n_dev)
    if e.max_examples and len(source) > e.max_examples:
        from ofa_jax.data.sources import ListSource
        source = ListSource([source[i] for i in range(e.max_examples)])
    it = make_iterator(source, PipelineConfig(batch_size=bs, image_size=input_size(cfg),
                                              max_target_tokens=cfg.data.max_target_tokens, train=False),
                       tokenizer)
    metrics = LineMetrics(e.normalization)
    examples = []
    lut = np.asarray(NORMALIZE_LUT)
    for batch in it:
        images = lut[batch["image"]]
        arrays = replicated_batch({"image": images, "src": np.broadcast_to(src_tokens, (bs, src_tokens.shape[-1]))},
                                  mesh, ("image", "src"))
        out = generate(variables, arrays["image"], arrays["src"])
        tokens, lengths = to_host(out.tokens), to_host(out.lengths)
        for i in np.flatnonzero(batch["valid"]):
            pred = tokenizer.decode_ocr(tokens[i, 0, :int(lengths[i, 0])].tolist())
            gt = str(batch["text"][i])
            metrics.update_one(pred, gt)
            if len(examples) < 3:
                examples.append((gt, pred))
    r = metrics.result()
    return {"acc": r["acc"], "ned": r["ned"], "n": r["n"], "examples": examples}


def replicated_batch(full: dict, mesh, keys) -> dict:
    """The same full batch on every process -> global arrays split over (data, fsdp)."""
    out = {}
    for k in keys:
        a = full[k]
        out[k] = jax.make_array_from_callback(a.shape, partitioning.batch_sharding(mesh, a.ndim), lambda idx, a=a: a[idx])
    return out


def to_host(x) -> np.ndarray:
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
