"""The shipped small model, continued on lines that look like real printed text: 2-40 characters at 32x672.

    python -m ofa_jax.train --config configs/ocr_zh_small_lines.py --workdir runs/zh_lines   # resumes when rerun
    python -m ofa_jax.train --config configs/ocr_zh_small_lines.py --workdir runs/zh_lines --export DIR
    python bench/indep_eval.py --model DIR                # the independent dev set (bench/RESULTS_indep.md)

What changes from ``ocr_zh_small_cpu`` (the shipped model's recipe), and why:

* Starts from the shipped model (``init.model_dir``): same architecture, vocabulary and prompt. It
  reads 2-12-character lines; beyond 12 characters it collapses (it never saw one, nor a target
  longer than 16 tokens), and the independent set (``bench/data/indep``) measures that.
* Input 32x672: the widest image the model's position buckets allow (``image_bucket_size`` 42 x
  stride 16), so a 40-character line keeps ~16 px per character. Measured with RapidOCR's recogniser
  as a legibility probe on the independent dev set's clean lines, fitted into 32 x W first
  (``bench/indep_eval.py --fit``; bench/RESULTS_indep.md): 21-40-character lines stay readable at
  W=672 and lose most at 320. Short lines are unchanged (they fill the 32 px height and are padded).
  The exported ``generation.json`` records ``patch_image_size [32, 672]`` and ``max_len_b`` 48, so
  ``python -m ofa_jax.decode`` preprocesses and decodes such a model the same way.
* Text: the ``prose`` source (printed running text: punctuation where real text has it, line ends
  too; dates, times, prices, percentages, codes, phone numbers and Latin words in the running text;
  `ofa_jax.data.prose`) and random GB2312 strings (every common hanzi equally often), half each, plus
  5% HSK sentences; lengths uniform in 2-40 (``max_chars``), targets up to 48 tokens.
* Rendering: ``render_style=real`` (coloured ink and backgrounds, underline/strike-through) and 40%
  degraded lines (blur, rotation <= 3 deg, perspective, low contrast, noise, gradient/textured
  backgrounds, uneven lighting, JPEG quality 30-60).
* Continued, not from scratch: learning rate 3e-4 after 500 warmup steps (the shipped run ended its
  cosine at 1e-5; a full 7e-4 restart would first undo what it knows).
* Held out from every training line: the evaluation list and the independent set's texts
  (`ofa_jax.data.holdout`: equal, or containing one of >= 6 characters).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ocr_zh_small_cpu import get_config as shipped  # noqa: E402

LINES = ("render:mixed,min_chars=2,max_chars=40,heldout_fonts=2,degraded_fraction=0.4,render_style=real,"
         "text_sources=prose+gb2312")
IMAGE_WIDTH = 672  # image_bucket_size 42 x stride 16: the widest input the shipped model's buckets cover
MAX_TOKENS = 48


def shipped_model_dir() -> str:
    from ofa_jax.recognizer import BUNDLED_MODEL

    return BUNDLED_MODEL


def get_config():
    c = shipped()
    c.init.model_dir = shipped_model_dir()
    c.data.train = LINES + ",n=10000000,fixed_text_fraction=0.05"
    c.data.val = LINES
    c.data.image_height = 32
    c.data.image_size = IMAGE_WIDTH
    c.data.max_target_tokens = MAX_TOKENS
    c.data.augment = True
    c.batch_size = 32
    c.total_steps = 60000
    c.optim.lr = 3e-4
    c.optim.end_lr = 1e-5
    c.optim.warmup_steps = 500
    c.eval.max_len = MAX_TOKENS
    return c
