"""Helpers shared by the benchmarks (stdlib only: also imported inside the reference venv)."""
import json
import os
import resource
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def peak_rss_gb() -> float:
    """This process's peak resident memory (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def run_worker(python: str, script: str, argv, what: str) -> dict:
    """Runs ``python script argv...`` (its own process, so peak RSS is its own); returns the JSON it
    prints last. ``what`` names the run in the error message."""
    out = subprocess.run([python, os.path.abspath(script), *map(str, argv)], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
