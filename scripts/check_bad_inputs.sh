#!/usr/bin/env bash
# Try every bad input of tests/test_bad_inputs.py (each command: YAML values, --set overrides, flags, data files,
# model directories, addresses) in one process and print, per input, the one line the user gets, then how many met
# the promise: exit 2, one line `lume-ray: error: ...` naming the key, flag or file, nothing written.
# scripts/test.sh runs it; on its own: bash scripts/check_bad_inputs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${VIRTUAL_ENV:-}" ] || { bash scripts/setup.sh >/dev/null; . .venv/bin/activate; }
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}" RAY_USAGE_STATS_ENABLED=0 DS_ACCELERATOR=cpu
out=$(mktemp)
trap 'rm -f "$out"' EXIT
rc=0
python -m pytest -q -p no:xdist -s tests/test_bad_inputs.py "$@" >"$out" 2>&1 || rc=$?
if [ "$rc" = 0 ]; then grep -E "^bad inputs: " "$out"; else cat "$out"; fi
exit "$rc"
