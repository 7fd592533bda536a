"""ofa-jax: OFA-OCR in JAX/Flax.

Imports are lazy so that light modules (``ofa_jax.config``, ``ofa_jax.testing``) work without JAX,
e.g. inside the PyTorch reference environment that generates test fixtures.
"""
import importlib
import os

__version__ = "0.1.0"

# XLA:CPU defaults for every program of this process, jax's one-op eager programs included; set before
# jax starts its CPU backend (later they have no effect), only where XLA_FLAGS does not name the flag,
# and only for the jaxlib versions that know it (an unknown flag in XLA_FLAGS is fatal). Name a flag
# in XLA_FLAGS to choose otherwise.
#  * A collective's rendezvous (several CPU devices, e.g. --xla_force_host_platform_device_count=8)
#    aborts the process (SIGABRT, "Termination timeout ... Exiting to ensure a consistent program
#    state") when a device's thread is over 60 s late (warning at 20 s, then 40 s more). On a loaded
#    2-core host a device thread can be that late and nothing is wrong: wait 20 minutes instead.
#  * YNNPACK library fusions only for matrix products and convolutions, as our own programs ask
#    (ofa_jax/xla_options.py, where the speed reason is): jaxlib 0.10.2's YNNPACK reduction fusions
#    also crash for some shapes (jax-ml/jax#39257, #40412).
YNN_TYPES = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
XLA_CPU_DEFAULTS = {"--xla_cpu_collective_call_terminate_timeout_seconds": "1200",
                    "--xla_cpu_experimental_ynn_fusion_type": YNN_TYPES}


def _xla_cpu_defaults() -> None:
    try:
        from importlib.metadata import version

        jaxlib = tuple(int(x) for x in version("jaxlib").split(".")[:3])
    except Exception:  # no jaxlib (the reference environment) or an unusual version string
        return
    if not (0, 10, 1) <= jaxlib < (0, 12, 0):
        return
    flags = os.environ.get("XLA_FLAGS", "")
    extra = [f"{k}={v}" for k, v in XLA_CPU_DEFAULTS.items() if k not in flags]
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()


_xla_cpu_defaults()

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
