#!/usr/bin/env bash
# Run the whole JPO test suite (slow end-to-end tests included), after setting up.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"` for the fast tier.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${JPO_VENV:-.venv}"
"$VENV/bin/ruff" check jpo envs serve tests benchmarks
"$VENV/bin/mypy"
set +e
"$VENV/bin/python" -m pytest "$@"
rc=$?
set -e
if [ "$rc" = "5" ]; then
  echo "test: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
