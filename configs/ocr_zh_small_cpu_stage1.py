"""Stage 1 of the shipped model's CPU recipe: read glyphs before reading lines.

    python -m ofa_jax.train --config configs/ocr_zh_small_cpu_stage1.py --workdir runs/zh_small_s1
    python -m ofa_jax.train --config configs/ocr_zh_small_cpu_stage1.py --workdir runs/zh_small_s1 --export runs/zh_small_s1/export
    # then stage 2 (configs/ocr_zh_small_cpu.py) with --config.init.model_dir=runs/zh_small_s1/export

Why: trained from scratch on 2-12-character lines, the model first learns the line *language* (loss
~4.2, 0% ACC after 100k lines on this CPU, bench/RESULTS.md) and only later finds where each glyph
is. Lines of 1-4 characters leave no language to learn and make the alignment trivial, so every step
teaches glyphs. They also fit a 32x128 input (2x8 ResNet grid): 2.5x the lines per second of 32x320
(79 vs 31 lines/s in a batch-32 step on this CPU) at about the same characters per second. Same model
as stage 2 (the image position table does not depend on the input size), same fonts and held-out
split.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ocr_zh_small_cpu import get_config as stage2  # noqa: E402

SHORT = "render:mixed,min_chars=1,max_chars=4,heldout_fonts=2,degraded_fraction=0.3"


def get_config():
    c = stage2()
    c.data.train = SHORT + ",n=10000000,fixed_text_fraction=0.1"
    c.data.val = SHORT
    c.data.image_size = 128
    c.data.max_target_tokens = 8
    c.data.num_workers = 1          # render in a second process while the step runs
    c.batch_size = 32
    c.total_steps = 8000
    c.optim.lr = 1e-3
    c.optim.end_lr = 1e-4
    c.optim.warmup_steps = 500
    c.ckpt.every = 500
    c.eval.every = 2000
    c.eval.max_examples = 256
    c.eval.max_len = 8
    return c
