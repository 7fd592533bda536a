"""Where libtpu's top-level program comes from: its LLO instructions by what each kernel launch runs.

    python bench/tlp_breakdown.py --topology v5e:2x2 --config configs/ocr_cpu_synthetic.py \\
        --config.mesh.data=2 --config.mesh.fsdp=2 --config.batch_size=8 --config.model.dtype=bfloat16

The top-level program (the kernel with no HLO instruction in libtpu's log) launches every other kernel;
its code is what the chip runs to launch them. (Its compile does not set the compile time: libtpu
compiles it beside the other kernels and it waits for them; ``python -m ofa_jax.aot --compile_profile``.)
This runs ``python -m ofa_jax.aot`` (arguments passed through) once with
libtpu's LLO dump of the "original" pass in a temporary directory (~150 MB for micro, ~1.2 GB for
base, and a much slower compile), splits the top-level program at each kernel launch and charges the
instructions since the previous launch to it, grouped by the JAX op that made the kernel (HLO
metadata). The instructions before the first launch are the entry's per-argument set-up.
"""
from __future__ import annotations

import collections
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = re.compile(r"(?:inlined_)?call .*?/\* %([\w.\-]+) = ([\w\-]+)\(")
COLLECTIVES = {"all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute"}


def part_of(src: str, opcode: str) -> str:
    """A launch's part of the step, from its HLO opcode and JAX op name."""
    if opcode in COLLECTIVES:
        return "collectives (unfused)"
    if "jvp(OFA)" not in src:
        return "optimizer, gradient norm, non-finite guard" if src else "no metadata (XLA-made)"
    side = "backward" if "transpose(jvp(OFA))" in src else "forward"
    where = ("ResNet" if "embed_images" in src else "encoder layers" if "encoder/layers" in src
             else "decoder layers" if "decoder/layers" in src else "embeddings, biases, loss")
    return f"{side}: {where}"


def breakdown(dump_dir: str) -> tuple[list[tuple[str, int, int]], int, int]:
    """(part, launches, instructions) rows, total instructions, entry arguments."""
    tlp = glob.glob(os.path.join(dump_dir, "*-TLP-*original.txt"))
    hlo = glob.glob(os.path.join(dump_dir, "*-TLP-hlo.txt"))
    if not tlp or not hlo:
        raise SystemExit(f"error: libtpu wrote no top-level program dump into {dump_dir}")
    text = open(hlo[0]).read()
    op_name = {m.group(1): (re.search(r'op_name="([^"]*)"', m.group(2)) or [None, ""])[1]
               for m in re.finditer(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?metadata=\{([^}]*)\}", text, re.M)}
    entry = re.search(r"^ENTRY [^(]*\((.*?)\) -> ", text, re.M)
    n_args = len(re.findall(r"\b(?:pred|[sufb]f?\d+|bf16)\[", entry.group(1))) if entry else 0
    counts, launches = collections.Counter(), collections.Counter()
    since, total, first = 0, 0, True
    for line in open(tlp[0]):
        s = line.strip()
        if not s or s[0] in "$#/_" or not s.startswith("%"):
            continue
        since += 1
        total += 1
        m = LAUNCH.search(s)
        if m:
            part = part_of(op_name.get(m.group(1), ""), m.group(2))
            if first:  # what precedes the first launch is the entry's set-up
                counts["entry (before the first launch)"] += since - 1
                since, first = 1, False
            counts[part] += since
            launches[part] += 1
            since = 0
    counts["exit (after the last launch)"] += since
    return [(p, launches[p], n) for p, n in counts.most_common()], total, n_args


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    keep = None
    if "--keep" in argv:
        i = argv.index("--keep")
        keep, argv = argv[i + 1], argv[:i] + argv[i + 2:]
    dump = keep or tempfile.mkdtemp(prefix="tlp-")
    env = dict(os.environ)
    env["LIBTPU_INIT_ARGS"] = (env.get("LIBTPU_INIT_ARGS", "") + f" --xla_jf_dump_to={dump}"
                               " --xla_jf_dump_llo_pass_label_regex=original").strip()
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    try:
        r = subprocess.run([sys.executable, "-m", "ofa_jax.aot", *argv, "--json"], cwd=ROOT, env=env,
                           capture_output=True, text=True)
        if r.returncode not in (0, 1):
            print(f"error: aot exited {r.returncode}: {r.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return 1
        rows, total, n_args = breakdown(dump)
    finally:
        if keep is None:
            shutil.rmtree(dump, ignore_errors=True)
    print(f"top-level program: {total:,} LLO instructions; entry computation: {n_args:,} arguments\n")
    print("| part | launches | instructions | share |\n|---|---|---|---|")
    for part, n, ins in rows:
        print(f"| {part} | {n:,} | {ins:,} | {100 * ins / total:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
