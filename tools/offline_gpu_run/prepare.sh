# Here, with internet, from the repo root with ofa-jax installed (`pip install -e ".[synth]"`): pack what
# run.sh needs on a host without internet into $OUT (default .offline/). See README.md beside this file.
#   $OUT/wheels/    the packages ofa-jax needs (wheels.py), at the versions installed here, for the host's
#                   Python and platform; with ACCEL also the JAX build for its accelerator
#   $OUT/fonts/     the CJK fonts rendering finds here, and fonts.txt listing them (their order decides
#                   which fonts render the held-out test split; run.sh checks the host finds the same)
#   $OUT/init/      the model dir training starts from
# Env (all optional):
#   PYV       the host's Python version (default: this Python's, e.g. 3.11)
#   PLATFORM  the host's pip platform tags (default: manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64)
#   ACCEL     cuda | tpu | none (default): also pack jax[cuda13] or jax[tpu] at this jax's version, with
#             its dependencies (for a host whose Python has no JAX for its accelerator)
#   HAVE      a file with the host's `pip list --format=freeze`: the packages named there are not packed
#   EXTRAS    ofa-jax extras to pack (default synth: the sentence and word sources, a font)
#   INIT      the model dir to start from (default ofa_jax/models/ofa-ocr-zh-small, the shipped model;
#             none: random weights)
#   SUBSET_FONTS=1  keep only the glyphs the lines can use (fonts about 5x smaller; installs fonttools)
#   PY        python (default python)
set -eu
PY=${PY:-python}; OUT=${OUT:-.offline}; ACCEL=${ACCEL:-none}; EXTRAS=${EXTRAS:-synth}
PYV=${PYV:-$($PY -c 'import sys; print("%d.%d" % sys.version_info[:2])')}
PLATFORM=${PLATFORM:-manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64}
INIT=${INIT:-ofa_jax/models/ofa-ocr-zh-small}
PLAT_ARGS=""; for p in $PLATFORM; do PLAT_ARGS="$PLAT_ARGS --platform $p"; done
mkdir -p "$OUT/wheels"
if [ -d .git ]; then  # keep the pack (when inside the clone) and run.sh's results out of git status
  mkdir -p .git/info
  case $OUT in /*) excl=/offline_out/ ;; *) excl="/${OUT#./}/ /offline_out/" ;; esac
  for p in $excl; do grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >> .git/info/exclude; done
fi

# Wheels: one per package at the version installed here; a package with no wheel (pure-Python sdist) is
# built here.
$PY tools/offline_gpu_run/wheels.py --extras "$EXTRAS" ${HAVE:+--have "$HAVE"} > "$OUT/requirements.txt"
echo "$(wc -l < "$OUT/requirements.txt") packages for Python $PYV"
while read -r req; do
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" $PLAT_ARGS -d "$OUT/wheels" "$req" 2>/dev/null \
    || $PY -m pip wheel -q --no-deps -w "$OUT/wheels" "$req"
done < "$OUT/requirements.txt"
if [ "$ACCEL" != none ]; then
  case "$ACCEL" in cuda) extra=cuda13 ;; tpu) extra=tpu ;; *) echo "ACCEL: cuda, tpu or none" >&2; exit 2 ;; esac
  JAXV=$($PY -c "import jax; print(jax.__version__)")
  $PY -m pip download -q --only-binary=:all: --python-version "$PYV" $PLAT_ARGS -d "$OUT/wheels" \
    -c "$OUT/requirements.txt" "jax[$extra]==$JAXV"
fi

# Fonts: the files rendering finds here, under their own names (the names decide the order).
rm -rf "$OUT/fonts" && mkdir -p "$OUT/fonts"
$PY - "$OUT/fonts" <<'EOF'
import shutil, sys
from ofa_jax.data import render
fonts = render.find_cjk_fonts()
for f in fonts:
    shutil.copy(f, sys.argv[1])
open(sys.argv[1] + "/fonts.txt", "w").write("".join(render.font_key(f) + "\n" for f in fonts))
print(len(fonts), "fonts:", " ".join(render.font_key(f) for f in fonts))
EOF
if [ "${SUBSET_FONTS:-0}" = 1 ]; then
  $PY -c "import fontTools" 2>/dev/null || $PY -m pip install -q fonttools
  $PY tools/offline_gpu_run/subset_fonts.py "$OUT/fonts"
fi

rm -rf "$OUT/init"
if [ "$INIT" != none ]; then
  cp -r "$INIT" "$OUT/init"
fi
du -sh "$OUT"/*
