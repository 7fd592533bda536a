"""ofa-jax: OFA-OCR in JAX/Flax.

Imports are lazy so that light modules (``ofa_jax.config``, ``ofa_jax.testing``) work without JAX,
e.g. inside the PyTorch reference environment that generates test fixtures.
"""
import importlib

__version__ = "0.1.0"

_LAZY = {
    "OFAConfig": "ofa_jax.config",
    "PRESETS": "ofa_jax.config",
    "get_config": "ofa_jax.config",
    "OFA": "ofa_jax.model",
    "load_model_dir": "ofa_jax.modeldir",
    "preprocess_image": "ofa_jax.preprocess",
    "ImageError": "ofa_jax.preprocess",
    "OFATokenizer": "ofa_jax.tokenizer",
    "GenerationConfig": "ofa_jax.decoding",
    "Recognizer": "ofa_jax.recognizer",
    "PageReader": "ofa_jax.pages",
    "save_model_dir": "ofa_jax.modeldir",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ofa_jax' has no attribute {name!r}")
