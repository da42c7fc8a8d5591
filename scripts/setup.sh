#!/usr/bin/env bash
# Create .venv (if needed) and install lume-ray with pinned, tested versions. Idempotent and quick
# when everything is already installed. Torch 2.13.0 goes in first so pip never pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"  # quiet DeepSpeed's accelerator probe on CPU machines
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
. .venv/bin/activate
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}"

# DeepSpeed JIT-compiles its CPU communication op (deepspeed_shm_comm) the first time a job runs on CPU: ~100 CPU-s
# (60 s here) that would otherwise land in the first job, or the first test, of a fresh checkout. Built once here,
# through DeepSpeed's public accelerator API, into the directory the jobs load it from.
build_cpu_ops() {
  [ "$DS_ACCELERATOR" = cpu ] || return 0
  [ -f "$TORCH_EXTENSIONS_DIR/deepspeed_shm_comm/deepspeed_shm_comm.so" ] && return 0
  echo "[setup] building DeepSpeed's CPU communication op (once, ~1 minute)"
  python -c "from deepspeed.accelerator import get_accelerator; get_accelerator().create_op_builder('ShareMemCommBuilder').load(verbose=False)" \
    >/dev/null 2>&1 || echo "[setup] warning: could not prebuild deepspeed_shm_comm (the first CPU job builds it)" >&2
}

stamp=.venv/.lume-ray-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  build_cpu_ops
  echo "[setup] .venv up to date"
  exit 0
fi
echo "[setup] installing (first time takes a few minutes)"
python -m pip install -q --upgrade pip 2>&1 | grep -v -i warning || true
python -m pip install -q "torch==2.13.0" 2>&1 | grep -v -i warning || true
python -m pip install -q -c constraints.txt -e ".[dev,cluster,tracking]" 2>&1 | grep -v -i warning || true
python -c "import lume_ray, torch, ray, deepspeed, transformers, optuna" \
  || { echo "[setup] install failed" >&2; exit 1; }
echo "$want" > "$stamp"
build_cpu_ops
echo "[setup] done: $(python -c 'import torch,ray,deepspeed,transformers;print(f"torch {torch.__version__}, ray {ray.__version__}, deepspeed {deepspeed.__version__}, transformers {transformers.__version__}")')"
