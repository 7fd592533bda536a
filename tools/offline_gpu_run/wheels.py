"""The packages ofa-jax needs, at the versions installed here, less those the host already has.

    python tools/offline_gpu_run/wheels.py [--extras synth] [--have HOST_LIST]   (run by prepare.sh)

Prints ``name==version`` per line: the installed ``ofa-jax`` distribution's requirements (with
``--extras``), followed through the installed distributions' own requirements. ofa-jax itself is left
out (``run.sh`` runs it from the copied clone). ``--have`` names a file with the host's packages, one
``name==version`` (or just ``name``) per line, e.g. the output of ``pip list --format=freeze`` there:
those are left out, so a host image that has JAX and CUDA keeps its own. Environment markers are
evaluated for this Python; a host on another Python version may need a package more or less.
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import re

from packaging.requirements import Requirement


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_have(path: str | None) -> set[str]:
    if not path:
        return set()
    names = set()
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if line and not line.startswith("#"):
            names.add(canonical(re.split(r"[=<>!~ @;\[]", line, maxsplit=1)[0]))
    return names


def needed(root: str = "ofa-jax", extras: tuple[str, ...] = (), have: set[str] = frozenset()) -> list[tuple[str, str]]:
    """[(name, installed version)] of ``root``'s requirement closure, sorted, without ``root`` and ``have``."""
    done: dict[str, set[str]] = {}
    found: dict[str, tuple[str, str]] = {}
    todo = [(root, set(extras))]
    while todo:
        name, want = todo.pop()
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:  # not installed here: an optional dependency this host never needed
            continue
        key = canonical(dist.metadata["Name"])
        if key in done and want <= done[key]:
            continue
        done[key] = done.get(key, set()) | want
        found[key] = (dist.metadata["Name"], dist.version)
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (done[key] or {""})):
                continue
            todo.append((req.name, set(req.extras)))
    skip = {canonical(root)} | {canonical(h) for h in have}
    return sorted((v for k, v in found.items() if k not in skip), key=lambda nv: canonical(nv[0]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--extras", default="synth", help="comma-separated extras of ofa-jax (default: synth)")
    ap.add_argument("--have", default=None, help="file listing the host's packages (pip list --format=freeze)")
    args = ap.parse_args(argv)
    extras = tuple(e for e in args.extras.split(",") if e)
    for name, version in needed("ofa-jax", extras, read_have(args.have)):
        print(f"{name}=={version}")


if __name__ == "__main__":
    main()
