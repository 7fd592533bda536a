"""Defaults shared by every training config (``configs/*.py`` start from ``base()`` and change fields).

The OFA-OCR fine-tuning recipe (ModelScope's OFA trainer settings: AdamW, label smoothing 0.1, gradient
clipping, frozen BatchNorm). This file is a config file too, for an installed ofa-jax without ``configs/``:

    python -m ofa_jax.train --config "$(python -c 'import ofa_jax.train_defaults as d; print(d.__file__)')" \\
        --workdir RUN --config.init.model_dir=DIR --config.data.train=tfds:NAME [--config.key=value ...]
"""
import ml_collections


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.prompt = "图片上的文字是什么?"

    c.model = ml_collections.ConfigDict()
    c.model.preset = "base"          # ignored when init.model_dir is set (the dir's config.json wins)
    c.model.overrides = {}            # OFAConfig fields, e.g. {"dropout": 0.1, "encoder_drop_path_rate": 0.1}
    c.model.dtype = "float32"         # compute dtype; "bfloat16" keeps float32 parameters and optimizer state
    c.model.train_bn = False          # False: BatchNorm uses its running statistics (OFA fine-tuning default)
    c.model.remat = "none"            # gradient checkpointing: "none", "layers" (transformer layers), "full" (+ ResNet blocks)
    c.model.scan = False              # True: layer stacks as nn.scan (compile time flat in depth; for TPU/GPU).
                                      # Checkpoints of such a run hold stacked parameters; exports do not.
    c.model.fused_attention = False   # True (TPU only): encoder self-attention as fused Pallas kernels.

    c.init = ml_collections.ConfigDict()
    c.init.model_dir = ""             # ofa-jax model dir to start from ("" = random init of model.preset)

    c.data = ml_collections.ConfigDict()
    c.data.train = ""                 # tfds:NAME/CONFIG, lmdb:PATH, folder:PATH or synth:...
    c.data.train_split = "train"
    c.data.val = ""                   # "" = no validation
    c.data.val_split = "val"
    c.data.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir (None: TFDS default)
    c.data.image_size = 480            # square side (the released checkpoints' 480), or the width ...
    c.data.image_height = 0            # ... of HxW inputs when > 0 (line-shaped models of our own)
    c.data.max_target_tokens = 64
    c.data.spell_alnum = False        # True: targets spell letter/digit runs one token per character
                                      # (ours, not the reference's; OFATokenizer.spell_alnum says why)
    c.data.augment = True
    c.data.augment_geometry = False   # True: glyph aspect, margin and stroke-weight jitter as well (data/pipeline.py)
    c.data.num_workers = 0
    c.data.bad_records = "skip"       # unreadable records: "skip" (counted, named, no loss) or "error"
    c.data.replay_reuse = 0.0         # > 0: draw batches from a growing buffer of prepared lines, each line
                                      # used this many times on average (input-bound accelerators; data/replay.py)
    c.data.replay_window = 100_000    # lines the batches are drawn from (memory: lines x H x W x 3 bytes)
    c.data.replay_dir = ""            # where the buffer's files live ("" = the system temp dir)
    c.data.shards_per_process = 1     # >1 only to reproduce a multi-process data split in one process

    c.batch_size = 8                  # global, over all processes and devices
    c.grad_accum_steps = 1            # the batch is split into this many sequential micro-batches
    c.grad_accum_loop = "auto"        # "host", "scan", "unroll" or "auto" (host on CPU, scan elsewhere; train.accum_loop)
    c.grad_accum_per_call = 0         # "host" loop: micro-batches unrolled per jitted call; 0 = 2 if it divides grad_accum_steps, else 1
    c.compilation_cache = "auto"      # persistent XLA cache, so a resumed run skips compiling: "auto" = $OFA_JAX_CACHE_DIR
                                      # or ~/.cache/ofa_jax/jax_cache ($JAX_COMPILATION_CACHE_DIR wins), a path, or "" (off)
    c.total_steps = 0                 # 0: derived from num_epochs and the training set size
    c.num_epochs = 0.0

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 5e-5
    c.optim.end_lr = 1e-7
    c.optim.power = 1.0
    c.optim.warmup_ratio = 0.01
    c.optim.warmup_steps = ml_collections.config_dict.placeholder(int)  # overrides warmup_ratio when set
    c.optim.weight_decay = 0.01
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.clip_norm = 1.0
    c.optim.freeze = ""                # regex on parameter paths ("encoder/embed_images/conv1/kernel"):
                                      # those keep their values (no gradient, update, decay or Adam state);
                                      # "^encoder/" trains only the decoder and the shared token embedding

    c.loss = ml_collections.ConfigDict()
    c.loss.label_smoothing = 0.1
    c.loss.rdrop = False
    c.loss.rdrop_alpha = 1.0

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    c.mesh.num_devices = 0            # 0: all devices

    c.ckpt = ml_collections.ConfigDict()
    c.ckpt.every = 1000               # steps between checkpoints (<= 0: only at the end and on preemption)
    c.ckpt.keep = 3
    c.ckpt.keep_best = 1
    c.ckpt.best_metric = "acc"
    c.ckpt.best_mode = "max"
    c.ckpt.async_save = True

    c.eval = ml_collections.ConfigDict()
    c.eval.every = 1000               # steps between validations (<= 0: only at the end)
    c.eval.batch_size = 8
    c.eval.beam_size = 5
    c.eval.max_len = 64
    c.eval.max_examples = 0           # 0: the whole validation split
    c.eval.normalization = "benchmark"

    c.log = ml_collections.ConfigDict()
    c.log.every = 50
    c.log.tensorboard = True

    c.nan_policy = "stop"             # "stop": end the run with an error; "skip": skip the step, go on
    c.debug = ml_collections.ConfigDict()
    c.debug.sigkill_at_step = 0       # tests only: SIGKILL the process after this step
    c.debug.sigkill_during_save_at_step = 0  # tests only: SIGKILL while this step's (async) save is written
    c.debug.nan_loss_at_steps = ()    # tests only: make the loss (and gradients) NaN at these steps
    c.debug.inf_grad_at_steps = ()    # tests only: make the gradients infinite at these steps
    return c


def get_config() -> ml_collections.ConfigDict:
    return base()
