"""Single characters at 32x64: an experiment, no longer a stage of the shipped model's recipe.

Measured (bench/RESULTS.md, "Stage 1" and "Second GPU run"): it learns the glyphs (80.9% of single
characters in held-out fonts after 20,000 steps of 32), but reads 0% of the same glyphs in the line
models' 32x320 input (it never saw image positions past the fourth of 20 feature columns, nor
padding), and a GPU line run started from it ended worse than one from random weights.

    python -m ofa_jax.train --config configs/ocr_zh_small_cpu_stage1.py --workdir runs/zh_small_s1
    python -m ofa_jax.train --config configs/ocr_zh_small_cpu_stage1.py --workdir runs/zh_small_s1 \
        --export runs/zh_small_s1/export --export_which last

Why it was tried (measured on this CPU, bench/RESULTS.md "Why the CPU runs stalled"): from scratch, this model
learns to read *one* glyph quickly (62 Latin/digit classes: 97% after 400 steps of 32) but lines of
several glyphs very slowly: the decoder must find where the k-th glyph is, and OFA gives it positions
only through attention biases, so for 400-3,000 steps it reads nothing (1-4-character lines: 2% ACC;
2-12-character Chinese lines: 0%). Started from a single-glyph model, the same 1-4-character task
reached 26% after 400 steps (vs 2% after 800 from scratch). Single characters also fit a 32x64 input
(a 2x4 ResNet grid): a fifth of the pixels of the lines' 32x320. Same model, fonts and held-out
split as the line configs (the image position table does not depend on the input size, but only the
positions a model saw are trained).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ocr_zh_small_cpu import get_config as stage2  # noqa: E402

GLYPHS = "render:mixed,min_chars=1,max_chars=1,heldout_fonts=2,degraded_fraction=0.3"


def get_config():
    c = stage2()
    c.data.train = GLYPHS + ",n=10000000,fixed_text_fraction=0"
    c.data.val = GLYPHS
    c.data.image_size = 64
    c.data.max_target_tokens = 4
    c.data.num_workers = 1          # render in a second process while the step runs
    c.total_steps = 20000
    c.optim.lr = 1e-3
    c.optim.end_lr = 1e-4
    c.optim.warmup_steps = 500
    c.eval.every = 2000
    c.eval.max_len = 4
    return c
