# On the host, from the root of the copied clone (with the .offline/ that prepare.sh packed): install the
# wheels, train for a fixed wall time, export the model in bfloat16 to $OUT/model and score it. See
# README.md beside this file.
# Env (all optional):
#   TRAIN_S     training wall time, s (default 1800); then SIGTERM: the run saves and exits cleanly
#   STEP_S      seconds the step count is sized for (default 80% of TRAIN_S: validation and saving take the rest)
#   CONFIG      default configs/ocr_zh_small_lines_gpu.py (the shipped model continued on 2-40-character lines); EXTRA: more ofa_jax.train flags (--config.seed=1 ...)
#   INIT        model dir to start from (default: .offline/init, else the shipped model); none: random weights
#   OUT         results (default offline_out): model/, probe.log, train.log, metrics.jsonl, eval.jsonl,
#               indep_val.jsonl
#   WORKDIR     the run directory (default runs/offline); a run found there resumes with its own step
#               count, replay factor and compute dtype
#   DTYPE       float32 (default) or bfloat16 compute (parameters and optimizer state stay float32)
#   PROBE_B     batches the probe renders to time the input (40); MIN_STEPS (200)
#   REUSE, MAX_REUSE  replay factor (default: train-step rate / rendering rate, at most MAX_REUSE = 8)
#   RATE_MARGIN share of the probed rate the step count assumes (0.8)
#   STEP_RATE, COMPILE_S  the step's lines/s and compile seconds from an earlier probe on the same kind of
#               host: the probe skips timing the step (one compilation less)
#   EVAL_N      lines of EVAL_SPLIT (default test) scored after the export (2000; 0: none)
#   PACK        what prepare.sh packed (default .offline); SITE: where its wheels are installed
#               (default $PACK/site); SKIP_PIP=1: the packages are installed already
#   CHECK_FONTS=0  skip the check that the fonts found here are the packed ones; PY (default python3)
set -u
PY=${PY:-python3}; EXTRA=${EXTRA:-}; CONFIG=${CONFIG:-configs/ocr_zh_small_lines_gpu.py}; INIT=${INIT:-}
PACK=${PACK:-.offline}; SITE=${SITE:-$PACK/site}; OUT=${OUT:-offline_out}; W=${WORKDIR:-runs/offline}
case $PACK in /*) ;; *) PACK=$PWD/$PACK ;; esac
case $SITE in /*) ;; *) SITE=$PWD/$SITE ;; esac
TRAIN_S=${TRAIN_S:-1800}; STEP_S=${STEP_S:-$((TRAIN_S * 4 / 5))}; PROBE_B=${PROBE_B:-40}
EVAL_N=${EVAL_N:-2000}; EVAL_SPLIT=${EVAL_SPLIT:-test}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 DTYPE=${DTYPE:-float32}
T0=$(date +%s)
mkdir -p "$OUT"
if [ -z "${SKIP_PIP:-}" ] && [ -d "$PACK/wheels" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$PACK"/wheels/*.whl || exit 1
  export PYTHONPATH=$SITE:$PWD
else
  export PYTHONPATH=$PWD
fi
if [ -f "$PACK/fonts/fonts.txt" ]; then
  export OFA_JAX_FONT_DIRS=$PACK/fonts FONTS_LIST=$PACK/fonts/fonts.txt
fi
if [ -z "$INIT" ]; then
  if [ -f "$PACK/init/config.json" ]; then INIT=$PACK/init; else INIT=ofa_jax/models/ofa-ocr-zh-small; fi
fi
[ "$INIT" != none ] && EXTRA="--config.init.model_dir=$INIT $EXTRA" && echo "init: $INIT"
$PY -c "import jax, flax, optax, grain; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__)" || exit 1
nproc; df -h /tmp | tail -1
if [ -f "$W/config.json" ]; then  # a run started here before: resume it with its own settings
  $PY -c "import json; c = json.load(open('$W/config.json')); print(c['total_steps'], c['data']['replay_reuse'], c['model']['dtype'])" > "$OUT/probe.txt"
else
  $PY tools/offline_gpu_run/probe.py "$CONFIG" "$STEP_S" "$PROBE_B" "$OUT/probe.txt" 2>&1 | grep -v "^WARNING:absl" | tee "$OUT/probe.log"
fi
read -r STEPS REUSE DT < "$OUT/probe.txt" || exit 1
DTYPE=${DT:-$DTYPE}  # a resumed run keeps its own
echo "setup $(( $(date +%s) - T0 ))s; total_steps $STEPS, replay reuse $REUSE, $DTYPE compute"
RUN="--config $CONFIG --workdir $W --config.total_steps=$STEPS --config.data.replay_reuse=$REUSE --config.model.dtype=$DTYPE $EXTRA"
timeout -s TERM "$TRAIN_S" $PY -m ofa_jax.train $RUN 2>&1 | grep -v "^WARNING:absl" | tee "$OUT/train.log"
echo "trained $(( $(date +%s) - T0 ))s"
cp "$W/metrics.jsonl" "$OUT/" 2>/dev/null
rm -rf "$OUT/model"
$PY -m ofa_jax.train $RUN --export "$OUT/model" --export_dtype bfloat16 2>&1 | grep -v "^WARNING:absl" | tail -3
[ -f "$OUT/model/params.safetensors" ] || { echo "no export in $OUT/model" >&2; exit 1; }
echo "exported $(( $(date +%s) - T0 ))s: $OUT/model"
if [ "$EVAL_N" -gt 0 ]; then
  DATA=$($PY -c "import importlib.util as u; s = u.spec_from_file_location('c', '$CONFIG'); m = u.module_from_spec(s); s.loader.exec_module(m); print(m.get_config().data.val)")
  $PY -m ofa_jax.evaluate --model "$OUT/model" --split "$EVAL_SPLIT" --limit "$EVAL_N" --batch-size 256 --views id \
    --data "$DATA" --output "$OUT/eval.jsonl" 2>&1 | grep -v "^WARNING:absl" | tail -5
  if [ -d bench/data/indep ]; then  # the independent dev set (bench/RESULTS_indep.md): plain decoding
    $PY bench/indep_eval.py --model "$OUT/model" --split val --engines plain --batch-size 64 --limit "$EVAL_N" \
      --output "$OUT/indep_val.jsonl" 2>&1 | grep -v "^WARNING:absl" | tail -16
  fi
fi
echo "done $(( $(date +%s) - T0 ))s"
