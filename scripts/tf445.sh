#!/usr/bin/env bash
# Build .cache/tf445 (if needed): transformers 4.45.2, the challenge's pin, on top of .venv's torch, for the tests
# that compare lume-ray with the challenge's own environment (tests/test_compat.py, tests/test_exact_bf16.py).
# A venv whose .pth file puts .venv's site-packages after its own: transformers 4.45.2 and the tokenizers /
# huggingface_hub it needs are installed in it and shadow .venv's; everything else (torch included) is .venv's.
# Idempotent: a stamp records what was installed; ~30 s the first time, nothing after.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_PY=${LUME_BASE_PYTHON:-.venv/bin/python}   # the interpreter whose packages the environment reuses
DEST=${LUME_TF4_ENV:-.cache/tf445}
PINS="transformers==4.45.2 tokenizers==0.20.3 huggingface_hub==0.36.2"
want="$PINS $("$BASE_PY" -c 'import sys, importlib.metadata as m; print(sys.version.split()[0], m.version("torch"))')"
stamp="$DEST/.lume-tf445"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[tf445] $DEST up to date"
  exit 0
fi
echo "[tf445] building $DEST ($PINS, torch from $BASE_PY)"
rm -rf "$DEST"
"$BASE_PY" -m venv --without-pip "$DEST"
site=$("$DEST/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$BASE_PY" -c 'import site; print(site.getsitepackages()[0])' > "$site/lume-base.pth"
# .venv's pip, installing into the new environment: it sees .venv's packages through the .pth and adds only
# what 4.45.2 needs in other versions (it never touches .venv: "outside environment").
"$BASE_PY" -m pip --python "$DEST/bin/python" install -q --disable-pip-version-check $PINS 2>&1 \
  | grep -v -i -E "warning|dependency resolver|requires|not uninstalling|can't uninstall|^$" || true
"$DEST/bin/python" -c 'import transformers, torch; assert transformers.__version__ == "4.45.2"' \
  || { echo "[tf445] build failed" >&2; exit 1; }
echo "$want" > "$stamp"
echo "[tf445] done"
