"""What ``pip install`` puts into site-packages: the ``ofa_jax`` package (with its assets and the
shipped model) and nothing else. ``tools/`` runs from a clone's root (``python -m tools.convert_weights``);
installed it would be a top-level package named ``tools``, shadowing or shadowed by any other."""
import os
import tomllib

import setuptools

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_only_ofa_jax_is_installed():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        tool = tomllib.load(f)["tool"]["setuptools"]
    find = tool["packages"]["find"]
    finder = setuptools.find_namespace_packages if find.get("namespaces", True) else setuptools.find_packages
    packages = finder(where=os.path.join(ROOT, find.get("where", ["."])[0]), include=find.get("include", ["*"]),
                      exclude=find.get("exclude", ()))
    assert {"ofa_jax", "ofa_jax.data", "ofa_jax.data.builders"} <= set(packages)
    assert [p for p in packages if p.split(".")[0] != "ofa_jax"] == []
    assert "models/*/*" in tool["package-data"]["ofa_jax"]  # the shipped model goes with it


def test_the_shipped_model_card_goes_with_the_model():
    """The model card (README.md in the model dir) is package data too: an installed model says what it is."""
    import fnmatch

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        patterns = tomllib.load(f)["tool"]["setuptools"]["package-data"]["ofa_jax"]
    card = "models/ofa-ocr-zh-small/README.md"
    assert os.path.isfile(os.path.join(ROOT, "ofa_jax", card))
    assert any(fnmatch.fnmatch(card, p) for p in patterns)
