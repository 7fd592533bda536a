"""Fine-tuning OFA-OCR: ``python -m ofa_jax.train`` (its use, run directory, faults and multi-host
set-up are described in ``__main__.py``). One file per part:

    runconfig.py   what the config means beyond its fields (model, dtype, steps, input size); ConfigError
    state.py       TrainState, optimizer and schedule, optim.freeze, build (abstract sharded state),
                   initial_state, the run's checkpointer
    inputs.py      record sources (synth: lines), size checks, per-shard pipeline settings, the sharded
                   iterator, host batch -> global arrays
    step.py        the train step: micro-batched loss and gradients, update, non-finite guard
    validation.py  decoding the validation split -> ACC/NED
    metrics.py     console, metrics.jsonl and TensorBoard
    loop.py        train_and_evaluate: resume, step, log, validate, checkpoint, preemption
    exporting.py   checkpoint -> model dir
    __main__.py    the command line

The names below are the package's interface (``from ofa_jax import train; train.build(...)``).
"""
from ofa_jax.train.exporting import export, saved_run_config
from ofa_jax.train.inputs import (RenderedLines, ShardedIterator, check_data_sizes, global_batch, load_config_source,
                                  load_source, make_train_iterator, train_pipeline_config)
from ofa_jax.train.loop import MAX_STEPS_IN_FLIGHT, _throttle, train_and_evaluate
from ofa_jax.train.metrics import MetricWriter
from ofa_jax.train.runconfig import ConfigError, compute_dtype, input_size, model_config, resolve_total_steps
from ofa_jax.train.state import (Setup, TrainState, build, check_freeze, checkpointer, frozen_predicate,
                                 initial_state, make_optimizer, param_path, polynomial_decay_with_warmup)
from ofa_jax.train.step import accum_loop, make_host_accum_step, make_train_step
from ofa_jax.train.validation import evaluate, replicated_batch, to_host
from ofa_jax.xla_options import compiler_options
