"""Check the fonts, measure the input and train-step rates, write the run's step count and replay factor.

    python tools/offline_gpu_run/probe.py CONFIG SECONDS BATCHES OUT_FILE   (run by run.sh)

OUT_FILE gets ``STEPS REUSE``: ``REUSE`` = train-step rate / rendering rate (each rendered line drawn that
many times on average, `ofa_jax.data.replay`; 1 when rendering keeps up; at most ``MAX_REUSE``, default 8,
or ``REUSE`` from the environment), ``STEPS`` = what the slower of the two allows in SECONDS less the
measured compile and first-batch times (the training run pays both again), times ``RATE_MARGIN``
(default 0.8: two runs on one GPU sized without it reached 74% and 80% of their steps in the time; the
renderers share the host with the trainer and validation), so that the learning rate decays over the
time the run has.
``STEP_RATE`` (lines/s) and ``COMPILE_S`` from an earlier probe on the same kind of host skip timing the
step, and with it one compilation. ``FONTS_LIST`` (a file of font file names, one per line: what
prepare.sh packed) must equal the CJK fonts found here, since their order decides the held-out split;
``CHECK_FONTS=0`` skips that check.
"""
import importlib.util
import os
import sys
import time


def say(*a):
    print(*a, file=sys.stderr, flush=True)


def step_rate(cfg, n_steps=20):
    """(lines/s of the config's train step alone (random batch of its shape, one device program),
    seconds its first call took (compilation))."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from ofa_jax import train
    from ofa_jax.preprocess import NORMALIZE_LUT, image_hw
    from ofa_jax.tokenizer import OFATokenizer

    cfg = cfg.copy_and_resolve_references()
    cfg.total_steps = 1000
    s = train.build(cfg, None)
    state = train.initial_state(cfg, s, lambda m: None)
    h, w = image_hw(train.input_size(cfg))
    b, t = cfg.batch_size, cfg.data.max_target_tokens + 1
    rng = np.random.default_rng(0)
    target = rng.integers(4, 21000, (b, t)).astype(np.int32)
    target[:, -1] = 2
    prev = np.concatenate([np.zeros((b, 1), np.int32), target[:, :-1]], axis=1)
    keys = ("image", "target", "prev_output_tokens", "target_mask")
    batch = train.global_batch({"image": rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8), "target": target,
                                "prev_output_tokens": prev, "target_mask": target != 1}, s.mesh, keys)
    src = np.asarray(OFATokenizer.default().encode_prompt(cfg.prompt), np.int32)[None]
    step = jax.jit(train.make_train_step(s.model, s.tx, cfg, src, jnp.asarray(NORMALIZE_LUT)), donate_argnums=(0,))
    key = jax.random.PRNGKey(0)
    t0 = time.time()
    state, m = step(state, batch, key)
    jax.block_until_ready(m)
    compile_s = time.time() - t0
    say(f"train step compiled and ran once in {compile_s:.1f}s")
    t0 = time.time()
    for _ in range(n_steps):
        state, m = step(state, batch, key)
    jax.block_until_ready(m)
    return n_steps * b / (time.time() - t0), compile_s


def main():
    config, budget_s, batches, out = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    spec = importlib.util.spec_from_file_location("c", config)
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); cfg = m.get_config()
    cfg.model.dtype = os.environ.get("DTYPE", cfg.model.dtype)  # run.sh trains in this compute dtype
    from ofa_jax import train
    from ofa_jax.data import render
    from ofa_jax.tokenizer import OFATokenizer
    fonts = [render.font_key(f) for f in render.find_cjk_fonts()]
    say("fonts", fonts)
    if os.environ.get("FONTS_LIST") and os.environ.get("CHECK_FONTS", "1") != "0":
        want = [n for n in open(os.environ["FONTS_LIST"], encoding="utf-8").read().splitlines() if n]
        if fonts != want:
            sys.exit(f"the CJK fonts found here are not the packed ones (remove the others or set CHECK_FONTS=0):\n"
                     f"  found  {fonts}\n  packed {want}")
    say("workers", cfg.data.num_workers, "batch", cfg.batch_size)
    src = train.load_config_source(cfg, "train")
    it = train.ShardedIterator(src, cfg, OFATokenizer.default())
    t = time.time(); next(it); first_s = time.time() - t; say(f"first batch {first_s:.1f}s")
    for _ in range(2 * cfg.data.num_workers + 1): next(it)
    t = time.time()
    for _ in range(batches): b = next(it)
    rate_in = batches * cfg.batch_size / (time.time() - t)
    say(f"input rate {rate_in:.0f} lines/s; image batch {b['image'].shape}")
    import psutil
    for c in psutil.Process().children(recursive=True):
        c.kill()
    if os.environ.get("STEP_RATE"):  # measured before on this kind of machine: skip a compilation (~60 s)
        rate_step, compile_s = float(os.environ["STEP_RATE"]), float(os.environ.get("COMPILE_S", 60))
        say(f"train step rate {rate_step:.0f} lines/s (STEP_RATE), compilation {compile_s:.0f}s (COMPILE_S)")
    else:
        rate_step, compile_s = step_rate(cfg)
        say(f"train step rate {rate_step:.0f} lines/s (batch {cfg.batch_size})")
    reuse = float(os.environ.get("REUSE") or min(float(os.environ.get("MAX_REUSE", 8)), max(1.0, rate_step / rate_in)))
    reuse = round(reuse, 1)
    rate = min(rate_step, rate_in * reuse)
    # A run trains slower than the probe predicts (its renderers share the host with the trainer and
    # validation); a schedule sized on the prediction would end before the learning rate has decayed.
    margin = float(os.environ.get("RATE_MARGIN", 0.8))
    train_s = max(0.0, budget_s - compile_s - first_s)
    steps = max(int(os.environ.get("MIN_STEPS", 200)), int(margin * rate * train_s / cfg.batch_size))
    say(f"replay reuse {reuse} -> ~{rate:.0f} lines/s, {steps} steps in {train_s:.0f}s "
        f"({budget_s:.0f}s less compilation and the first batch; x{margin} RATE_MARGIN)")
    with open(out, "w") as f:
        f.write(f"{steps} {reuse}\n")
    os._exit(0)


if __name__ == '__main__':
    main()
