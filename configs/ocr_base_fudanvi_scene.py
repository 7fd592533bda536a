"""OFA-OCR fine-tuning recipe: the base model on FudanVI scene lines (ModelScope's OFA trainer settings).

    python -m ofa_jax.data.build ocr_fudanvi_zh/scene --manual_dir FUDAN_LMDBS
    python -m tools.convert_weights MODELSCOPE_DIR models/ofa_ocr_base   # or any ofa-jax model dir
    python -m ofa_jax.train --config configs/ocr_base_fudanvi_scene.py --workdir runs/base_scene \\
        --config.init.model_dir=models/ofa_ocr_base

Recipe (ModelScope AdjustLabelSmoothedCrossEntropyCriterion + build_optimizer + polynomial_decay):
AdamW lr 5e-5, weight decay 0.01 on all parameters, betas (0.9, 0.999), eps 1e-8; linear warmup over
1% of the steps, then polynomial decay (power 1) to 1e-7; gradient clipping at global norm 1.0;
label smoothing 0.1 over non-pad target tokens; 480x480 inputs; BatchNorm frozen. Dropout /
drop-path rates are those of the init model's config.json unless ``model.overrides`` says otherwise.
The global batch (here 32 lines) and epoch count are ours: pick them for your hardware.

On TPU/GPU: ``--config.model.dtype=bfloat16``; on TPU also ``--config.model.fused_attention=True``.
For a v5e-16 slice (``--config.mesh.data=4 --config.mesh.fsdp=4``, 8 lines per chip:
``--config.batch_size=128``) ``python -m ofa_jax.aot --topology v5e:4x4`` puts that step at 5.5 GiB
per chip and a roofline MFU bound of 77% (unrolled layers, no remat, fused attention: the best of
the settings compared in bench/RESULTS.md, section "TPU"; 46% without fused attention);
``--config.model.scan=True`` compiles in about half the time (5.0 GiB, 61%);
``--config.model.remat=layers`` trades compute for memory. Check your own slice with the same command.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import base  # noqa: E402


def get_config():
    c = base()
    c.model.preset = "base"
    c.init.model_dir = ""  # set --config.init.model_dir=DIR (a converted OFA-OCR base checkpoint)
    c.data.train = "tfds:ocr_fudanvi_zh/scene"
    c.data.val = "tfds:ocr_fudanvi_zh/scene"
    c.data.image_size = 480
    c.data.max_target_tokens = 64
    c.batch_size = 32
    c.num_epochs = 1.0              # 509,164 lines / 32 = 15,912 steps per epoch
    c.optim.lr = 5e-5
    c.optim.end_lr = 1e-7
    c.optim.warmup_ratio = 0.01
    c.optim.weight_decay = 0.01
    c.optim.clip_norm = 1.0
    c.loss.label_smoothing = 0.1
    c.ckpt.every = 2000
    c.eval.every = 2000
    c.eval.max_examples = 2000      # a fixed 2,000-line slice of val for periodic checks
    c.eval.beam_size = 5
    c.log.every = 50
    return c
