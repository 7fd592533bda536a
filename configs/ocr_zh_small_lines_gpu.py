"""``ocr_zh_small_lines`` (the shipped model continued on 2-40-character lines at 32x672) for one GPU or
TPU host: a batch of 256, rendering spread over worker processes, replay of rendered lines.

    python -m ofa_jax.train --config configs/ocr_zh_small_lines_gpu.py --workdir runs/zh_lines_gpu \
        --config.total_steps=N [--config.model.dtype=bfloat16]
    TRAIN_S=3600 bash tools/offline_gpu_run/run.sh      # an air-gapped host: trains for a fixed time, exports

What differs from ``ocr_zh_small_gpu`` (the shipped model's GPU recipe), and why: the inputs are
2.1x wider, so a replay window of 100,000 lines holds 6.5 GB of images (the 32x320 recipe's 200,000
held 6.1 GB); the learning rate continues a trained model (3e-4 after 500 warmup steps, as in the CPU
config) instead of starting one. ``total_steps`` is the length of the learning-rate decay: choose it
from the time you have (``tools/offline_gpu_run/run.sh`` does, from measured step and rendering rates).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ocr_zh_small_lines  # noqa: E402

LINES = ocr_zh_small_lines.LINES


def get_config():
    c = ocr_zh_small_lines.get_config()
    c.batch_size = 256
    c.total_steps = 5000
    c.data.num_workers = max(1, (os.cpu_count() or 2) - 1)
    c.data.replay_reuse = 4.0
    c.data.replay_window = 100_000
    c.mesh.data = -1
    c.ckpt.every = 500
    c.eval.every = 1000
    c.eval.batch_size = 256
    c.log.every = 100
    return c
