# Here, before a GPU loan, from the repo root with ofa-jax installed: build what run.sh needs on the
# offline GPU machine, which has JAX, Flax, Optax, Orbax, Pillow and transformers but no CJK fonts and
# none of the packages below (its image's list: the device tool's KINDS.md).
#   .devrun/fonts.tar.xz  the CJK fonts found here, subset to the lines' characters (~23.5 MB)
#   .whl/*.whl            the missing packages, at the versions installed here, for the machine's Python
#   .devrun/words.txt.xz  jieba's word frequencies for the `words` text source (1.5 MB; the jieba wheel
#                         is 19 MB, over what `carry` can take beside the rest)
#   .devrun/init.tar.xz   the shipped model dir (ofa_jax/models/ofa-ocr-zh-small, 37 MB) xz-compressed
#                         (~24 MB), the run's start; the model dir itself stays out of the sent tree
# Both are git-ignored through .git/info/exclude (they are sent with the `run` tool's `carry`).
# Env: PYV (the GPU machine's Python, default 3.12), FONTS_TMP (default /tmp/gpu_fonts).
set -eu
PYV=${PYV:-3.12}; FONTS_TMP=${FONTS_TMP:-/tmp/gpu_fonts}
PY=${PY:-python}
mkdir -p .devrun .whl .git/info
for p in /.devrun/ /.whl/; do grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >> .git/info/exclude; done

# Fonts: the two held-out test fonts go as stubs (their names keep the sorted font list, and with it the
# split, the same; the test split is scored back here).
$PY -c "import fontTools" 2>/dev/null || $PY -m pip install -q fonttools
rm -rf "$FONTS_TMP" && $PY tools/offline_gpu_run/subset_fonts.py "$FONTS_TMP" --probe-only 2
tar -C "$FONTS_TMP" -cf - . | xz -9e -T0 > .devrun/fonts.tar.xz  # -9e: ~0.2 MB less, it all must fit 64 MiB

# Wheels: what ofa-jax needs to read `render:` data and train that the GPU image lacks. hsk-sentences-audio
# (the HSK sentence pool) brings pydantic; tensorflow-datasets the rest of the list.
PKGS="array-record dm-tree docstring-parser googleapis-common-protos grain hsk-sentences-audio
immutabledict lmdb ml-collections portpicker promise simple-parsing tensorboardX tensorflow-datasets
tensorflow-metadata termcolor toml zhconv pydantic pydantic-core annotated-types typing-inspection"
rm -f .whl/*.whl
for name in $PKGS; do
  ver=$($PY -c "import importlib.metadata as m; print(m.version('$name'))")
  if ! $PY -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl "$name==$ver" 2>/dev/null; then
    $PY -m pip wheel -q --no-deps -w .whl "$name==$ver"   # sdist only (pure Python): build it here
  fi
done
$PY -c "import lzma; from ofa_jax.data import corpus; p = corpus.words_dict_path(); b = p.read_bytes()
open('.devrun/words.txt.xz', 'wb').write(b if p.suffix == '.xz' else lzma.compress(b, preset=9))"
if [ -f ofa_jax/models/ofa-ocr-zh-small/config.json ]; then
  tar -C ofa_jax/models -cJf .devrun/init.tar.xz ofa-ocr-zh-small
fi
du -sh .devrun/* .whl
