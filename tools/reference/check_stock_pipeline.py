"""Reference-environment check: a model fine-tuned here, exported square, reads the same text in
ModelScope's stock OCR pipeline as in ofa-jax.

    python tools/reference/check_stock_pipeline.py --reference-python .venv-reference/bin/python [--workdir DIR]

Run it from the repository root with ofa-jax's environment (the ``synth`` extra draws the training
lines); the reference environment is the one ``tools/reference/setup_reference_env.sh`` builds.

1. fine-tune the shipped model ``--steps`` steps at a square input (``--config.data.image_height=0
   --config.data.image_size=SIZE``) on rendered lines, and ``--export`` it (an ofa-jax model dir);
2. ``python -m tools.convert_weights --to-pytorch`` it: a ModelScope dir (square: no flag needed);
3. ``python -m ofa_jax.decode --model EXPORT --views id`` reads the image files in ``examples/``;
4. the reference environment reads the same files with ``pipeline(Tasks.ocr_recognition, model=DIR)``
   (this script again, ``--read DIR IMAGE...``);
5. the texts must be equal line for line: exit 0 if they are, 1 (and the lines that differ) if not.

``--only-here`` stops after step 3 (and says which command does step 4), for a reference environment
on another machine. The few steps do not make a good model; the check is that both sides read the
same text from the same weights and image files.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = os.path.join("ofa_jax", "models", "ofa-ocr-zh-small")


def read_with_stock_pipeline(model_dir: str, images: list[str]) -> None:
    """Step 4, in the reference environment: one JSON line per image, ``{"path", "text"}``."""
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks

    pipe = pipeline(Tasks.ocr_recognition, model=model_dir, device="cpu")
    for path in images:
        print(json.dumps({"path": path, "text": pipe(path)["text"][0]}, ensure_ascii=False), flush=True)


def _run(cmd: list[str], **kw) -> str:
    print("$", " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
    p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, encoding="utf-8", **kw)
    if p.returncode:
        sys.exit(f"error: exit status {p.returncode}: {' '.join(cmd)}")
    return p.stdout


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python tools/reference/check_stock_pipeline.py",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference-python", help="the reference environment's python (e.g. .venv-reference/bin/python)")
    ap.add_argument("--workdir", help="where the run, the exports and the texts go (default: a new temporary dir)")
    ap.add_argument("--size", type=int, default=128, help="the square input side to fine-tune at (default 128)")
    ap.add_argument("--steps", type=int, default=4, help="fine-tuning steps (default 4)")
    ap.add_argument("--only-here", action="store_true", help="steps 1-3 only (no reference environment needed)")
    ap.add_argument("--read", nargs="+", metavar=("DIR", "IMAGE"), help=argparse.SUPPRESS)  # step 4, internal
    args = ap.parse_args(argv)
    if args.read:
        read_with_stock_pipeline(args.read[0], args.read[1:])
        return 0
    if not args.only_here and not (args.reference_python and os.path.isfile(args.reference_python)):
        ap.error("--reference-python PATH (the reference environment's python) is required, or --only-here")

    work = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="ofa_jax_stock_pipeline_"))
    run_dir, export, ms_dir = (os.path.join(work, n) for n in ("run", "model", "ms-model"))
    examples = os.path.join(ROOT, "examples")
    images = sorted(os.path.join(examples, n) for n in os.listdir(examples) if n.endswith((".png", ".jpg")))
    train = [sys.executable, "-m", "ofa_jax.train", "--config", "configs/ocr_base_fudanvi_scene.py",
             "--workdir", run_dir, f"--config.init.model_dir={SHIPPED}", "--config.data.image_height=0",
             f"--config.data.image_size={args.size}", "--config.data.train=render:printed,max_chars=12,n=256",
             "--config.data.val=", "--config.data.max_target_tokens=16", f"--config.total_steps={args.steps}",
             "--config.batch_size=4", "--config.eval.every=0", "--config.ckpt.async_save=False",
             "--config.log.tensorboard=False", "--config.mesh.num_devices=1"]
    _run(train)                                                                          # 1
    _run(train + ["--export", export, "--export_which", "last"])
    _run([sys.executable, "-m", "tools.convert_weights", "--to-pytorch", export, ms_dir])  # 2
    out = _run([sys.executable, "-m", "ofa_jax.decode", "--model", export, "--views", "id"] + images)  # 3
    ours = dict(line.split("\t", 1) for line in out.splitlines())
    with open(os.path.join(work, "ofa_jax.tsv"), "w", encoding="utf-8") as f:
        f.write(out)
    step4 = [args.reference_python or "REFERENCE_PYTHON", os.path.abspath(__file__), "--read", ms_dir] + images
    if args.only_here:
        print(f"wrote {ms_dir} and {os.path.join(work, 'ofa_jax.tsv')}; step 4: "
              + " ".join(shlex.quote(c) for c in step4))
        return 0
    theirs = {r["path"]: r["text"] for r in map(json.loads, _run(step4).splitlines())}  # 4
    differ = [p for p in images if ours.get(p) != theirs.get(p)]                         # 5
    for p in images:
        print(f"{'same' if p not in differ else 'DIFFERENT'}\t{os.path.basename(p)}\tofa-jax {ours.get(p)!r}"
              f"\tpipeline {theirs.get(p)!r}")
    print(f"{len(images) - len(differ)}/{len(images)} images read the same by ofa-jax and the stock pipeline "
          f"({args.size}x{args.size} model, {ms_dir})")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
