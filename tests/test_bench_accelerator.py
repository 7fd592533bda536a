"""bench/accelerator.py runs end to end (here on the CPU, micro preset, tiny sizes): the command a GPU/TPU
machine runs unattended must not be first tried there."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # ~2-3 minutes on 2 cores: several compilations
def test_accelerator_benchmark_runs_on_cpu():
    p = subprocess.run([sys.executable, "bench/accelerator.py", "--preset", "micro", "--batches", "2",
                        "--max_len", "4", "--train_batch", "2", "--shipped_batch", "8", "--seconds", "0.5",
                        "--no-append"],
                       cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    table = p.stdout.split("| what | measured |", 1)[1]
    rows = [r for r in table.splitlines() if r.startswith("| ")]
    assert any(r.startswith("| decode micro bf16 beam 5, batch 2") for r in rows)
    assert sum(r.startswith("| shipped model") for r in rows) == 2
    assert any(r.startswith("| train step micro bf16, batch 2") for r in rows)
    assert all("lines/s" in r or "images/s" in r for r in rows)
