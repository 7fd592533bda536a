# On the GPU machine, from the repo root: train the shipped model's GPU config for a fixed time, export
# it in bfloat16 and leave it in $OUT as <=15 MB pieces. See README.md beside this file.
# Env: TRAIN_S (training wall time, s), STEP_S (seconds the step count is sized for), PROBE_B (batches
# timed by the probe), PY (python), EXTRA (more --config.* flags), SKIP_PIP (wheels already installed).
set -u
PY=${PY:-python3}; EXTRA=${EXTRA:-}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
TRAIN_S=${TRAIN_S:-400}; STEP_S=${STEP_S:-320}; PROBE_B=${PROBE_B:-60}
T0=$(date +%s)
[ -n "${SKIP_PIP:-}" ] || $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
mkdir -p /tmp/fonts && tar -C /tmp/fonts -xJf .devrun/fonts.tar.xz && export OFA_JAX_FONT_DIRS=/tmp/fonts
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
$PY -c "import jax, flax, optax, orbax.checkpoint as o, grain, PIL, transformers, numpy; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__, 'pil', PIL.__version__, 'tf', transformers.__version__, 'np', numpy.__version__)" || exit 1
$PY tools/offline_gpu_run/probe.py $STEP_S $PROBE_B /tmp/steps.txt || exit 1; STEPS=$(cat /tmp/steps.txt)
echo "setup $(( $(date +%s) - T0 ))s; total_steps $STEPS"
timeout -s TERM $TRAIN_S $PY -m ofa_jax.train --config configs/ocr_zh_small_gpu.py --workdir /tmp/run --config.total_steps=$STEPS $EXTRA 2>&1 | grep -v "^WARNING:absl" | tee $OUT/train.log
echo "trained $(( $(date +%s) - T0 ))s"
cp /tmp/run/metrics.jsonl $OUT/ 2>/dev/null
$PY -m ofa_jax.train --config configs/ocr_zh_small_gpu.py --workdir /tmp/run --config.total_steps=$STEPS $EXTRA --export /tmp/model --export_dtype bfloat16 2>&1 | grep -v "^WARNING:absl" | tail -3
ls -la /tmp/model && tar -C /tmp -cf - model | split -b 15m - $OUT/model.tar.
echo "done $(( $(date +%s) - T0 ))s"
