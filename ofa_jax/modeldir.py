"""The ofa-jax model dir: what ``tools.convert_weights`` writes and ``ofa_jax.decode`` reads.

    config.json             OFAConfig (ofa_jax.config), architecture only
    params.safetensors      variables, keyed by their Flax path ("params/encoder/layers_0/fc1/kernel",
                            "batch_stats/..."), plus "extra/<torch key>" for weights OCR does not use
                            (decoder image-code embeddings) so that export back to PyTorch is lossless
    vocab.txt               tokenizer vocab in OFA layout (4 specials + bert-base-chinese + <mask>)
    generation.json         decoding defaults (beam, max_len_b, min_len, ...), from configuration.json
    metadata.json           format version and provenance

Why safetensors and not Orbax here: a model dir is a release artefact. One flat file loads without
pickle, memory-maps, works without TensorStore, keeps bf16, and PyTorch users can read it too.
Orbax is what training checkpoints use (sharded, async, with the data-iterator state).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

import ml_dtypes  # noqa: F401  registers numpy's "bfloat16" dtype, which safetensors needs for bf16 params
import numpy as np

from ofa_jax.config import OFAConfig

FORMAT = "ofa-jax-model-dir"
FORMAT_VERSION = 1
PARAMS_FILE = "params.safetensors"
DEFAULT_GENERATION = {"beam_size": 5, "max_len_a": 0, "max_len_b": 64, "min_len": 1,
                      "no_repeat_ngram_size": 0, "len_penalty": 1.0, "normalize_scores": True,
                      "patch_image_size": 480, "prompt": "图片上的文字是什么?"}


class ModelDirError(ValueError):
    """A model dir is missing, incomplete or inconsistent (message names the file and problem)."""


@dataclasses.dataclass
class ModelDir:
    path: str
    config: OFAConfig
    variables: dict            # {"params": ..., "batch_stats": ...} nested dicts of numpy arrays
    extras: dict               # torch key -> numpy array (weights OCR does not use)
    generation: dict
    metadata: dict

    @property
    def vocab_path(self) -> str:
        return os.path.join(self.path, "vocab.txt")


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict) or hasattr(v, "items"):
            out.update(flatten(dict(v), key))
        else:
            out[key] = v
    return out


def unflatten(flat: dict[str, Any]) -> dict:
    tree: dict = {}
    for key, v in flat.items():
        node = tree
        parts = key.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return tree


def save_model_dir(path: str, config: OFAConfig, variables: dict, vocab_path: str, generation: Optional[dict] = None,
                   extras: Optional[dict] = None, dtype: Optional[str] = None, metadata: Optional[dict] = None):
    """Writes a model dir. ``variables`` may hold jax or numpy arrays (boxed or not)."""
    from safetensors.numpy import save_file

    os.makedirs(path, exist_ok=True)
    cast = {None: None, "float32": np.float32, "bfloat16": ml_dtypes.bfloat16}[dtype]
    tensors = {}
    for k, v in flatten(_unbox(variables)).items():
        a = np.asarray(v)
        if cast is not None and np.issubdtype(a.dtype, np.floating) and not k.startswith("batch_stats/"):
            a = a.astype(cast)
        tensors[k] = np.array(a, order="C")
    for k, v in (extras or {}).items():
        a = np.asarray(v)
        tensors[f"extra/{k}"] = np.array(a.astype(cast) if cast is not None else a, order="C")
    tmp = os.path.join(path, PARAMS_FILE + ".tmp")
    save_file(tensors, tmp, metadata={"format": FORMAT})
    os.replace(tmp, os.path.join(path, PARAMS_FILE))  # never leave a half-written params file
    config.save(os.path.join(path, "config.json"))
    gen = dict(DEFAULT_GENERATION, **(generation or {}))
    with open(os.path.join(path, "generation.json"), "w") as f:
        json.dump(gen, f, indent=2, ensure_ascii=False)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **(metadata or {})}
    with open(os.path.join(path, "metadata.json"), "w") as f:
        json.dump(meta, f, indent=2, ensure_ascii=False)
    if os.path.abspath(vocab_path) != os.path.abspath(os.path.join(path, "vocab.txt")):
        with open(vocab_path, "rb") as src, open(os.path.join(path, "vocab.txt"), "wb") as dst:
            dst.write(src.read())


def load_model_dir(path: str, dtype: Optional[str] = None) -> ModelDir:
    """Reads a model dir; raises ModelDirError with a one-line message naming what is wrong."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not os.path.isdir(path):
        raise ModelDirError(f"model dir not found: {path}")
    for name in ("config.json", PARAMS_FILE, "vocab.txt"):
        if not os.path.isfile(os.path.join(path, name)):
            hint = " (is this a ModelScope/PyTorch dir? convert it with `python -m tools.convert_weights`)" \
                if os.path.isfile(os.path.join(path, "pytorch_model.bin")) else ""
            raise ModelDirError(f"{path}: missing {name}{hint}")
    try:
        config = OFAConfig.load(os.path.join(path, "config.json"))
    except (ValueError, TypeError) as e:
        raise ModelDirError(f"{path}/config.json: {e}") from None
    try:
        flat = load_file(os.path.join(path, PARAMS_FILE))
    except (SafetensorError, OSError, ValueError, TypeError) as e:  # TypeError: a dtype numpy does not know
        raise ModelDirError(f"{path}/{PARAMS_FILE}: unreadable ({e})") from None
    extras = {k[len("extra/"):]: v for k, v in flat.items() if k.startswith("extra/")}
    variables = unflatten({k: v for k, v in flat.items() if not k.startswith("extra/")})
    if dtype is not None:
        cast = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}[dtype]
        variables = unflatten({k: (v.astype(cast) if k.startswith("params/") else v)
                               for k, v in flatten(variables).items()})
    gen = {**DEFAULT_GENERATION, **read_optional_json(path, "generation.json")}
    meta = read_optional_json(path, "metadata.json")
    return ModelDir(path=path, config=config, variables=variables, extras=extras, generation=gen, metadata=meta)


def read_optional_json(path: str, name: str) -> dict:
    """The JSON object in ``path/name``, {} if there is no such file; ModelDirError (one line) if it is
    unreadable or not an object."""
    p = os.path.join(path, name)
    if not os.path.isfile(p):
        return {}
    try:
        with open(p, encoding="utf-8") as f:
            loaded = json.load(f)
        if not isinstance(loaded, dict):
            raise ValueError(f"expected a JSON object, got {type(loaded).__name__}")
    except (ValueError, OSError) as e:
        raise ModelDirError(f"{p}: unreadable ({e})") from None
    return loaded


def check_variables(md: ModelDir) -> None:
    """ModelDirError (one line) unless ``params.safetensors`` holds exactly the variables, with the
    shapes, that ``config.json`` describes, and ``vocab.txt`` has the model's vocabulary size: a file
    edited by hand or swapped in from another model would otherwise fail deep inside the first forward
    pass, or decode to wrong text."""
    from ofa_jax.model import abstract_variables
    from ofa_jax.tokenizer import OFATokenizer

    try:
        n_vocab = len(OFATokenizer.from_vocab(md.vocab_path))
    except (ValueError, OSError) as e:
        raise ModelDirError(f"{md.vocab_path}: {e}") from None
    if n_vocab != md.config.vocab_size:
        raise ModelDirError(f"{md.vocab_path}: {n_vocab} tokens (with the <code_*>/<bin_*> ones) where config.json "
                            f"has vocab_size {md.config.vocab_size}: the vocab of another model?")

    want = {k: tuple(v.shape) for k, v in flatten(abstract_variables(md.config)).items()}
    have = {k: tuple(np.shape(v)) for k, v in flatten(md.variables).items()}
    missing, unexpected = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    shapes = [f"{k} {have[k]} vs {want[k]}" for k in sorted(want) if k in have and have[k] != want[k]]
    if missing or unexpected or shapes:
        c = md.config
        parts = [f"{len(x)} {what} (e.g. {x[0]})" for x, what in ((missing, "missing"), (unexpected, "unexpected"),
                                                                  (shapes, "with other shapes")) if x]
        raise ModelDirError(f"{md.path}/{PARAMS_FILE} does not match {md.path}/config.json (d_model {c.d_model}, "
                            f"{c.encoder_layers}+{c.decoder_layers} layers, {c.resnet_type}): {', '.join(parts)}")


def _unbox(tree):
    try:
        import flax.linen as nn
        return nn.meta.unbox(tree)
    except ImportError:  # pragma: no cover
        return tree
