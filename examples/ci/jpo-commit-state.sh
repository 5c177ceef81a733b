#!/usr/bin/env bash
# Commit a workload's config.ini and JPO's audit log together, then push; used by the
# commit job of examples/ci/github-actions.yml and gitlab-ci.yml (and by
# tests/test_ci_state.py, which runs it in fresh clones).
#
#   jpo-commit-state.sh CONFIG LOG RUN_ID [REMOTE] [BRANCH]
#
# The audit log (.jpo/audit.jsonl beside config.ini) is JPO's memory: rollback targets,
# the failed-config memory and the best run so far. Committing it with the config.ini it
# describes keeps the two consistent: the next pipeline's fresh checkout has both.
#
# Push race: pipelines on the same file are serialized by the pipelines' concurrency group
# (GitHub) / resource group (GitLab), so the only commits that can land between checkout
# and push are other people's. A rejected push is rebased onto them and retried
# (JPO_PUSH_ATTEMPTS times, default 5). If the rebase conflicts, someone else changed
# config.ini or the audit log in between (a pipeline outside the group, or a hand edit):
# the job fails, nothing is forced, and the state stays in the job's artifact.
set -euo pipefail

if [ "$#" -lt 3 ]; then
  echo "usage: $0 CONFIG LOG RUN_ID [REMOTE] [BRANCH]" >&2
  exit 2
fi
config=$1
log=$2
run_id=$3
remote=${4:-origin}
branch=${5:-$(git rev-parse --abbrev-ref HEAD)}
attempts=${JPO_PUSH_ATTEMPTS:-5}

if [ ! -f "$log" ]; then
  echo "error: $log does not exist: run jpo suggest / jpo feedback with --log $log first" >&2
  exit 2
fi
# `git add` (not `-f`): an audit log that .gitignore hides is a setup error worth seeing
# (the ignore lines JPO needs are `.jpo/*` and `!.jpo/audit.jsonl` beside config.ini).
git add -- "$config" "$log"
if git diff --cached --quiet; then
  echo "jpo: $config and $log unchanged, nothing to commit"
  exit 0
fi
git commit -q -m "jpo: $config and its audit log after run $run_id [skip ci]" -- "$config" "$log"

for attempt in $(seq 1 "$attempts"); do
  if git push -q "$remote" "HEAD:$branch"; then
    echo "jpo: pushed $config and $log (run $run_id)"
    exit 0
  fi
  echo "jpo: push rejected (attempt $attempt of $attempts): rebasing onto $remote/$branch"
  git fetch -q "$remote" "$branch"
  if ! git rebase -q FETCH_HEAD; then
    git rebase --abort
    echo "error: $config or $log changed on $remote/$branch since this pipeline's checkout;" \
      "resolve by hand (the pipeline's artifact holds this run's files)" >&2
    exit 1
  fi
  sleep "$attempt"
done
echo "error: could not push to $remote/$branch after $attempts attempts" >&2
exit 1
