"""python -m ofa_jax.aot: compile a run's real programs for a TPU slice you do not have, and say
whether they fit and how fast they can be.

    python -m ofa_jax.aot --topology v5e:4x4 --config configs/ocr_base_fudanvi_scene.py [--config.key=value ...]
    python -m ofa_jax.aot --topology v5e:4x4 --decode base --batch 128 --beam 5 --dtype bfloat16
    python -m ofa_jax.aot --topology v5e:4x4 --config ... --json        # one JSON object per program

Needs ``libtpu`` (``pip install "jax[tpu]"``, the same version as jax), not a TPU: JAX describes the
topology's chips (``jax.experimental.topologies.get_topology_desc``) and XLA's TPU compiler compiles
for them from abstract shapes only, no weights, no data (MaxText's ``train_compile.py`` does the
same). The train program is the one ``python -m ofa_jax.train`` runs with that config (optimizer
state, gradient accumulation, remat, freeze, mesh, donation); the decode program is the jitted beam
search of ``ofa_jax.decode``. Per chip it prints parameters + optimizer state, temporaries, outputs,
the total against the chip's HBM (exit 1 if a program does not fit), FLOPs, compile time, and a
roofline: the step cannot be faster than max(FLOPs / peak FLOP/s, HBM traffic / HBM bandwidth),
which bounds the model FLOP utilisation (MFU, with the analytic FLOPs of ``ofa_jax.flops``).

The HBM traffic is counted from the compiled program itself: the bytes of the operands and results
of the ops between fusions (what must cross HBM; ``--top N`` lists the heaviest with the JAX op
that made them). XLA's own "bytes accessed" is printed beside it but not used: on TPU it also counts
the operands of every elementwise op inside a fusion, which stay in vector memory (for the base
train step it is ~15x the traffic between fusions).

``--compile_profile`` says where the compile time goes, from libtpu's own log: its stages (HLO
passes; the backend, which lowers, schedules and allocates every kernel of the program; code
generation) and the kernels that took longest to schedule, with the JAX op each came from.

What the roofline leaves out: inter-chip communication (all-gathers of FSDP, gradient reductions),
host input, and XLA's own inefficiency; it is a floor on the step time, not a prediction. XLA's
cost analysis counts a loop body once (a ``scan`` over layers or micro-batches, the beam-search
``while_loop``): its FLOPs for such programs are per iteration, which is why MFU uses the analytic
count; the HBM traffic counts a loop whose condition is a plain counter bound (a scan) that many
times, and the beam search's data-dependent loop once (one decode step).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from typing import Optional

# Peak dense bf16 FLOP/s, HBM bytes and HBM bytes/s per chip, from the Cloud TPU system
# architecture pages; keyed by ``device.device_kind``.
CHIPS = {
    "TPU v4": dict(name="v4", flops=275e12, hbm=32 * 2**30, bw=1228e9),
    "TPU v5 lite": dict(name="v5e", flops=197e12, hbm=16 * 2**30, bw=819e9),
    "TPU v5": dict(name="v5p", flops=459e12, hbm=95 * 2**30, bw=2765e9),
    "TPU v5p": dict(name="v5p", flops=459e12, hbm=95 * 2**30, bw=2765e9),
    "TPU v6 lite": dict(name="v6e", flops=918e12, hbm=32 * 2**30, bw=1640e9),
}
# GPUs (dense bf16 tensor-core peak, HBM bandwidth; SXM parts), matched by a substring of the
# device kind. For ``bench/accelerator.py``, which compiles for the GPU it runs on; the HBM size
# then comes from the device itself.
GPUS = {
    "H200": dict(name="H200", flops=989e12, hbm=141e9, bw=4.8e12),
    "H100": dict(name="H100", flops=989e12, hbm=80 * 2**30, bw=3.35e12),
    "A100": dict(name="A100", flops=312e12, hbm=80 * 2**30, bw=2.0e12),
    "L4": dict(name="L4", flops=121e12, hbm=24 * 2**30, bw=300e9),
}


class AotError(ValueError):
    """A problem with the request (topology name, mesh, config): one line on the command line."""


class DoesNotFit(RuntimeError):
    """XLA refused to compile: the program needs more memory than a chip has (its one-line reason)."""


@contextlib.contextmanager
def _quiet_fd2(captured: Optional[list] = None):
    """libtpu writes start-up warnings (no TPU hostnames, no accelerator type) to the C-level stderr
    when it is loaded on a machine without a TPU; they are noise here. Shown if the call fails;
    appended to ``captured`` (for `compile_profile`) if given."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            tmp.seek(0)
            sys.stderr.write(tmp.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if captured is not None:
                tmp.seek(0)
                captured.append(tmp.read().decode(errors="replace"))


# ----------------------------------------------------------------------------- compile profile

_PROFILE = False


def enable_compile_profile() -> None:
    """Ask libtpu to log its compile stages and each kernel's backend compile (before libtpu starts).

    Why: XLA's TPU compile time is mostly its backend, which lowers, schedules and allocates every
    kernel (fusion) of the program one by one; libtpu says where the time goes only in its own log.
    """
    global _PROFILE
    _PROFILE = True
    os.environ["TPU_STDERR_LOG_LEVEL"] = os.environ["TPU_MIN_LOG_LEVEL"] = "0"
    os.environ["LIBTPU_INIT_ARGS"] = (os.environ.get("LIBTPU_INIT_ARGS", "")
                                      + " --vmodule=deepsea_compiler_backend=2").strip()


def _kernel_source(k: dict) -> str:
    return k.get("source", "")[-80:]


def _seconds(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}[unit]


def _duration(text: str) -> float:
    """libtpu's durations: "12.63s", "13m14.45s", "54.1ms"."""
    import re

    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m(?!s))?([\d.]+)(ms|us|s)", text)
    if not m:
        return float("nan")
    return int(m.group(1) or 0) * 3600 + int(m.group(2) or 0) * 60 + _seconds(m.group(3), m.group(4))


def parse_compile_log(log: str, top: int = 10) -> dict:
    """libtpu's log of one compilation -> {"stages": {name: seconds}, "kernels": n, "threads",
    "kernel_s", "schedule_s", "slowest_kernels": [{"kernel", "llo_instructions", "schedule_s",
    "backend_s"}], "top_level": {"llo_instructions", "backend_s", "after_last_kernel_s"} or None}.
    Empty parts where this libtpu logs otherwise.

    ``backend_s``: from the kernel's "LLO optimizing" line to its bundle packing, on the thread that
    compiled it (scheduling, register allocation, packing). Kernels compile on a few threads at once;
    ``kernel_s`` sums their times. libtpu's top-level program (the kernel with no HLO instruction,
    which launches all the others) is kept apart: it is compiled alongside them and waits for them
    (its span covers every other kernel's and ends just after the last), so its ``backend_s`` is the
    backend stage's length, not its own work; ``after_last_kernel_s`` bounds what is its own.
    """
    import re

    stages = {m.group(1).lower(): _duration(m.group(2))
              for m in re.finditer(r"\] (\w+) stage duration: (\S+)", log)}
    clock = re.compile(r"^I\d{4} (\d+):(\d+):([\d.]+) +(\d+) ")
    current, kernels = {}, []
    for line in log.splitlines():
        c = clock.match(line)
        if not c or "deepsea_compiler_backend.cc" not in line:
            continue
        t, thread = int(c.group(1)) * 3600 + int(c.group(2)) * 60 + float(c.group(3)), c.group(4)
        m = re.search(r"\] \[([^\]]*)\] LLO optimizing ([\d,]+) instructions", line)
        if m:
            current[thread] = {"kernel": m.group(1), "llo_instructions": int(m.group(2).replace(",", "")),
                               "schedule_s": 0.0, "start": t, "thread": thread}
            continue
        k = current.get(thread)
        m = re.search(r"scheduling time: ([\d.]+) (us|ms|s|min)", line)
        if m and k:
            k["schedule_s"] = _seconds(m.group(1), m.group(2))
        elif "post-bundle-packing" in line and k:
            k["end"] = t
            k["backend_s"] = max(t - k["start"], 0.0)  # past midnight: not worth a date
            kernels.append(current.pop(thread))
    tops = [k for k in kernels if k["kernel"] == "<no-hlo-instruction>"]
    rest = sorted((k for k in kernels if k["kernel"] != "<no-hlo-instruction>"), key=lambda k: -k["backend_s"])
    top_level = None
    if tops:
        tl = max(tops, key=lambda k: k["backend_s"])
        last = max((k["end"] for k in rest), default=tl["start"])
        top_level = {"llo_instructions": tl["llo_instructions"], "backend_s": tl["backend_s"],
                     "after_last_kernel_s": max(tl["end"] - last, 0.0)}
    strip = lambda k: {key: k[key] for key in ("kernel", "llo_instructions", "schedule_s", "backend_s")}
    return {"stages": stages, "kernels": len(kernels), "threads": len({k["thread"] for k in rest}),
            "kernel_s": sum(k["backend_s"] for k in rest),
            "schedule_s": sum(k["schedule_s"] for k in kernels),
            "slowest_kernels": [strip(k) for k in rest[:top]], "top_level": top_level}


def topology_devices(name: str):
    """Abstract devices of a TPU topology such as ``v5e:4x4``, ``v4:2x2x1``, ``v5p:4x4x4``, ``v6e:8x8``."""
    import importlib.util

    from jax.experimental import topologies

    if importlib.util.find_spec("libtpu") is None:
        raise AotError('compiling for a TPU topology needs libtpu: pip install "jax[tpu]==<your jax version>"')
    # Compiling touches no TPU: do not take libtpu's one-process lock (another JAX process on this
    # host, a notebook say, may hold it). Read when libtpu starts, i.e. on the first call below.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    try:
        with _quiet_fd2():
            topo = topologies.get_topology_desc(platform="tpu", topology_name=name)
    except Exception as e:  # JaxRuntimeError INVALID_ARGUMENT: the name or its shape
        msg = str(e).splitlines()[0].replace("INVALID_ARGUMENT: ", "")
        raise AotError(f"topology {name!r}: {msg}") from None
    return list(topo.devices)


def chip_spec(device) -> dict:
    """Peak FLOP/s, HBM size and bandwidth of ``device``; zeros where unknown (no roofline then)."""
    kind = device.device_kind
    spec = CHIPS.get(kind) or next((v for k, v in GPUS.items() if k in kind), None)
    spec = dict(spec or dict(name=kind, flops=0.0, hbm=0, bw=0.0), kind=kind)
    try:  # a real device knows its memory
        stats = device.memory_stats() or {}
        if stats.get("bytes_limit"):
            spec["hbm"] = int(stats["bytes_limit"])
    except Exception:  # abstract topology devices have no memory_stats
        pass
    return spec


@dataclasses.dataclass
class Report:
    program: str            # "train step" / "decode"
    what: str               # preset, batch, shape: one line for people
    topology: str
    chips: int
    chip: dict
    mesh: dict
    compile_s: float
    memory: dict            # bytes per chip: arguments, outputs, aliased, temporaries, total
    xla_flops: float        # per chip, XLA cost analysis (loop bodies once)
    bytes_accessed: float   # per chip, XLA cost analysis: every op's operands, inside fusions too
    hbm_bytes: float        # per chip, operands + results of the ops between fusions (`ops_by_bytes`)
    model_flops: float      # per chip, analytic (ofa_jax.flops), per step / per decode call
    arguments: str = "parameters + optimizer state + batch"
    notes: list = dataclasses.field(default_factory=list)
    recompute_flops: float = 0.0  # per chip, analytic: the forward passes remat runs again
    compile_cpu_s: Optional[float] = None  # CPU seconds of the compiling process (less load-bound than wall)
    compile_profile: Optional[dict] = None  # --compile_profile: libtpu's stages and slowest kernels

    @property
    def fits(self) -> bool:
        return not self.chip["hbm"] or self.memory["total"] <= self.chip["hbm"]

    def roofline(self) -> Optional[dict]:
        """Lower bound on the step time and the MFU it allows (compute or HBM bound, whichever is larger)."""
        if not self.chip["flops"]:
            return None
        flops = max(self.xla_flops, self.model_flops + self.recompute_flops)
        t_compute = flops / self.chip["flops"]
        t_memory = self.hbm_bytes / self.chip["bw"]
        floor = max(t_compute, t_memory, 1e-12)
        return {"floor_s": floor, "compute_s": t_compute, "memory_s": t_memory,
                "bound": "memory" if t_memory > t_compute else "compute",
                "mfu_bound": self.model_flops / self.chip["flops"] / floor}

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["fits"] = self.fits
        d["roofline"] = self.roofline()
        return d

    def text(self) -> str:
        gib = lambda b: f"{b / 2**30:.2f} GiB"
        m, r = self.memory, self.roofline()
        mesh = " x ".join(f"{k}={v}" for k, v in self.mesh.items())
        figures = (f"{gib(self.chip['hbm'])} HBM, {self.chip['flops'] / 1e12:.0f} TFLOP/s bf16, "
                   f"{self.chip['bw'] / 1e9:.0f} GB/s" if self.chip["flops"] else "no chip figures")
        lines = [
            f"{self.program}: {self.what}",
            f"  target        {self.topology}: {self.chips} x {self.chip['kind']} ({figures}), mesh {mesh}",
            f"  compile       {self.compile_s:.1f} s on this host"
            + (f" ({self.compile_cpu_s:.0f} CPU s)" if self.compile_cpu_s else ""),
            f"  per chip      arguments {gib(m['arguments'])} ({self.arguments}), "
            f"outputs {gib(m['outputs'])} ({gib(m['aliased'])} of them reuse donated arguments), "
            f"temporaries {gib(m['temporaries'])}",
            f"  total         {gib(m['total'])} of {gib(self.chip['hbm'])}: "
            + ("fits" if self.fits else "DOES NOT FIT"),
            f"  per step      {self.model_flops / 1e12:.3f} TFLOP analytic"
            + (f" + {self.recompute_flops / 1e12:.3f} recomputed" if self.recompute_flops else "")
            + f" (XLA, loop bodies once: {self.xla_flops / 1e12:.3f}); "
            f"HBM traffic {self.hbm_bytes / 1e9:.2f} GB between fusions (XLA's 'bytes accessed', "
            f"inside fusions too: {self.bytes_accessed / 1e9:.1f} GB)",
        ]
        if r:
            lines.append(f"  roofline      >= {r['floor_s'] * 1e3:.2f} ms ({r['bound']}-bound: compute "
                         f"{r['compute_s'] * 1e3:.2f} ms, HBM {r['memory_s'] * 1e3:.2f} ms) -> MFU <= {100 * r['mfu_bound']:.0f}%")
        lines += [f"  note          {n}" for n in self.notes]
        p = self.compile_profile
        if p is not None:
            stages = ", ".join(f"{k.lower()} {v:.1f} s" for k, v in p["stages"].items()) or "none logged"
            lines.append(f"  compile       libtpu stages: {stages}; {p['kernels']} kernels on {p['threads']} "
                         f"threads, {p['kernel_s']:.1f} s of kernel compiles (scheduling {p['schedule_s']:.1f} s)")
            tl = p.get("top_level")
            if tl:
                lines.append(f"  compile       libtpu's top-level program ({tl['llo_instructions']:,} LLO instructions) "
                             f"compiles beside the kernels and waits for them: done {tl['after_last_kernel_s']:.1f} s "
                             f"after the last")
            lines.append("  compile       the slowest kernels in the backend:")
            lines += [f"    {k['backend_s']:7.2f} s  {k['llo_instructions']:>9,} LLO instructions  "
                      f"{k['kernel']:<22} {_kernel_source(k)}" for k in p["slowest_kernels"]]
        return "\n".join(lines)


def _memory(compiled) -> dict:
    ma = compiled.memory_analysis()
    args, outs = int(ma.argument_size_in_bytes), int(ma.output_size_in_bytes)
    alias, temp = int(ma.alias_size_in_bytes), int(ma.temp_size_in_bytes)
    return {"arguments": args, "outputs": outs, "aliased": alias, "temporaries": temp,
            "code": int(ma.generated_code_size_in_bytes), "total": args + outs - alias + temp}


def _cost(compiled) -> tuple[float, float]:
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):  # older jax: one dict per computation
        ca = ca[0] if ca else {}
    ca = ca or {}
    return float(ca.get("flops", 0.0)), float(ca.get("bytes accessed", 0.0))


_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4,
                "f32": 4, "s64": 8, "u64": 8, "f64": 8}


def _arrays(text: str) -> list[tuple[int, bool]]:
    """(bytes, in HBM?) of every array shape written in ``text`` (``bf16[64,30,30,1024]{3,2,1,0:T(8,128)}``).
    A layout with a memory space ``S(n)`` (TPU: 1 = on-chip vector memory, others sync flags) is not HBM."""
    import re

    out = []
    for dtype, dims, layout in re.findall(r"\b(pred|[subf]\d+|bf16)\[([\d,]*)\](\{[^}]*\})?", text):
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        out.append((n * _DTYPE_BYTES.get(dtype, 4), "S(" not in (layout or "")))
    return out


def _shape_bytes(text: str, hbm_only: bool = False) -> int:
    return sum(b for b, hbm in _arrays(text) if hbm or not hbm_only)


def heaviest_ops(compiled, top: Optional[int] = 15) -> list[dict]:
    """Where the HBM traffic goes: the ops of the compiled program (fusions, convolutions, copies,
    collectives; not the insides of fusions, which stay on chip) ranked by the HBM bytes they read
    and write, with the JAX source op that made each (HLO metadata ``op_name``).

    An op's traffic is its operands and results that live in HBM (on TPU, arrays XLA placed in
    on-chip memory carry a memory space ``S(1)`` in their layout and do not count); an asynchronous
    copy or slice (``copy-start``, ``slice-start``) moves its smallest array once into on-chip
    memory (twice if both ends are in HBM). ``top=None``: all of them. See `ops_by_bytes`."""
    return ops_by_bytes(compiled.as_text())[:top]


def ops_by_bytes(hlo_text: str) -> list[dict]:
    """`heaviest_ops` on the text of an optimized HLO module (all ops, heaviest first).

    Ops inside a loop (a ``scan`` over layers or micro-batches) count once per iteration: the trip
    count XLA records, or the constant a condition that is one ``compare`` tests its counter
    against; other loops (the beam search's, which also stops when every line is done) count once. Inside a fusion, an operand that
    is only sliced (``dynamic-slice``: one layer of a stacked parameter) counts as the slices read,
    and a result written in place into an operand (``dynamic-update-slice``: a scan stacking one
    layer's residuals) counts as the slice written, not as the whole buffer."""
    import re

    define = re.compile(r"^\s*(ROOT )?(%[\w.\-]+) = (.*)$")
    shapes, fused, lines, comp = {}, set(), [], None
    loops = []  # (computation holding the while, its body, its condition, known trip count or None)
    bounds = {}  # computation -> the s32 constants in it (a scan's condition: its length)
    params = {}  # computation -> {parameter index: name}
    uses = {}    # computation -> {name: [(op kind, result name, operand index)]}
    roots = {}   # computation -> (op kind, operand names, result name)
    defs = {}    # result name -> (op kind, operand names)
    calls_of = {}  # result name of a fusion -> the computation it calls
    for line in hlo_text.splitlines():
        head = re.match(r"^(?:ENTRY )?(%[\w.\-]+) .*\{\s*$", line)
        if head and " = " not in line:
            comp = head.group(1)
            continue
        m = define.match(line)
        if not m:
            continue
        is_root, name, rhs = m.groups()
        op = re.search(r"(?:^|[\s)}])([a-z][\w\-]*)\(", rhs)
        kind = op.group(1) if op else "?"
        shapes[name] = rhs[:op.start(1)] if op else rhs
        args = rhs[len(shapes[name]):].split(", metadata=")[0]
        operands = re.findall(r"(%[\w.\-]+)", re.sub(r"(calls|to_apply|condition|body)=%[\w.\-]+", "", args))
        lines.append((comp, name, rhs, kind, operands))
        defs[name] = (kind, operands)
        if kind == "parameter":
            params.setdefault(comp, {})[int(re.search(r"parameter\((\d+)\)", rhs).group(1))] = name
        for j, o in enumerate(operands):
            uses.setdefault(comp, {}).setdefault(o, []).append((kind, name, j))
        called = re.search(r"calls=(%[\w.\-]+)", rhs)
        if called:
            calls_of[name] = called.group(1)
            fused.add(called.group(1))
        if is_root:
            roots[comp] = (kind, operands, name)
        if kind == "while":
            body = re.search(r"body=(%[\w.\-]+)", rhs)
            cond = re.search(r"condition=(%[\w.\-]+)", rhs)
            trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', rhs)
            if body:
                loops.append((comp, body.group(1), cond.group(1) if cond else None,
                              int(trips.group(1)) if trips else None))
        const = re.match(r"s32\[\]\S* constant\((\d+)\)", rhs)
        if const:
            bounds.setdefault(comp, []).append(int(const.group(1)))
    mult = {}
    for _ in range(8):  # nested loops: propagate multipliers outward-in
        for parent, body, cond, n in loops:
            if n is None:
                c = bounds.get(cond, [])
                n = c[0] if len(c) == 1 and roots.get(cond, ("",))[0] == "compare" else 1
            mult[body] = mult.get(parent, 1) * n

    def fused_io(callee):
        """({operand index: bytes read} for operands not read whole, bytes written or None for the
        whole result) of a fusion."""
        read = {}

        def sliced(comp, value, depth=0):
            """Bytes read of ``value`` in ``comp`` if it is only ever dynamic-sliced (through bitcasts
            and nested fusions), else None."""
            u = uses.get(comp, {}).get(value, [])
            total = 0
            for k, r, j in u:
                if k == "dynamic-slice" and j == 0:
                    total += _shape_bytes(shapes[r], True)
                    continue
                sub = None
                if depth < 6 and k == "bitcast":
                    sub = sliced(comp, r, depth + 1)
                elif depth < 6 and k == "fusion" and r in calls_of:
                    inner = params.get(calls_of[r], {}).get(j)
                    sub = sliced(calls_of[r], inner, depth + 1) if inner else None
                if sub is None:
                    return None
                total += sub
            return total if u else None

        for i, pname in params.get(callee, {}).items():
            b = sliced(callee, pname)
            if b is not None:
                read[i] = b
        written = None
        root = roots.get(callee)
        if root:
            # the fusion's outputs: the root, or the elements of a root tuple (a multi-output fusion)
            outs = [(root[0], root[1], root[2])] if root[0] != "tuple" else [(*defs.get(o, ("?", [])), o) for o in root[1]]
            if any(k == "dynamic-update-slice" for k, _, _ in outs):
                written = 0
                by_name = {n: i for i, n in params.get(callee, {}).items()}
                for k, ops, out_name in outs:
                    target = ops[0] if ops else None
                    while target in defs and defs[target][0] == "bitcast" and defs[target][1]:
                        target = defs[target][1][0]
                    if k == "dynamic-update-slice" and len(ops) >= 2 and target in by_name:
                        read[by_name[target]] = 0  # written in place: the buffer is neither read nor rewritten
                        written += _shape_bytes(shapes.get(ops[1], ""), True)
                    else:
                        written += _shape_bytes(shapes.get(out_name, ""), True)
        return read, written

    rows = []
    skip = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "while", "conditional", "call",
            "after-all", "partition-id", "replica-id", "copy-done", "slice-done", "all-gather-done",
            "all-reduce-done", "collective-permute-done", "send-done", "recv-done"}
    for comp, name, rhs, kind, operands in lines:
        if comp in fused or kind in skip:
            continue
        if kind.endswith("-start") and kind != "custom-call":
            arrays = [a for a in _arrays(shapes[name]) if a[0] > 8]
            moved = min(b for b, _ in arrays) if arrays else 0
            nbytes = moved * (2 if all(hbm for _, hbm in arrays) else 1)
        else:
            read, written = {}, None
            if kind == "fusion" and name in calls_of:
                read, written = fused_io(calls_of[name])
            elif kind == "dynamic-slice":
                read = {0: _shape_bytes(shapes[name], True)}
            elif kind == "dynamic-update-slice" and len(operands) >= 2:
                read, written = {0: 0}, _shape_bytes(shapes.get(operands[1], ""), True)
            out = _shape_bytes(shapes[name], True) if written is None else written
            nbytes = out + sum(read[i] if i in read else _shape_bytes(shapes.get(o, ""), True)
                               for i, o in enumerate(operands))
        src = re.search(r'op_name="([^"]*)"', rhs)
        rows.append({"op": kind, "name": name, "bytes": nbytes * mult.get(comp, 1), "times": mult.get(comp, 1),
                     "source": src.group(1) if src else "", "shape": shapes[name].strip()[:60]})
    rows.sort(key=lambda r: -r["bytes"])
    return rows


def _compile(jitted, *abstract_args):
    """(compiled, wall seconds, CPU seconds of this process); with `enable_compile_profile`, the
    compiled object carries ``ofa_profile`` (`parse_compile_log`)."""
    t, c = time.perf_counter(), time.process_time()
    log = []
    try:
        with _quiet_fd2(log):
            compiled = jitted.lower(*abstract_args).compile()
    except Exception as e:  # the TPU compiler stops when temporaries exceed HBM
        if "RESOURCE_EXHAUSTED" in str(e):
            msg = str(e).split("RESOURCE_EXHAUSTED: ", 1)[-1].splitlines()[0]
            raise DoesNotFit(f"{msg} (compile stopped after {time.perf_counter() - t:.0f} s)") from None
        raise
    profile = parse_compile_log(log[0]) if _PROFILE and log else None
    if profile:  # the JAX op each slow kernel came from
        import re

        text = compiled.as_text()
        for k in profile["slowest_kernels"]:
            m = re.search(r"%" + re.escape(k["kernel"]) + r' = [^\n]*?op_name="([^"]*)"', text)
            k["source"] = m.group(1) if m else ""
    return compiled, time.perf_counter() - t, time.process_time() - c, profile


# ----------------------------------------------------------------------------- programs


def train_program(cfg, devices, topology: str) -> Report:
    """Compiles the train step ``python -m ofa_jax.train`` would run with ``cfg`` on ``devices``."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P

    from ofa_jax import flops, partitioning, train
    from ofa_jax.preprocess import NORMALIZE_LUT, image_hw
    from ofa_jax.tokenizer import OFATokenizer

    cfg = cfg.copy_and_resolve_references()
    with cfg.unlocked():
        if not cfg.total_steps:  # only the learning-rate schedule's constants depend on it
            cfg.total_steps = 1000
    try:
        s = train.build(cfg, None, devices=devices)
    except ValueError as e:  # ConfigError, mesh sizes
        raise AotError(str(e)) from None
    platform = devices[0].platform
    n_batch_dev = s.mesh.shape["data"] * s.mesh.shape["fsdp"]
    micro = cfg.batch_size // cfg.grad_accum_steps
    if cfg.batch_size % cfg.grad_accum_steps or micro % n_batch_dev:
        raise AotError(f"batch {cfg.batch_size} / grad_accum_steps {cfg.grad_accum_steps} = micro-batch {micro} "
                       f"is not divisible by data x fsdp = {n_batch_dev}")
    loop = train.accum_loop(cfg, platform)
    if cfg.grad_accum_steps > 1 and loop == "host":
        raise AotError("grad_accum_loop=host runs several programs; compile with --config.grad_accum_loop=scan")
    tokenizer = OFATokenizer.from_model_dir(cfg.init.model_dir) if cfg.init.model_dir else OFATokenizer.default()
    src_tokens = np.asarray(tokenizer.encode_prompt(cfg.prompt), np.int32)[None]
    h, w = image_hw(train.input_size(cfg))
    t = int(cfg.data.max_target_tokens)
    b = int(cfg.batch_size)
    step = train.make_train_step(s.model, s.tx, cfg, src_tokens, jnp.asarray(NORMALIZE_LUT), backend=platform,
                                 mesh=s.mesh)
    rep = NamedSharding(s.mesh, P())
    sds = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=partitioning.batch_sharding(s.mesh, len(shape)))
    batch = {"image": sds((b, h, w, 3), jnp.uint8), "target": sds((b, t), jnp.int32),
             "prev_output_tokens": sds((b, t), jnp.int32), "target_mask": sds((b, t), jnp.bool_)}
    rng = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=rep)
    jitted = jax.jit(step, in_shardings=(s.state_shardings, {k: v.sharding for k, v in batch.items()}, rep),
                     out_shardings=(s.state_shardings, rep), donate_argnums=(0,),
                     compiler_options=train.compiler_options(platform))
    compiled, secs, cpu_secs, profile = _compile(jitted, s.abstract_state, batch, rng)
    xla_flops, accessed = _cost(compiled)
    ops = ops_by_bytes(compiled.as_text())
    parts = flops.forward_flops(s.mcfg, (h, w), src_len=src_tokens.shape[1], tgt_len=t)
    fwd = parts["total"]
    copies = 2 if cfg.loss.rdrop else 1  # R-Drop doubles the batch
    remat = cfg.model.get("remat", "none")
    again = {"none": 0.0, "layers": parts["encoder"] + parts["decoder"], "full": fwd}[remat]
    chips = len(s.mesh.devices.flat)
    notes = []
    if cfg.grad_accum_steps > 1:
        notes.append(f"{cfg.grad_accum_steps} micro-batches in a {loop}")
    if remat != "none":
        notes.append(f"remat={remat}: the roofline's compute time includes the recomputed forward; MFU does not")
    what = (f"{cfg.init.model_dir or cfg.model.preset}, {cfg.model.dtype} compute, global batch {b} "
            f"({b / n_batch_dev:g} per data shard), {h}x{w}, {t} target tokens, remat={remat}, "
            f"scan={bool(cfg.model.get('scan', False))}"
            + (", fused attention" if cfg.model.get("fused_attention", False) else ""))
    rep = Report("train step", what, topology, chips, chip_spec(devices[0]),
                 {k: int(v) for k, v in s.mesh.shape.items()}, secs, _memory(compiled), xla_flops, accessed,
                 sum(r["bytes"] for r in ops), 3.0 * copies * fwd * b / chips,  # forward + backward (2x forward)
                 notes=notes, recompute_flops=again * copies * b / chips, compile_cpu_s=cpu_secs,
                 compile_profile=profile)
    rep.compiled, rep.ops = compiled, ops
    rep.setup, rep.abstract_batch = s, batch  # for bench/accelerator.py to run it
    return rep


def decode_program(model: str, devices, topology: str, batch: int = 32, beam: int = 5, max_len: int = 64,
                   image_size=None, dtype: str = "bfloat16", mesh: Optional[dict] = None,
                   scan: bool = False) -> Report:
    """Compiles the jitted beam search of ``ofa_jax.decode`` for a preset or model dir. ``image_size``
    (side or (H, W)) and the prompt default to a model dir's ``generation.json``, else 480 and OFA's."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from ofa_jax import flops, partitioning
    from ofa_jax.config import get_config
    from ofa_jax.decoding import GenerationConfig, make_generate_fn
    from ofa_jax.model import OFA, init_params
    from ofa_jax.preprocess import image_hw
    from ofa_jax.tokenizer import OCR_PROMPT, OFATokenizer

    try:
        config = get_config(model)
    except (ValueError, OSError, KeyError) as e:
        raise AotError(f"--decode {model!r}: {e}") from None
    generation = {}
    tok = OFATokenizer.default()
    if os.path.isdir(model):
        tok = OFATokenizer.from_model_dir(model)
        path = os.path.join(model, "generation.json")
        if os.path.exists(path):
            with open(path) as f:
                generation = json.load(f)
    size = image_size if image_size is not None else generation.get("patch_image_size", 480)
    h, w = image_hw(tuple(size) if isinstance(size, list) else size)
    try:
        m = partitioning.make_mesh(mesh or {"data": -1}, devices)
    except ValueError as e:
        raise AotError(str(e)) from None
    n_batch_dev = m.shape["data"] * m.shape["fsdp"]
    if batch % n_batch_dev:
        raise AotError(f"--batch {batch} is not divisible by data x fsdp = {n_batch_dev}")
    compute = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
    net = OFA(config, dtype=compute, scan=scan)
    boxed = jax.eval_shape(lambda: init_params(config, image_size=(h, w), scan=scan))
    shardings = nn.meta.unbox(partitioning.variable_shardings(boxed, m))
    abstract = nn.meta.unbox(boxed)
    cast = lambda a: compute if jnp.issubdtype(a.dtype, jnp.floating) else a.dtype
    params = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, cast(a), sharding=sh),
                          abstract["params"], shardings["params"])
    variables = {"params": params}
    if "batch_stats" in abstract:
        variables["batch_stats"] = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                                                abstract["batch_stats"], shardings["batch_stats"])
    src_len = len(tok.encode_prompt(generation.get("prompt", OCR_PROMPT)))
    images = jax.ShapeDtypeStruct((batch, h, w, 3), jnp.float32, sharding=partitioning.batch_sharding(m, 4))
    src = jax.ShapeDtypeStruct((batch, src_len), jnp.int32, sharding=partitioning.batch_sharding(m, 2))
    gen = GenerationConfig(beam_size=beam, max_len_b=max_len)
    platform = devices[0].platform
    fn = make_generate_fn(net, gen, backend=platform, pad_id=tok.pad_id, eos_id=tok.eos_id, bos_id=tok.bos_id,
                          unk_id=tok.unk_id)
    compiled, secs, cpu_secs, profile = _compile(fn, variables, images, src)
    xla_flops, accessed = _cost(compiled)
    ops = ops_by_bytes(compiled.as_text())
    f = flops.decode_flops(config, (h, w), src_len=src_len, beam=beam, steps=max_len)
    chips = len(m.devices.flat)
    notes = ["XLA's counts and the HBM traffic are one decode step (the while_loop body) plus the encoder; "
             f"the analytic FLOPs assume all {max_len} steps run (a batch stops at its longest line)"]
    what = f"{model}, {dtype}, batch {batch}, beam {beam}, {max_len} steps, {h}x{w}, scan={scan}"
    rep = Report("decode", what, topology, chips, chip_spec(devices[0]), {k: int(v) for k, v in m.shape.items()},
                 secs, _memory(compiled), xla_flops, accessed, sum(r["bytes"] for r in ops),
                 f["total"] * batch / chips, "parameters + images", notes, compile_cpu_s=cpu_secs,
                 compile_profile=profile)
    rep.compiled, rep.ops = compiled, ops
    rep.abstract_args = variables, images, src  # for bench/accelerator.py to run it
    return rep



# ----------------------------------------------------------------------------- CLI


def main(argv=None) -> int:
    from absl import flags
    from ml_collections import config_flags

    F = flags.FLAGS
    config_flags.DEFINE_config_file("config", None, "train config file (configs/*.py); --config.key=value overrides",
                                    lock_config=True)
    flags.DEFINE_string("topology", None, "TPU topology, e.g. v5e:4x4, v4:2x2x1, v5p:4x4x4, v6e:8x8")
    flags.DEFINE_string("decode", None, "also (or only) compile decoding for this preset or model dir")
    flags.DEFINE_integer("batch", 32, "decode: global batch of images")
    flags.DEFINE_integer("beam", 5, "decode: beam size")
    flags.DEFINE_integer("max_len", 64, "decode: generated tokens (the while_loop's bound)")
    flags.DEFINE_string("image_size", "", "decode: square side, or HxW (e.g. 32x320); default: the model dir's, else 480")
    flags.DEFINE_enum("dtype", "bfloat16", ["float32", "bfloat16"], "decode: parameter and compute dtype")
    flags.DEFINE_string("decode_mesh", "data=-1", "decode: mesh axes, e.g. data=-1 or data=4,tensor=4")
    flags.DEFINE_bool("scan", False, "decode: the scanned form of the layer stacks (train: --config.model.scan)")
    flags.DEFINE_bool("json", False, "print one JSON object per program instead of the table")
    flags.DEFINE_integer("top", 0, "also list the N ops that move the most bytes (where the HBM traffic goes)")
    flags.DEFINE_bool("compile_profile", False, "also report libtpu's compile stages and the kernels whose "
                      "backend compile took longest (where the compile time goes)")

    def run(_):
        from absl import logging as absl_logging

        if not F["verbosity"].present:  # jax logs its failed TPU start-up at INFO on a host without one
            absl_logging.set_verbosity(absl_logging.WARNING)
        if not F.topology:
            print("error: --topology is required (e.g. --topology v5e:4x4)", file=sys.stderr)
            return 2
        if F.config is None and not F.decode:
            print("error: give --config (train step) and/or --decode PRESET_OR_DIR", file=sys.stderr)
            return 2
        reports = []
        if F.compile_profile:
            enable_compile_profile()
        try:
            devices = topology_devices(F.topology)
            if F.config is not None:
                reports.append(train_program(F.config, devices, F.topology))
                _emit(reports[-1], F.json, F.top)
            if F.decode:
                size = F.image_size.lower() or None
                if size is not None:
                    size = [int(v) for v in size.split("x")] if "x" in size else int(size)
                mesh = {}
                for part in filter(None, F.decode_mesh.split(",")):
                    k, _, v = part.partition("=")
                    mesh[k.strip()] = int(v)
                reports.append(decode_program(F.decode, devices, F.topology, F.batch, F.beam, F.max_len, size,
                                              F.dtype, mesh, F.scan))
                _emit(reports[-1], F.json, F.top)
        except AotError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except DoesNotFit as e:
            print(json.dumps({"fits": False, "reason": str(e)}) if F.json else f"does not fit: {e}", flush=True)
            return 1
        return 0 if all(r.fits for r in reports) else 1

    from ofa_jax.cli import absl_run

    absl_run(lambda args: sys.exit(run(args)), argv)


def _emit(report: Report, as_json: bool, top: int = 0) -> None:
    d = report.as_dict()
    if top:
        d["heaviest_ops"] = report.ops[:top]
    if as_json:
        print(json.dumps(d), flush=True)
        return
    print(report.text(), flush=True)
    for r in d.get("heaviest_ops", []):
        print(f"    {r['bytes'] / 1e9:8.3f} GB  {r['op']:<14} {r['shape']:<40} {r['source'][-110:]}")


if __name__ == "__main__":
    main()
