"""What a run reports: console lines, ``WORKDIR/metrics.jsonl`` and TensorBoard events."""
from __future__ import annotations

import json
import os
import sys


class MetricWriter:
    """Console + metrics.jsonl + TensorBoard (tensorboardX, if installed); process 0 only."""

    def __init__(self, workdir: str, enabled: bool, tensorboard: bool = True):
        self.enabled = enabled
        self.tb = None
        self.jsonl = None
        if not enabled:
            return
        self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                print("ofa-jax train: tensorboardX not installed; no TensorBoard events (pip install tensorboardX)",
                      file=sys.stderr)
            else:
                self.tb = SummaryWriter(os.path.join(workdir, "tb"))

    def write(self, step: int, scalars: dict, prefix: str = ""):
        if not self.enabled:
            return
        rec = {"step": int(step), **{f"{prefix}{k}": v for k, v in scalars.items()}}
        self.jsonl.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for k, v in scalars.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(f"{prefix}{k}", v, int(step))
            self.tb.flush()

    def log(self, msg: str):
        if self.enabled:
            print(msg, flush=True)

    def close(self):
        if self.jsonl:
            self.jsonl.close()
        if self.tb is not None:
            self.tb.close()


def fmt_time(s: float) -> str:
    """Seconds as ``H:MM:SS``."""
    s = int(max(0, s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
