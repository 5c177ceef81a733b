#!/usr/bin/env bash
# Run the whole JPO test suite (slow end-to-end tests included), after setting up.
# Extra arguments go to one pytest run, e.g. `scripts/test.sh -m "not slow"` for the fast tier.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${JPO_VENV:-.venv}"
"$VENV/bin/ruff" check jpo tests benchmarks
"$VENV/bin/mypy"
# With arguments: one pytest run with them (e.g. `-m "not slow"` for the fast tier).
# Without (CI): every tier, one after the other; any failure fails the run.
#   1. the suite: product, simulation, evaluation, research and slow end-to-end tests
#      (pyproject's addopts leaves out the rerun tier);
#   2. the rerun tier: every command of BENCHMARKS.md's rerun block at a tiny size.
run_pytest() {
  set +e
  "$VENV/bin/python" -m pytest "$@"
  local rc=$?
  set -e
  if [ "$rc" = "5" ]; then
    echo "test: pytest collected no tests ($*)" >&2
    return 1
  fi
  return "$rc"
}
if [ "$#" -gt 0 ]; then
  run_pytest "$@"
  exit $?
fi
rc=0
run_pytest || rc=$?
echo "test: tier 2 of 2: the rerun tier (pytest -m rerun)"
run_pytest -m rerun || rc=$?
exit "$rc"
