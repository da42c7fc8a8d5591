#!/usr/bin/env bash
# Set up (if needed) and run the test suite: lint, types, then pytest (CPU only; GPU tests skip).
#   bash scripts/test.sh           everything, as CI runs it (two pytest-xdist workers)
#   bash scripts/test.sh --fast    the edit loop: no test that starts Ray or takes more than ~10 s (-m "not slow and not ray")
# Further arguments go to pytest (e.g. bash scripts/test.sh --fast tests/test_report.py -k front).
set -euo pipefail
cd "$(dirname "$0")/.."
fast=0
if [ "${1:-}" = "--fast" ]; then fast=1; shift; fi
bash scripts/setup.sh
bash scripts/tf445.sh || echo "[test] warning: no transformers 4.45 environment; its comparisons skip (fail under CI)" >&2
. .venv/bin/activate
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 DS_ACCELERATOR=cpu
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}"
ruff check lume_ray tests benchmarks
mypy
lint-imports  # .importlinter: imports point one way, from the command line down to data
if [ "$fast" = 1 ]; then
  python -m pytest -q -n 2 -m "not slow and not ray" --durations=10 "$@"
else
  bash scripts/check_bad_inputs.sh  # every bad input in one process, with the count that met the promise
  python -m pytest -q -n 2 --dist worksteal --durations=15 --ignore=tests/test_bad_inputs.py "$@"
fi
