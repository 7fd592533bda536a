"""What docs/security.md promises: we never unpickle with full pickle, and nothing we
write is a pickle."""
import ast
import os
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tools/reference/ runs only inside the reference environment, on files it wrote itself
SCANNED = ["ofa_jax", "tools/convert_weights", "bench"]
PICKLE_MAGIC = tuple(bytes([0x80, v]) for v in range(2, 6))


def _python_files():
    for top in SCANNED:
        for root, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if f.endswith(".py"):
                    yield os.path.join(root, f)


def _call_name(node: ast.Call) -> str:
    f = node.func
    parts = []
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    if isinstance(f, ast.Name):
        parts.append(f.id)
    return ".".join(reversed(parts))


def test_no_unrestricted_unpickling_in_the_code():
    bad = []
    for path in _python_files():
        tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) or isinstance(node, ast.ImportFrom):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(n and n.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "marshal", "shelve")
                       for n in names):
                    bad.append(f"{path}:{node.lineno}: imports an unpickler")
            if not isinstance(node, ast.Call):
                continue
            name = _call_name(node)
            kw = {k.arg: k.value for k in node.keywords}
            if name.endswith("torch.load"):
                ok = "weights_only" in kw and isinstance(kw["weights_only"], ast.Constant) and kw["weights_only"].value is True
                if not ok:
                    bad.append(f"{path}:{node.lineno}: torch.load without weights_only=True")
            if name.split(".")[-1] == "load" and name.split(".")[0] in ("np", "numpy") and "allow_pickle" in kw:
                v = kw["allow_pickle"]
                if not (isinstance(v, ast.Constant) and v.value is False):
                    bad.append(f"{path}:{node.lineno}: np.load with allow_pickle")
            if name in ("yaml.load", "yaml.unsafe_load"):
                bad.append(f"{path}:{node.lineno}: {name}")
    assert not bad, bad


def _assert_no_pickles(folder):
    seen = 0
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            seen += 1
            with open(p, "rb") as fh:
                head = fh.read(2)
            assert head not in PICKLE_MAGIC, f"{p} starts like a pickle"
            if zipfile.is_zipfile(p):  # a torch.save archive holds data.pkl
                with zipfile.ZipFile(p) as z:
                    assert not any(n.endswith(".pkl") for n in z.namelist()), p
    assert seen


def test_model_dirs_and_checkpoints_hold_no_pickles(tmp_path):
    from ofa_jax.checkpointing import Checkpointer
    from ofa_jax.config import PRESETS
    from ofa_jax.modeldir import load_model_dir, save_model_dir
    from tools.convert_weights.convert import BUNDLED_VOCAB

    variables = {"params": {"layer": {"kernel": np.ones((3, 4), np.float32)}}, "batch_stats": {"mean": np.zeros(4)}}
    save_model_dir(str(tmp_path / "model"), PRESETS["micro"], variables, BUNDLED_VOCAB,
                   extras={"decoder.code_layernorm_embedding.weight": np.ones(4, np.float32)})
    _assert_no_pickles(tmp_path / "model")
    assert load_model_dir(str(tmp_path / "model")).variables["params"]["layer"]["kernel"].shape == (3, 4)
    c = Checkpointer(str(tmp_path / "ckpt"), keep_best=0, async_save=False)
    c.save(1, {"w": jnp.ones((8, 8)), "step": jnp.int32(1)}, {"grain": {"pos": 3}})
    c.close()
    _assert_no_pickles(tmp_path / "ckpt")


def test_refuses_a_pickle_that_runs_code(tmp_path):
    """A PyTorch file whose pickle would call os.system is refused before anything runs."""
    torch = pytest.importorskip("torch")
    from tools.convert_weights import ConversionError
    from tools.convert_weights.convert import torch_load

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": {"w": torch.zeros(1)}, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ConversionError, match="refusing to unpickle"):
        torch_load(str(tmp_path / "evil.pt"))
    assert not marker.exists()
