"""Check the fonts, measure the training input rate, write total_steps for the time budget.

    python tools/offline_gpu_run/probe.py SECONDS BATCHES OUT_FILE   (run by run.sh)
"""
import importlib.util, os, sys, time


def main():
    budget_s, batches = float(sys.argv[1]), int(sys.argv[2])
    spec = importlib.util.spec_from_file_location("c", "configs/ocr_zh_small_gpu.py")
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); cfg = m.get_config()
    from ofa_jax import train
    from ofa_jax.data import render
    from ofa_jax.tokenizer import OFATokenizer
    fonts = [render.font_key(f) for f in render.find_cjk_fonts()]
    want = ['NotoSansCJK-Bold.ttc', 'NotoSansCJK-Regular.ttc', 'NotoSerifCJK-Bold.ttc', 'NotoSerifCJK-Regular.ttc',
            'gbsn00lp.ttf', 'gkai00mp.ttf', 'ukai.ttc', 'uming.ttc', 'wqy-microhei.ttc', 'wqy-zenhei.ttc']
    print("fonts", fonts, file=sys.stderr)
    assert fonts == want, fonts
    print("workers", cfg.data.num_workers, "batch", cfg.batch_size, file=sys.stderr)
    src = train.load_config_source(cfg, "train")
    it = train.ShardedIterator(src, cfg, OFATokenizer.default())
    t = time.time(); next(it); print(f"first batch {time.time()-t:.1f}s", file=sys.stderr)
    for _ in range(2 * cfg.data.num_workers + 1): next(it)
    t = time.time()
    for _ in range(batches): b = next(it)
    rate = batches * cfg.batch_size / (time.time() - t)
    print(f"input rate {rate:.0f} lines/s; image batch {b['image'].shape}", file=sys.stderr)
    with open(sys.argv[3], "w") as f:
        f.write(str(max(int(os.environ.get("MIN_STEPS", 200)), int(rate * budget_s / cfg.batch_size))))
    import psutil
    for c in psutil.Process().children(recursive=True):
        c.kill()
    os._exit(0)


if __name__ == '__main__':
    main()
