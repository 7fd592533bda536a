"""Every config in configs/ loads, and its data specs parse (a typo would otherwise surface only when a
run starts, possibly on an accelerator host far from here)."""
import glob
import importlib.util
import os

import pytest

from ofa_jax.data.builders import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py")) if not p.endswith("common.py"))
CONFIGS.append(os.path.join(ROOT, "tools", "offline_gpu_run", "dryrun_config.py"))  # the offline run's CPU dry run
CONFIGS.append(os.path.join(ROOT, "ofa_jax", "train_defaults.py"))  # installed ofa-jax's (the notebooks')


def _load(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config()


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_loads_and_render_specs_parse(path):
    cfg = _load(path)
    assert cfg.batch_size > 0 and cfg.optim.lr > 0
    for spec in (cfg.data.train, cfg.data.val):
        if spec.startswith("render:"):
            parts = [p for p in spec[len("render:"):].split(",") if p and "=" in p]
            keys = [p for p in parts if not p.startswith(("n=", "n_eval="))]
            synthetic.config_overrides(keys, synthetic.OcrSyntheticZh.BUILDER_CONFIGS[0])


def test_gpu_config_is_the_cpu_model():
    """The shipped model's two configs differ in batch/steps/workers only, not in model or data."""
    cpu = _load(os.path.join(ROOT, "configs", "ocr_zh_small_cpu.py"))
    gpu = _load(os.path.join(ROOT, "configs", "ocr_zh_small_gpu.py"))
    assert gpu.model.to_dict() == cpu.model.to_dict()
    for k in ("train", "val", "image_size", "image_height", "max_target_tokens", "augment"):
        assert gpu.data[k] == cpu.data[k], k
    assert "fixed_text_fraction=0.1" in cpu.data.train and "fixed_text_fraction" not in cpu.data.val
    assert "text_sources=gb2312+words" in cpu.data.train and "text_sources" not in cpu.data.val


def test_lines_gpu_config_is_the_lines_cpu_config():
    """The 2-40-character configs differ in batch/steps/workers only, not in model, start or data."""
    cpu = _load(os.path.join(ROOT, "configs", "ocr_zh_small_lines.py"))
    gpu = _load(os.path.join(ROOT, "configs", "ocr_zh_small_lines_gpu.py"))
    assert gpu.model.to_dict() == cpu.model.to_dict() and gpu.init.to_dict() == cpu.init.to_dict()
    assert gpu.optim.to_dict() == cpu.optim.to_dict()
    for k in ("train", "val", "image_size", "image_height", "max_target_tokens", "augment"):
        assert gpu.data[k] == cpu.data[k], k
    assert gpu.batch_size > cpu.batch_size and gpu.data.replay_reuse > 0


def test_dryrun_config_is_the_gpu_model_shrunk():
    """The CPU dry run of tools/offline_gpu_run exercises run.sh's default config's model and data, smaller."""
    gpu = _load(os.path.join(ROOT, "configs", "ocr_zh_small_lines_gpu.py"))
    dry = _load(os.path.join(ROOT, "tools", "offline_gpu_run", "dryrun_config.py"))
    assert dry.model.to_dict() == gpu.model.to_dict() and dry.data.train == gpu.data.train
    assert dry.batch_size < gpu.batch_size and dry.data.num_workers == 1 and dry.data.replay_reuse > 0
