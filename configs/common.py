"""Defaults shared by every training config: a config file starts from ``base()`` and changes fields.

``base()`` lives in the package (``ofa_jax/train_defaults.py``), so that an installed ofa-jax without this
folder (``pip install ofa-jax``, the notebooks on Colab) trains from the same defaults.
"""
from ofa_jax.train_defaults import base  # noqa: F401
