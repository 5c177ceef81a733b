#!/usr/bin/env bash
# Run many fast_sac.py trainings side by side, then pack the exported policies.
#
#   OUT=/tmp/fast PAR=15 DEADLINE_S=480 bash research/train/fast_sac_jobs.sh JOBS
#
# JOBS has one training per line, "RECIPE SEED STEPS [fast_sac.py options...]" ('#' starts
# a comment); each exports to $OUT/pol/RECIPE-sSEED (snapshots every $EVERY env steps as
# RECIPE-sSEED-<N>k), logs to $OUT/logs/. Every job is stopped DEADLINE_S seconds after
# the start (0: never), so that a lent machine returns its snapshots inside its time limit.
# At the end $OUT/policies.tar.gz holds pol/ and logs/ (one file: a lent machine returns
# at most 8). Score them with research/evaluate/diagnose.py score.
set -uo pipefail
JOBS="$1"
OUT="${OUT:-/tmp/fast}"
PAR="${PAR:-$(nproc)}"
EVERY="${EVERY:-50000}"
DEADLINE_S="${DEADLINE_S:-0}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT/pol" "$OUT/logs"
END=$(( $(date +%s) + DEADLINE_S ))
export OUT EVERY DEADLINE_S END PYTHON

run_one() {
  local recipe="$1" seed="$2" steps="$3"
  shift 3
  local limit=()
  if [ "$DEADLINE_S" -gt 0 ]; then
    limit=(timeout "$(( END - $(date +%s) ))")
  fi
  "${limit[@]}" "$PYTHON" research/train/fast_sac.py --steps "$steps" --seed "$seed" \
    --export "$OUT/pol/$recipe-s$seed" --export-every "$EVERY" "$@" \
    > "$OUT/logs/$recipe-s$seed.log" 2>&1
  echo "$recipe-s$seed exit $? at $(date +%T)"
}
export -f run_one

sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$JOBS" | xargs -P "$PAR" -L 1 bash -c 'run_one "$@"' _
tar -C "$OUT" -czf "$OUT/policies.tar.gz" pol logs
ls "$OUT/pol"
