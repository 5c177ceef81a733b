#!/usr/bin/env bash
# Run JPO's checks and every test tier, after setting up (what CI runs through .ci/run).
#   scripts/test.sh            lint (ruff, mypy, the import contract) and every tier, naming
#                              each; fails if any step fails (all still run)
#   scripts/test.sh ARGS...    one pytest run with ARGS, e.g. `-m sim` or tests/stage
# The tiers (tests/conftest.py gives every test one): fast (the default `pytest` run: the
# product's tests without real services), sim (simulation, training, evaluation), research
# (research/tests, tests/benchmarks), slow (real Prometheus, Ray, Serve), rerun (every rerun
# command of BENCHMARKS.md at a tiny size).
# The steps run in two lanes side by side (JPO_TEST_LANES=2, the default: CI's 2 cores;
# JPO_TEST_LANES=1 runs them one after another, printing as they go): lint then the slow
# tier, which mostly waits on real services (Prometheus scrapes, simulated pods' wall time,
# Ray and Serve start-up), beside the fast, sim, research and rerun tiers, which mostly
# compute. Each step's output is printed whole when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${JPO_VENV:-.venv}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# One oracle cache for every tier and the processes their tests start (jpo.sim.oracle):
# each workload's oracle is searched once per CI run instead of once per test and command.
# Both lanes share it (writes are atomic; a search both lanes start at once is only repeated).
made_cache="" logs="" lane_pid=""
cleanup() {  # on exit: stop a lane still running (its process group), remove what was made
  [ -z "$lane_pid" ] || kill -TERM -- -"$lane_pid" 2>/dev/null || true
  rm -rf ${logs:+"$logs"} ${made_cache:+"$made_cache"}
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ -z "${JPO_ORACLE_CACHE:-}" ]; then
  JPO_ORACLE_CACHE="$(mktemp -d -t jpo-oracle-cache.XXXXXX)"
  export JPO_ORACLE_CACHE
  made_cache="$JPO_ORACLE_CACHE"
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

logs="$(mktemp -d -t jpo-test.XXXXXX)"  # each step's output, the failed steps, a print lock
lanes="${JPO_TEST_LANES:-2}"

step() {  # step NAME COMMAND...: run, time and name one step; remember a failure
  local name="$1" start=$SECONDS status=0 out
  shift
  if [ "$lanes" = 1 ]; then
    echo "test: == $name"
    "$@" || status=$?
  else  # side by side: keep the output and print it whole, one step at a time
    { flock 9; echo "test: == $name: started"; } 9>>"$logs/print.lock"
    out="$(mktemp "$logs/step.XXXXXX")"
    "$@" >"$out" 2>&1 || status=$?
  fi
  {
    flock 9
    if [ "$lanes" != 1 ]; then
      echo "test: == $name"
      cat "$out"
    fi
    echo "test: == $name: $([ "$status" = 0 ] && echo passed || echo "FAILED ($status)") in $((SECONDS - start)) s"
  } 9>>"$logs/print.lock"
  [ "$status" = 0 ] || echo "$name" >>"$logs/failed"
}
lint_paths=()
for path in jpo tests scripts benchmarks research; do
  [ -d "$path" ] && lint_paths+=("$path")
done
lint_steps() {
  step "lint: ruff" "$VENV/bin/ruff" check "${lint_paths[@]}"
  step "lint: mypy" "$VENV/bin/mypy"
  step "lint: import layers (lint-imports)" "$VENV/bin/lint-imports"
  step "lint: import cycles" "$VENV/bin/python" scripts/architecture_metrics.py --cycles
}
compute_tiers() {
  step "tier 1 of 5: fast (pytest)" run_pytest
  step "tier 2 of 5: sim (pytest -m sim)" run_pytest -m sim
  if [ -d research/tests ] || [ -d tests/benchmarks ]; then
    step "tier 3 of 5: research (pytest -m research)" run_pytest -m research
  fi
}
slow_tier() {
  step "tier 4 of 5: slow (pytest -m \"slow and not research and not rerun\")" run_pytest -m "slow and not research and not rerun"
}
rerun_tier() {  # after the sim and research tiers, whose oracle searches it reads back
  step "tier 5 of 5: rerun (pytest -m rerun)" run_pytest -m rerun
}
start=$SECONDS
if [ "$lanes" = 1 ]; then
  lint_steps; compute_tiers; slow_tier; rerun_tier
else
  set -m  # lane 1 in its own process group, so an interrupt stops all it started
  { lint_steps; slow_tier; } &
  lane_pid=$!
  set +m
  compute_tiers; rerun_tier  # lane 2
  wait "$lane_pid" || true  # its steps record their own failures
  lane_pid=""
fi
if [ -s "$logs/failed" ]; then
  echo "test: FAILED after $((SECONDS - start)) s: $(paste -sd ';' "$logs/failed")"
  exit 1
fi
echo "test: every step passed in $((SECONDS - start)) s"
