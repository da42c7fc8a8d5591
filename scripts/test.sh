#!/usr/bin/env bash
# Set up (if needed) and run the test suite: lint, types, then pytest (CPU only; GPU tests skip).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/tf445.sh || echo "[test] warning: no transformers 4.45 environment; its comparisons skip (fail under CI)" >&2
. .venv/bin/activate
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 DS_ACCELERATOR=cpu
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}"
ruff check lume_ray tests benchmarks
mypy
python -m pytest -q -n 2 --dist worksteal --durations=15 "$@"
