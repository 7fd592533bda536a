"""``configs/ocr_zh_small_lines_gpu.py`` (run.sh's default) shrunk for a dry run of ``run.sh`` on a small CPU before the real run
(README.md beside this file): batch 16, one rendering worker, a 256-line replay window, validation on
32 lines."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs"))
import ocr_zh_small_lines_gpu  # noqa: E402


def get_config():
    c = ocr_zh_small_lines_gpu.get_config()
    c.batch_size = 16
    c.data.num_workers = 1
    c.data.replay_window = 256
    c.optim.warmup_steps = 5
    c.ckpt.every = 50
    c.eval.every = 50
    c.eval.batch_size = 16
    c.eval.max_examples = 32
    c.log.every = 5
    return c
