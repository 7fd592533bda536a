"""Helpers shared by the benchmarks (stdlib only: also imported inside the reference venv)."""
import json
import os
import resource
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def peak_rss_gb() -> float:
    """This process's peak resident memory (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window (Linux: ``5`` to /proc/self/clear_refs resets VmHWM), so that a
    run's peak can be read without the compiler's transient peak before it. False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def window_peak_rss_gb() -> float:
    """Peak RSS since the last `reset_peak_rss` (VmHWM), or the process's whole-life peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024 ** 2
    except OSError:
        pass
    return peak_rss_gb()


def release_freed_host_memory() -> None:
    """glibc ``malloc_trim(0)``: give the heap pages freed by XLA's compiler (~0.2 GB for the forward,
    ~1 GB for the train step) back to the OS before the first run allocates its buffers; without it
    they stay in this process's RSS next to the run's temporaries. No-op where glibc is absent."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def run_worker(python: str, script: str, argv, what: str) -> dict:
    """Runs ``python script argv...`` (its own process, so peak RSS is its own); returns the JSON it
    prints last. ``what`` names the run in the error message."""
    out = subprocess.run([python, os.path.abspath(script), *map(str, argv)], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
