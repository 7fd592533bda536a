"""The shipped model's config for one GPU: ``ocr_zh_small_cpu`` (same model, data and line-shaped
inputs) with a batch of 256 and rendering spread over worker processes.

    python -m ofa_jax.train --config configs/ocr_zh_small_gpu.py --workdir runs/zh_small_gpu \
        --config.total_steps=N
    python -m ofa_jax.train --config configs/ocr_zh_small_gpu.py --workdir runs/zh_small_gpu \
        --config.total_steps=N --export DIR --export_dtype bfloat16

Rendering is the bottleneck on an accelerator (about 150 lines/s per worker on a 16-vCPU H200 host,
decode and augmentation included): ``data.num_workers`` is the host's cores minus one, and the replay
buffer (``data.replay_reuse``, `ofa_jax.data.replay`) lets the accelerator draw each rendered line
several times (4 on average here) from a window of the last 200,000 lines (6.1 GB of 32x320 images in
the temp dir) instead of waiting for new ones. Set the factor to step rate / rendering rate
(``tools/offline_gpu_run/probe.py`` measures both); 0 turns replay off. ``total_steps`` sets the
length of the linear learning-rate decay, so choose it from the time you have: steps = lines/s x
seconds / 256 (``tools/offline_gpu_run/run.sh`` does). The runs that trained the shipped model: its
model card, ``ofa_jax/models/ofa-ocr-zh-small/README.md``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ocr_zh_small_cpu  # noqa: E402

LINES = ocr_zh_small_cpu.LINES


def get_config():
    c = ocr_zh_small_cpu.get_config()
    c.batch_size = 256
    c.total_steps = 5000
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 500
    c.data.num_workers = max(1, (os.cpu_count() or 2) - 1)
    c.data.replay_reuse = 4.0
    c.data.replay_window = 200_000
    c.mesh.data = -1
    c.ckpt.every = 1000
    c.eval.every = 1000
    c.eval.batch_size = 256
    c.log.every = 100
    return c
