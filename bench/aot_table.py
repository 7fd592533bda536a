"""The TPU table: presets x topologies x meshes, each the real train step compiled by `python -m ofa_jax.aot`.

    python bench/aot_table.py                 # every row not yet in bench/data/aot/, then the table
    python bench/aot_table.py --rows tiny-v5e16-data --table   # one row; --table: only print

Each row is one `ofa_jax.aot --json` run in a fresh process (libtpu, no TPU needed); its JSON is kept in
``bench/data/aot/<row>.json`` (with the command, date, host cores and libtpu version), so the table is
rebuilt without recompiling and an interrupted sweep resumes. A row that does not fit is kept too
(aot exits 1 and says how much memory the compiler wanted). Compiles take minutes each on a small host.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "data", "aot")
CONFIG = "configs/ocr_base_fudanvi_scene.py"
BF16 = ["--config.model.dtype=bfloat16"]
FUSED = ["--config.model.fused_attention=True"]
SCAN = ["--config.model.scan=True", "--config.model.remat=layers"]


def mesh(**axes) -> list[str]:
    return [f"--config.mesh.{k}={v}" for k, v in axes.items()]


# name: (topology, config overrides). FudanVI's recipe at 8 lines per chip, 480x480, 64 target tokens.
ROWS = {
    "tiny-v5e16-data": ("v5e:4x4", ["--config.model.preset=tiny", "--config.batch_size=128"]
                        + mesh(data=16) + BF16 + FUSED),
    "base-v5e16-data4fsdp4": ("v5e:4x4", ["--config.batch_size=128"] + mesh(data=4, fsdp=4) + BF16 + FUSED),
    "base-v5e16-data4fsdp4-scan": ("v5e:4x4", ["--config.batch_size=128"] + mesh(data=4, fsdp=4) + BF16 + FUSED
                                   + ["--config.model.scan=True"]),
    "base-v6e16-data4fsdp4": ("v6e:4x4", ["--config.batch_size=128"] + mesh(data=4, fsdp=4) + BF16 + FUSED),
    "base-v6e16-data4fsdp4-b384": ("v6e:4x4", ["--config.batch_size=384"] + mesh(data=4, fsdp=4) + BF16 + FUSED),
    "base-v5p8-data4": ("v5p:2x2x1", ["--config.batch_size=32"] + mesh(data=4) + BF16 + FUSED),
    "large-v5e16-fsdp16": ("v5e:4x4", ["--config.model.preset=large", "--config.batch_size=128"]
                           + mesh(fsdp=16) + BF16 + FUSED + SCAN),
    "huge-v5e16-fsdp16": ("v5e:4x4", ["--config.model.preset=huge", "--config.batch_size=128"]
                          + mesh(fsdp=16) + BF16 + FUSED + SCAN),
    "huge-v5e256-data16fsdp16": ("v5e:16x16", ["--config.model.preset=huge", "--config.batch_size=2048"]
                                 + mesh(data=16, fsdp=16) + BF16 + FUSED + SCAN),
}


def run_row(name: str) -> dict:
    topology, overrides = ROWS[name]
    cmd = [sys.executable, "-m", "ofa_jax.aot", "--topology", topology, "--config", CONFIG, *overrides, "--json"]
    t = time.time()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode not in (0, 1) or not r.stdout.strip():
        raise SystemExit(f"error: {name}: aot exited {r.returncode}: {r.stderr.strip().splitlines()[-1:]}")
    report = json.loads(r.stdout.strip().splitlines()[-1])
    from importlib.metadata import version

    report["row"] = {"name": name, "command": "python -m ofa_jax.aot " + " ".join(cmd[3:]),
                     "date": datetime.date.today().isoformat(), "wall_s": round(time.time() - t, 1),
                     "host_cpus": os.cpu_count(), "libtpu": version("libtpu"), "jax": version("jax")}
    return report


def table(reports: list[dict]) -> str:
    gib = lambda b: f"{b / 2**30:.2f}"
    out = ["| preset | topology | mesh | global batch | settings | per chip: state / temporaries / total (HBM) "
           "| fits | HBM traffic per chip-step | roofline floor | MFU bound | compile wall / CPU |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in reports:
        if "memory" not in r:  # the compiler stopped: temporaries beyond HBM
            topology, overrides = ROWS[r["row"]["name"]]
            out.append(f"| {r['row']['name'].split('-')[0]} | {topology} | {' '.join(overrides)} | | | "
                       f"{r['reason']} | **no** | | | | {r['row']['wall_s']:.0f} s |")
            continue
        m, what = r["memory"], r["what"]
        mesh_s = " x ".join(f"{k} {v}" for k, v in r["mesh"].items() if v > 1) or "1"
        settings = ", ".join(s for s in ("scan" if "scan=True" in what else "",
                                         "remat=" + what.split("remat=")[1].split(",")[0]
                                         if "remat=none" not in what else "",
                                         "fused" if "fused attention" in what else "") if s)
        roof = r.get("roofline") or {}
        out.append(
            f"| {r['row']['name'].split('-')[0]} | {r['topology']} ({r['chips']} x {r['chip']['name']}) | {mesh_s} "
            f"| {what.split('global batch ')[1].split(' ')[0]} | {settings or '-'} "
            f"| {gib(m['arguments'])} / {gib(m['temporaries'])} / {gib(m['total'])} ({gib(r['chip']['hbm'])} GiB) "
            f"| {'yes' if r['fits'] else '**no**'} | {r['hbm_bytes'] / 1e9:.1f} GB "
            f"| {roof.get('floor_s', float('nan')) * 1e3:.1f} ms ({roof.get('bound', '-')}) "
            f"| {100 * roof.get('mfu_bound', float('nan')):.0f}% "
            f"| {r['compile_s']:.0f} s / {r.get('compile_cpu_s', float('nan')):.0f} s |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated row names: " + ", ".join(ROWS))
    ap.add_argument("--table", action="store_true", help="print the table from kept rows; compile nothing")
    ap.add_argument("--redo", action="store_true", help="recompile rows already kept")
    a = ap.parse_args()
    names = [n for n in a.rows.split(",") if n]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        print(f"error: unknown rows {unknown}; known: {', '.join(ROWS)}", file=sys.stderr)
        return 2
    os.makedirs(OUT, exist_ok=True)
    for n in names:
        path = os.path.join(OUT, n + ".json")
        if a.table or (os.path.exists(path) and not a.redo):
            continue
        print(f"{n}: compiling ...", file=sys.stderr, flush=True)
        report = run_row(n)
        with open(path, "w") as f:
            json.dump(report, f, indent=1)
        print(f"{n}: {report['row']['wall_s']:.0f} s, fits={report['fits']}", file=sys.stderr, flush=True)
    kept = [json.load(open(os.path.join(OUT, n + ".json"))) for n in names
            if os.path.exists(os.path.join(OUT, n + ".json"))]
    print(table(kept))
    return 0


if __name__ == "__main__":
    sys.exit(main())
