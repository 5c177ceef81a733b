#!/usr/bin/env bash
# Run JPO's main job end to end on embedded defaults, after setting up.
# Extra arguments go to `jpo demo` (see `jpo demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${JPO_VENV:-.venv}"
exec "$VENV/bin/jpo" demo "$@"
