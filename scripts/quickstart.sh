#!/usr/bin/env bash
# Set up (if needed) and run the main job on the embedded default: synthetic LUME data -> tiny
# OLMo target -> per-algorithm unlearning sweep -> Pareto report. Prints where the report is.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export RAY_USAGE_STATS_ENABLED=0 DS_ACCELERATOR=cpu
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}"
lume-ray quickstart "$@"
