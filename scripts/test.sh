#!/usr/bin/env bash
# Run JPO's checks and every test tier, after setting up (what CI runs through .ci/run).
#   scripts/test.sh            lint (ruff, mypy, the import contract), then every tier in turn,
#                              naming each; fails if any step fails (all still run)
#   scripts/test.sh ARGS...    one pytest run with ARGS, e.g. `-m sim` or tests/stage
# The tiers (tests/conftest.py gives every test one): fast (the default `pytest` run: the
# product's tests without real services), sim (simulation, training, evaluation), research
# (research/tests, tests/benchmarks), slow (real Prometheus, Ray, Serve), rerun (every rerun
# command of BENCHMARKS.md at a tiny size).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${JPO_VENV:-.venv}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# One oracle cache for every tier and the processes their tests start (jpo.sim.oracle):
# each workload's oracle is searched once per CI run instead of once per test and command.
if [ -z "${JPO_ORACLE_CACHE:-}" ]; then
  JPO_ORACLE_CACHE="$(mktemp -d -t jpo-oracle-cache.XXXXXX)"
  export JPO_ORACLE_CACHE
  trap 'rm -rf "$JPO_ORACLE_CACHE"' EXIT
fi

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
step() {  # step NAME COMMAND...: run, time and name one step; remember a failure
  local name="$1" start=$SECONDS status=0
  shift
  echo "test: == $name"
  "$@" || status=$?
  echo "test: == $name: $([ "$status" = 0 ] && echo passed || echo "FAILED ($status)") in $((SECONDS - start)) s"
  [ "$status" = 0 ] || rc=1
}
lint_paths=()
for path in jpo tests scripts benchmarks research; do
  [ -d "$path" ] && lint_paths+=("$path")
done
step "lint: ruff" "$VENV/bin/ruff" check "${lint_paths[@]}"
step "lint: mypy" "$VENV/bin/mypy"
step "lint: import layers (lint-imports)" "$VENV/bin/lint-imports"
step "lint: import cycles" "$VENV/bin/python" scripts/architecture_metrics.py --cycles
step "tier 1 of 5: fast (pytest)" run_pytest
step "tier 2 of 5: sim (pytest -m sim)" run_pytest -m sim
if [ -d research/tests ] || [ -d tests/benchmarks ]; then
  step "tier 3 of 5: research (pytest -m research)" run_pytest -m research
fi
step "tier 4 of 5: slow (pytest -m \"slow and not research and not rerun\")" run_pytest -m "slow and not research and not rerun"
step "tier 5 of 5: rerun (pytest -m rerun)" run_pytest -m rerun
exit "$rc"
