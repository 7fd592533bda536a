"""Fine-tune (or train from scratch) OFA-OCR: one sharded train loop with Orbax checkpoints.

    python -m ofa_jax.train --config configs/ocr_cpu_synthetic.py --workdir runs/cpu [--config.key=value ...]
    python -m ofa_jax.train --config configs/ocr_cpu_synthetic.py --workdir runs/cpu --export OUT [--export_which best]

The config file is a Python file whose ``get_config()`` returns an ``ml_collections.ConfigDict``
(``configs/*.py``); any field can be overridden with ``--config.a.b=value``. A run writes to WORKDIR:

    checkpoints/<step>/{state,data}   Orbax: train state + data iterator state (ofa_jax.checkpointing)
    metrics.jsonl                     one JSON object per logged step / validation
    tb/                               TensorBoard event files (when tensorboardX is installed)
    config.json                       the resolved config of the run

Start: if WORKDIR has a checkpoint the run resumes from the latest one (same batches, same dropout
masks: the per-step rng is ``fold_in(seed, step)``); otherwise parameters come from
``config.init.model_dir`` (an ofa-jax model dir, e.g. a converted ModelScope checkpoint) or from a
random init of ``config.model.preset``. SIGTERM (preemption) or Ctrl-C saves a checkpoint at the end of
the step and exits with 0; a second Ctrl-C stops at once (exit 130) and the run resumes from its last
checkpoint.
``--export`` rebuilds the model from WORKDIR's ``config.json``, so it needs no training flags.

Input: the grain pipeline (``ofa_jax.data.pipeline``), or with ``data.replay_reuse`` > 0 the replay
buffer (``ofa_jax.data.replay``: each prepared line drawn that many times on average, for accelerators
that would wait on the input); both resume exactly.

Faults (each is one ``error:``/``warning:`` line, never a traceback, from the command line):

* non-finite loss or gradients: the update is never applied; ``nan_policy="stop"`` (default) saves a
  checkpoint (finite parameters) and exits with 3, ``"skip"`` logs the step and goes on;
* a checkpoint that cannot be written (disk full, quota): exit 4, the partial step is removed, earlier
  checkpoints are intact; a save interrupted by a kill leaves only a tmp directory that is ignored:
  the next run resumes from the last complete step (an unreadable step is moved aside to
  ``corrupt-<step>`` and the one before it is used);
* data: an empty training/validation set, or one with fewer records than one batch, exits with 2;
  unreadable records are skipped (``data.bad_records="skip"``) and named; truncated labels,
  out-of-vocabulary characters (``<unk>``), empty labels and skipped records are counted in the log
  and in ``metrics.jsonl`` (``data/...``); more than half of the records unreadable exits with 2.

Compilation: the compiled train step is kept in JAX's persistent cache (``config.compilation_cache``:
"auto" = ``$OFA_JAX_CACHE_DIR`` or ``~/.cache/ofa_jax/jax_cache``; ``$JAX_COMPILATION_CACHE_DIR`` wins;
"" turns it off), so a resumed or restarted run with the same config and devices skips compiling
(micro on 2 CPU cores: 49 s to the end of a 2-step run without it, 21 s with a warm cache). On several
hosts point it at shared storage (``gs://...``), since JAX writes entries from process 0 only.

Sharding: ``config.mesh`` = sizes of the ``data``/``fsdp``/``tensor`` axes (-1: the rest). Parameters
and optimizer state are laid out by ``ofa_jax.partitioning``'s logical axis rules; the batch is split
over data x fsdp. ``train_step`` is one ``jax.jit`` with in/out shardings and the state donated.

Multi-host (TPU pod slice, several GPU hosts, or several CPU processes): run the same command on
every host with the coordinator flags; each host reads its own shard of the training data
(``shard_index = process_index``) and only process 0 logs and exports:

    # on host i of N (GPU clusters / CPU); on Cloud TPU pods and SLURM ``--distributed`` alone suffices
    python -m ofa_jax.train --config configs/ocr_base_fudanvi_scene.py --workdir gs://bucket/run \\
        --distributed --coordinator_address=HOST0:1234 --num_processes=N --process_id=i

The global batch ``config.batch_size`` is split evenly over processes; the workdir must be shared
(a bucket or a network file system) so that Orbax can write one checkpoint from all hosts.
"""
from __future__ import annotations

import json
import os
import sys

import jax

from ofa_jax.checkpointing import CheckpointReadError, CheckpointWriteError
from ofa_jax.data.report import DataError
from ofa_jax.train.exporting import export
from ofa_jax.train.loop import train_and_evaluate
from ofa_jax.train.runconfig import ConfigError


def _quiet_library_tracebacks():
    """Orbax logs a failed background save at ERROR with a traceback before our one-line error: keep
    its message, drop the traceback (``--verbosity`` given on the command line keeps everything)."""
    import logging

    class _NoTraceback(logging.Filter):
        def filter(self, record):
            if "orbax" in (record.pathname or ""):
                record.exc_info, record.exc_text = None, None
            return True

    logging.getLogger("absl").addFilter(_NoTraceback())


def main(argv=None):
    from absl import flags
    from ml_collections import config_flags

    flags_ = flags.FLAGS
    config_flags.DEFINE_config_file("config", None, "config file (configs/*.py)", lock_config=True)
    flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, TensorBoard)")
    flags.DEFINE_string("export", None, "export a checkpoint of --workdir to this model dir and exit")
    flags.DEFINE_enum("export_which", "best", ["best", "last"], "which checkpoint --export writes")
    flags.DEFINE_enum("export_dtype", "float32", ["float32", "bfloat16"],
                      "parameter dtype --export writes (bfloat16 halves the dir; BatchNorm statistics stay float32)")
    flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() (multi-host)")
    flags.DEFINE_string("coordinator_address", None, "multi-host: HOST:PORT of process 0")
    flags.DEFINE_integer("num_processes", None, "multi-host: number of processes")
    flags.DEFINE_integer("process_id", None, "multi-host: this process's index")
    flags.mark_flags_as_required(["config", "workdir"])

    def run(_):
        from absl import logging as absl_logging

        from ofa_jax.modeldir import ModelDirError

        if not flags_["verbosity"].present:  # Orbax logs every save at INFO
            absl_logging.set_verbosity(absl_logging.WARNING)
            _quiet_library_tracebacks()
        if flags_.distributed or flags_.coordinator_address:
            jax.distributed.initialize(coordinator_address=flags_.coordinator_address,
                                       num_processes=flags_.num_processes, process_id=flags_.process_id)
        cfg = flags_.config
        cache = cfg.get("compilation_cache", "auto")
        if cache and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
            from ofa_jax.recognizer import enable_compilation_cache

            enable_compilation_cache(None if cache == "auto" else cache)
        if flags_.export:
            step = export(cfg, flags_.workdir, flags_.export, flags_.export_which, flags_.export_dtype)
            print(f"exported step {step} ({flags_.export_which}, {flags_.export_dtype}) to {flags_.export}")
            return 0
        try:
            out = train_and_evaluate(cfg, flags_.workdir)
        except FloatingPointError:
            return 3  # the message is logged
        except KeyboardInterrupt:
            print("interrupted: stopped without saving; the same command resumes from the last checkpoint",
                  file=sys.stderr)
            return 130
        except CheckpointWriteError as e:
            print(f"error: {e}", file=sys.stderr)
            return 4
        except (DataError, CheckpointReadError, ModelDirError, ConfigError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if jax.process_index() == 0:
            print(json.dumps({"final": {"step": out["step"], **{f"train/{k}": v for k, v in out["train"].items()},
                                        **{f"val/{k}": v for k, v in out["val"].items()}}}))
        return 0

    from ofa_jax.cli import absl_run

    absl_run(run, argv)


if __name__ == "__main__":
    main()
