"""JPO's memory survives between pipeline runs: five rounds, each in a fresh ``git clone``.

Each round does what the commit job of examples/ci/ does, on a real Prometheus:
``jpo suggest`` (the CLI, in the fresh clone) -> a simulated training run of the values now
in config.ini, backfilled into Prometheus -> ``jpo feedback`` -> ``jpo-commit-state.sh``
(commit config.ini + .jpo/audit.jsonl together, push). The run of round 2 degrades the
validation loss: round 3 rolls it back, and round 4, asked by the same fixed-action policy
for the same step, refuses it through the failed-config memory. Nothing carries over
between rounds except what is in git.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes.policy import fixed_action_policy
from fakes.suggest_campaign import CONFIG, HP

REPO = Path(__file__).resolve().parents[1]
COMMIT_SCRIPT = REPO / "examples" / "ci" / "jpo-commit-state.sh"
WORKLOAD = "cifar10-resnet18"  # the workload of CONFIG
ROUNDS = 5
DEGRADED_ROUND = 2
VAL_LOSS_FACTOR = 1.6  # the degraded run's validation loss, x the simulated one
RUN_GAP_S = 2 * 3600.0
FIRST_RUN_AGE_S = (ROUNDS + 2) * RUN_GAP_S
SCRAPE_INTERVAL_S = 15.0  # configs/metrics.toml [query] run_step_s
CONFIG_REL = "wl/config.ini"
LOG_REL = "wl/.jpo/audit.jsonl"


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd``; return stdout (fail the test on error)."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "pipeline",
        "GIT_AUTHOR_EMAIL": "pipeline@example.invalid",
        "GIT_COMMITTER_NAME": "pipeline",
        "GIT_COMMITTER_EMAIL": "pipeline@example.invalid",
    }
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout


def jpo(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``jpo`` CLI of this checkout in ``cwd``."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("JPO_AUDIT_LOG", None)
    return subprocess.run(
        [sys.executable, "-m", "jpo.cli.app", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def seed_repository(tmp_path: Path) -> Path:
    """Create the bare 'remote' with the workload's config.ini and JPO's ignore lines."""
    from jpo.stage.workspace import GITIGNORE_LINES

    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    seed = tmp_path / "seed"
    git(tmp_path, "clone", "-q", str(origin), str(seed))
    (seed / "wl").mkdir()
    (seed / CONFIG_REL).write_text(CONFIG, encoding="utf-8")
    (seed / "wl" / ".gitignore").write_text("\n".join(GITIGNORE_LINES) + "\n", encoding="utf-8")
    git(seed, "add", ".")
    git(seed, "commit", "-q", "-m", "workload")
    git(seed, "push", "-q", "origin", "HEAD:main")
    return origin


def _simulate(hp: Any, run_id: str, start: float) -> Any:
    from jpo.sim.response import load_conditions, load_profile, simulate_run

    return simulate_run(
        load_profile(WORKLOAD),
        hp,
        load_conditions(),
        rng=np.random.default_rng(len(run_id)),
        run_id=run_id,
        start=start,
        scrape_interval_s=SCRAPE_INTERVAL_S,
    )


def simulated_run(hp: Any, run_id: str, start: float, *, degraded: bool) -> Any:
    """One simulated run of the workload with ``hp``.

    Its validation loss is set by the test, not by the response model (this test is about
    memory across clones, not about the model): the first run's loss, or VAL_LOSS_FACTOR
    times it if ``degraded``.
    """
    run = _simulate(hp, run_id, start)
    reference = _simulate(HP, "pipeline-0", start).series["val_loss"][-1]
    factor = reference / run.series["val_loss"][-1] * (VAL_LOSS_FACTOR if degraded else 1.0)
    series = {**run.series, "val_loss": run.series["val_loss"] * factor}
    return dataclasses.replace(run, series=series)


def backfill(prometheus: Any, run: Any) -> None:
    """Make ``run`` visible in Prometheus (the training pods' scrapes, after the fact)."""
    from jpo.sim.simulator import write_openmetrics

    buf = io.StringIO()
    write_openmetrics([run], buf)
    prometheus.stop()
    prometheus.backfill(buf.getvalue(), run.run_id)
    prometheus.start()


def audit_records(clone: Path) -> list[dict[str, Any]]:
    """The audit log as the clone has it (JSON lines)."""
    path = clone / LOG_REL
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def pipeline_round(
    tmp_path: Path, origin: Path, prometheus: Any, policy: Path, r: int, start: float
) -> dict[str, Any]:
    """One pipeline run in a fresh clone; return what it did."""
    from jpo.workload.config_file import read_workload

    clone = tmp_path / f"pipeline-{r}"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    records_before = len(audit_records(clone))

    # What the old pipelines did (config.ini committed, the log left behind): the same
    # suggestion without the log, as a dry run, for comparison.
    def suggest(log: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return jpo(
            clone, "suggest", "--config", CONFIG_REL, "--prometheus", prometheus.url,
            "--policy", str(policy), "--log", log, "--json", *extra,
        )  # fmt: skip

    amnesic = suggest(str(tmp_path / f"no-memory-{r}.jsonl"), "--dry-run")
    assert amnesic.returncode in (0, 10, 11, 12), amnesic.stderr[-3000:]
    suggested = suggest(LOG_REL, "--approve")
    assert suggested.returncode in (0, 10, 11), suggested.stderr[-3000:]
    result = json.loads(suggested.stdout)
    hp = read_workload(clone / CONFIG_REL).hyperparameters
    run_id = f"pipeline-{r}"
    backfill(prometheus, simulated_run(hp, run_id, start, degraded=r == DEGRADED_ROUND))
    fed = jpo(
        clone,
        "feedback",
        "--config",
        CONFIG_REL,
        "--run-id",
        run_id,
        "--prometheus",
        prometheus.url,
        "--log",
        LOG_REL,
    )
    assert fed.returncode == 0, fed.stderr[-3000:]
    committed = subprocess.run(
        ["bash", str(COMMIT_SCRIPT), CONFIG_REL, LOG_REL, run_id, "origin", "main"],
        cwd=clone,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "GIT_AUTHOR_NAME": "jpo-bot",
            "GIT_AUTHOR_EMAIL": "bot@x.invalid",
            "GIT_COMMITTER_NAME": "jpo-bot",
            "GIT_COMMITTER_EMAIL": "bot@x.invalid",
        },
        check=False,
    )
    assert committed.returncode == 0, committed.stdout + committed.stderr
    return {
        "status": result["status"],
        "without_memory": json.loads(amnesic.stdout),
        "notes": result["notes"],
        "hp": hp,
        "records_before": records_before,
        "records_after": len(audit_records(clone)),
        "feedback": fed.stdout + fed.stderr,
    }


@pytest.mark.slow
def test_five_pipeline_rounds_in_fresh_clones_keep_jpo_memory(
    tmp_path: Path, prometheus_factory: Callable[..., Any]
) -> None:

    origin = seed_repository(tmp_path)
    # batch size up by half the trust region every time it is asked (tests/fakes/policy.py)
    policy = fixed_action_policy(tmp_path / "policy", (0.5, 0.0, 0.0, 0.0))
    first = time.time() - FIRST_RUN_AGE_S
    prometheus = prometheus_factory(start=False)
    backfill(prometheus, simulated_run(HP, "pipeline-0", first, degraded=False))

    rounds = [
        pipeline_round(tmp_path, origin, prometheus, policy, r, first + r * RUN_GAP_S)
        for r in range(1, ROUNDS + 1)
    ]
    statuses = [r["status"] for r in rounds]

    # every round found the previous rounds' memory in its fresh clone, and added to it
    for before, after in itertools.pairwise(rounds):
        assert after["records_before"] == before["records_after"]
    assert rounds[0]["records_before"] == 0
    assert all(r["records_after"] > r["records_before"] for r in rounds)

    # round 1 and 2 step the batch up; round 2's run degrades
    assert statuses[:2] == ["changed", "changed"], rounds
    degraded_hp = rounds[DEGRADED_ROUND - 1]["hp"]
    assert degraded_hp.batch_size > rounds[0]["hp"].batch_size > HP.batch_size
    # round 3 (a fresh clone) rolls back to the last known-good values
    assert statuses[DEGRADED_ROUND] == "rolled_back", rounds[DEGRADED_ROUND]
    assert rounds[DEGRADED_ROUND]["hp"] == rounds[0]["hp"]
    # ... which the old pipelines, leaving the log behind, would not have done: without
    # the log the same clone's suggestion steps on from the degraded values
    amnesic = rounds[DEGRADED_ROUND]["without_memory"]
    assert not any(n.startswith("rollback") for n in amnesic["notes"]), amnesic
    assert amnesic["after"]["batch_size"] > degraded_hp.batch_size, amnesic
    # round 4: the policy asks for the same step again; the failed-config memory refuses it
    assert any(
        "failed-config memory" in n or "failed with degraded" in n
        for n in rounds[DEGRADED_ROUND + 1]["notes"]
    ), rounds[DEGRADED_ROUND + 1]
    # the degraded configuration is never written again
    assert all(r["hp"] != degraded_hp for r in rounds[DEGRADED_ROUND:])

    # git holds one JPO commit per round, each with config.ini and the log together
    final = tmp_path / "final"
    git(tmp_path, "clone", "-q", str(origin), str(final))
    subjects = git(final, "log", "--format=%s").splitlines()
    assert sum(s.startswith("jpo: ") for s in subjects) == ROUNDS
    for rev in range(ROUNDS):
        files = set(git(final, "show", "--name-only", "--format=", f"HEAD~{rev}").split())
        assert LOG_REL in files, f"commit HEAD~{rev} lacks the audit log: {files}"
    # nothing but config.ini and the log is tracked (backups, locks, tmp stay ignored)
    tracked = set(git(final, "ls-files").split())
    assert tracked == {CONFIG_REL, LOG_REL, "wl/.gitignore"}
