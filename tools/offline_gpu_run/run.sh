# On the GPU machine, from the repo root: train the shipped model's GPU config for a fixed time, export
# it in bfloat16 and leave it in $OUT as <=15 MB pieces. See README.md beside this file.
# Env (all optional):
#   TRAIN_S     training wall time, s (default 400); STEP_S: seconds the step count is sized for (320)
#   PROBE_B     batches the probe times (40); PY: python (python3); SKIP_PIP: wheels already installed
#   CONFIG      default configs/ocr_zh_small_gpu.py; EXTRA: more --config.* flags
#   INIT        a model dir to start from; default: INIT_TAR unpacked (default .devrun/init.tar.xz,
#               which prepare.sh packs from the shipped model), else the shipped model dir
#               ofa_jax/models/ofa-ocr-zh-small when it was sent; INIT_TAR=none: random weights
#   REUSE / MAX_REUSE  replay factor (default: measured by the probe, at most 8)
#   RATE_MARGIN the share of the probed rate the step count assumes (0.8)
#   STEP_RATE / COMPILE_S  the train step's lines/s and compile seconds from an earlier probe on this
#               kind of machine: the probe skips timing the step (one compilation less)
#   DTYPE       compute dtype (float32; bfloat16 keeps float32 parameters and optimizer state)
#   EVAL_N      val lines scored after the export (2000; 0 = none: the held-out test fonts are sent as
#               stubs, so the test split is scored back here)
#   WORKDIR     default /tmp/run; a run found there resumes, with its own step count, replay factor and
#               compute dtype
set -u
PY=${PY:-python3}; EXTRA=${EXTRA:-}; CONFIG=${CONFIG:-configs/ocr_zh_small_gpu.py}; INIT=${INIT:-}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
export DTYPE=${DTYPE:-float32}
TRAIN_S=${TRAIN_S:-400}; STEP_S=${STEP_S:-320}; PROBE_B=${PROBE_B:-40}; EVAL_N=${EVAL_N:-2000}
T0=$(date +%s)
[ -n "${SKIP_PIP:-}" ] || $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
mkdir -p /tmp/fonts && tar -C /tmp/fonts -xJf .devrun/fonts.tar.xz && export OFA_JAX_FONT_DIRS=/tmp/fonts
[ -f .devrun/words.txt.xz ] && export OFA_JAX_WORDS_DICT=$PWD/.devrun/words.txt.xz  # the `words` text source
if [ -z "$INIT" ] && [ "${INIT_TAR:-}" != none ]; then
  INIT_TAR=${INIT_TAR:-.devrun/init.tar.xz}
  if [ -f "$INIT_TAR" ]; then
    mkdir -p /tmp/init && tar -C /tmp/init -xJf "$INIT_TAR" && INIT=$(dirname "$(ls /tmp/init/*/config.json | head -1)")
  elif [ -f ofa_jax/models/ofa-ocr-zh-small/config.json ]; then
    INIT=ofa_jax/models/ofa-ocr-zh-small
  fi
fi
[ -n "$INIT" ] && EXTRA="--config.init.model_dir=$INIT $EXTRA" && echo "init: $INIT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; df -h /tmp | tail -1
$PY -c "import jax, flax, optax, orbax.checkpoint as o, grain, PIL, transformers, numpy; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__, 'pil', PIL.__version__, 'tf', transformers.__version__, 'np', numpy.__version__)" || exit 1
W=${WORKDIR:-/tmp/run}
if [ -f $W/config.json ]; then  # a run this machine started before: resume it with its own settings
  $PY -c "import json; c = json.load(open('$W/config.json')); print(c['total_steps'], c['data']['replay_reuse'], c['model']['dtype'])" > /tmp/probe.txt
else
  $PY tools/offline_gpu_run/probe.py $CONFIG $STEP_S $PROBE_B /tmp/probe.txt 2>&1 | grep -v "^WARNING:absl" | tee $OUT/probe.log
fi
read STEPS REUSE DT < /tmp/probe.txt || exit 1
DTYPE=${DT:-$DTYPE}  # a resumed run keeps its own
echo "setup $(( $(date +%s) - T0 ))s; total_steps $STEPS, replay reuse $REUSE"
RUN="--config $CONFIG --workdir $W --config.total_steps=$STEPS --config.data.replay_reuse=$REUSE --config.model.dtype=$DTYPE $EXTRA"
timeout -s TERM $TRAIN_S $PY -m ofa_jax.train $RUN 2>&1 | grep -v "^WARNING:absl" | tee $OUT/train.log
echo "trained $(( $(date +%s) - T0 ))s"
cp $W/metrics.jsonl $OUT/ 2>/dev/null
$PY -m ofa_jax.train $RUN --export /tmp/model --export_dtype bfloat16 2>&1 | grep -v "^WARNING:absl" | tail -3
ls -la /tmp/model && tar -C /tmp -cf - model | split -b 15m - $OUT/model.tar.
echo "exported $(( $(date +%s) - T0 ))s"
if [ "$EVAL_N" -gt 0 ]; then
  $PY -m ofa_jax.evaluate --model /tmp/model --split val --limit $EVAL_N --batch-size 256 --beam 1 \
    --data "render:mixed,max_chars=12,heldout_fonts=2,degraded_fraction=0.3" --output $OUT/eval_val.jsonl 2>&1 \
    | grep -v "^WARNING:absl" | tail -5
fi
echo "done $(( $(date +%s) - T0 ))s"
