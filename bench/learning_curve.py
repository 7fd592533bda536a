"""A training run's learning curve as a Markdown table, from its ``metrics.jsonl``.

    python bench/learning_curve.py runs/zh_small [--every 500]

Wall time is the training time summed over logging intervals (each interval's images / its measured
images/s: compilation after a start or resume included, validation excluded), so a run resumed many
times adds up correctly.
"""
import argparse
import json
import os


def curve(workdir: str, every: int) -> str:
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        recs = [json.loads(line) for line in f if line.strip()]
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    batch, log_every = int(cfg["batch_size"]), int(cfg["log"]["every"])
    rows, wall, prev = {}, 0.0, 0
    for r in recs:
        step = r["step"]
        if "train/images_per_s" in r:
            # steps in this logging interval: log_every, fewer right after a resume (replayed steps count:
            # that compute was spent)
            n = step - prev if 0 < step - prev <= log_every else min(step, log_every)
            wall += n * batch / max(r["train/images_per_s"], 1e-9)
            prev = step
            rows.setdefault(step, {}).update(loss=r["train/loss"], nll=r["train/nll_loss"], wall=wall)
        if "val/acc" in r:
            rows.setdefault(step, {}).update(acc=r["val/acc"], ned=r["val/ned"])
    out = ["| step | lines seen | train wall time | loss | nll | val ACC | val NED |",
           "|---|---|---|---|---|---|---|"]
    last = max(rows) if rows else 0
    for step in sorted(rows):
        r = rows[step]
        if step % every and "acc" not in r and step != last:
            continue
        wall_s = "" if "wall" not in r else (f"{r['wall'] / 3600:.2f} h" if r["wall"] >= 3600
                                             else f"{r['wall'] / 60:.1f} min")
        loss = f"{r['loss']:.3f}" if "loss" in r else ""
        nll = f"{r['nll']:.3f}" if "nll" in r else ""
        acc = f"{100 * r['acc']:.1f}%" if "acc" in r else ""
        ned = f"{r['ned']:.3f}" if "ned" in r else ""
        out.append(f"| {step} | {step * batch:,} | {wall_s} | {loss} | {nll} | {acc} | {ned} |")
    return "\n".join(out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workdir")
    ap.add_argument("--every", type=int, default=500, help="one row per this many steps (and every validation)")
    a = ap.parse_args()
    print(curve(a.workdir, a.every))
