"""ofa-jax: OFA-OCR in JAX/Flax.

Imports are lazy so that light modules (``ofa_jax.config``, ``ofa_jax.testing``) work without JAX,
e.g. inside the PyTorch reference environment that generates test fixtures.
"""
import importlib
import os

__version__ = "0.1.0"

# Keep XLA:CPU's YNNPACK library fusions to matrix products and convolutions in every program of this
# process, jax's one-op eager programs included (ours pass the same as compiler options:
# ofa_jax/xla_options.py). jaxlib 0.10.2-0.11's YNNPACK reduction fusions crash on a worker thread for
# some shapes (jax-ml/jax#39257, #40412: SIGSEGV or SIGABRT, or a hang), so the process dies with a
# Python stack that points at whatever the main thread was doing. Only where XLA_FLAGS says nothing of
# it, for the jaxlib versions that know the flag, and only before jax starts its CPU backend (later it
# has no effect). Set XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=<types> to choose otherwise.
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
YNN_TYPES = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"


def _restrict_ynn_fusions() -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    if YNN_FLAG in flags:
        return
    try:
        from importlib.metadata import version

        jaxlib = tuple(int(x) for x in version("jaxlib").split(".")[:3])
    except Exception:  # no jaxlib (the reference environment) or an unusual version string
        return
    if (0, 10, 1) <= jaxlib < (0, 12, 0):
        os.environ["XLA_FLAGS"] = f"{flags} {YNN_FLAG}={YNN_TYPES}".strip()


_restrict_ynn_fusions()

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
