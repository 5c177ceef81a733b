"""The README demo driver (jpo.cli.demo) on both telemetry paths, with a tiny fixed policy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fakes.policy import fixed_action_policy

from jpo.cli import demo
from jpo.cli.demo import DEFAULT_ROUNDS, FAST_WORKLOADS, render_campaign, run_demo
from jpo.stage import audit
from jpo.workload.config_file import check_workload

make_policy = fixed_action_policy


def _check(rows, workdir: Path, rounds: int) -> None:  # type: ignore[no-untyped-def]
    """A campaign per workload: `rounds` runs, each scored, the log and the chart agree."""
    assert [r.workload for r in rows] == list(FAST_WORKLOADS)
    for row in rows:
        assert len(row.runs) == rounds and len(row.decisions) == rounds
        assert [run.index for run in row.runs] == list(range(1, rounds + 1))
        assert [run.run_id for run in row.runs] == [
            f"{row.workload}-run-{i}" for i in range(1, rounds + 1)
        ]
        assert row.runs[0].verdict == "reference"
        assert all(run.verdict in ("ok", "degraded") for run in row.runs[1:])
        assert all(run.reward is not None for run in row.runs[1:])
        assert all(run.decision for run in row.runs)  # jpo suggest ran after every run
        assert row.runs[0].hyperparameters == row.before
        records = audit.read_records(row.config.parent / ".jpo" / "audit.jsonl")
        assert len(records) == rounds
        for rec, run in zip(records, row.runs, strict=True):
            assert rec.telemetry["run_id"] == run.run_id
        for run, nxt in zip(row.runs, row.runs[1:], strict=False):
            assert nxt.hyperparameters == run.next_values  # each run used what suggest wrote
            if run.verdict == "degraded":  # a degraded run is rolled back by the next suggest
                assert run.decision == "rollback"
        assert row.final == check_workload(row.config).workload.hyperparameters  # type: ignore[union-attr]
        assert row.best is not None and row.best.verdict in ("reference", "ok")
        assert row.chart is not None and row.chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        text = "\n".join(render_campaign(row))
        assert f"{row.workload}: {rounds} runs" in text and "best known-good run" in text
        assert "config.ini holds" in text
    # nothing outside the work dir: the examples are untouched copies
    assert all(str(r.config).startswith(str(workdir)) for r in rows)


def test_demo_campaign_on_the_parquet_history(tmp_path: Path) -> None:
    policy = make_policy(tmp_path / "policy", (0.5, 0.2, 0.0, -0.2))
    rows = run_demo(
        workdir=tmp_path / "work",
        fast=True,
        policy=policy,
        use_prometheus=False,
        rounds=3,
        say=lambda _: None,
    )
    _check(rows, tmp_path / "work", 3)
    assert any((tmp_path / "work" / "history").rglob("*.parquet"))


@pytest.mark.slow
def test_demo_campaign_on_a_local_prometheus(tmp_path: Path) -> None:
    # cuts layers hard (18 -> 12 on cifar10): on the grounded profile (issue 30: the 200-epoch
    # recipe) the old action (0.5, 0.2, 0.0, -0.2) no longer degrades, as it only did
    # because the old 30-epoch default was under-trained
    policy = make_policy(tmp_path / "policy", (0.5, 0.2, -0.9, -0.2))
    said: list[str] = []
    rows = run_demo(
        workdir=tmp_path / "work",
        fast=True,
        policy=policy,
        use_prometheus=True,
        rounds=3,
        say=said.append,
    )
    _check(rows, tmp_path / "work", 3)
    assert any("Prometheus at http://127.0.0.1:" in s for s in said)
    # the fixed policy overshoots cifar10: a degraded run, rolled back, is shown
    assert any(run.verdict == "degraded" for r in rows for run in r.runs)


def test_flagship_campaign_improves_with_the_bundled_policy(tmp_path: Path) -> None:
    """The README's main command: the flagship workload ends better than it started.

    Measured, not arranged: the bundled policy, the CI stage's rollback and return to the
    best run. The best known-good run beats run 1's objective and config.ini ends on it
    or on a step from it.
    """
    (row,) = run_demo(
        workdir=tmp_path / "work",
        fast=True,
        workloads=("cifar10-resnet18",),
        use_prometheus=False,
        say=lambda _: None,
    )
    assert len(row.runs) == DEFAULT_ROUNDS
    first = row.runs[0]
    assert row.best is not None and row.best.index > 1
    assert row.best.objective is not None and first.objective is not None
    assert row.best.objective > first.objective + 0.05
    assert row.best.val_loss is not None and first.val_loss is not None
    assert row.best.val_loss <= first.val_loss * 1.01  # quality held


def test_demo_rejects_a_bad_round_count(tmp_path: Path) -> None:
    from jpo.errors import ConfigError

    with pytest.raises(ConfigError, match="--rounds 0"):
        run_demo(workdir=tmp_path, fast=True, rounds=0, say=lambda _: None)


def test_demo_without_a_policy_says_how_to_get_one(tmp_path: Path) -> None:
    from jpo.errors import PolicyError

    with pytest.raises(PolicyError, match="--policy"):
        run_demo(workdir=tmp_path, policy=tmp_path / "missing", say=lambda _: None)


@pytest.mark.slow
def test_live_demo_with_simulated_pods_scraped_by_prometheus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default (non --fast) mode: `jpo simulate run` pods, a scraping Prometheus."""
    # pods of 20 wall seconds instead of 40 (the same code path): still about ten 2 s query
    # steps of each run scraped every second, for the summary the CI stage reads
    monkeypatch.setattr(demo, "LIVE_RUN_WALL_S", 20.0)
    policy = make_policy(tmp_path / "policy", (0.5, 0.2, 0.0, -0.2))
    said: list[str] = []
    (row,) = run_demo(
        workdir=tmp_path / "work",
        workloads=("mnist-lenet",),
        policy=policy,
        use_prometheus=True,
        live=True,
        rounds=2,
        say=said.append,
    )
    assert any("scrapes 1 simulated pod" in s for s in said)
    assert row.decisions[0] == "changed", row.notes
    assert len(row.runs) == 2 and row.runs[1].reward is not None
    assert row.runs[0].gpu_util is not None and row.runs[1].val_loss is not None
    (first, *_) = audit.read_records(row.config.parent / ".jpo" / "audit.jsonl")
    assert first.telemetry["run_id"] == "mnist-lenet-run-1"
    assert first.outcome is not None and first.outcome["run_id"] == "mnist-lenet-run-2"


BIN = Path(sys.executable).parent
EXAMPLES = Path(__file__).parents[2] / "examples" / "workloads"


def _jpo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "jpo"), *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def test_jpo_demo_fast_through_the_cli_json(tmp_path: Path) -> None:
    """`jpo demo --fast --json` (the README's first command) with the bundled policy."""
    work = tmp_path / "work"
    example = (EXAMPLES / "mnist-lenet" / "config.ini").read_bytes()
    done = _jpo(
        "demo", "--fast", "--no-prometheus", "--rounds", "3", "--workdir", str(work), "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["workdir"] == str(work)
    assert [w["workload"] for w in report["workloads"]] == list(FAST_WORKLOADS)
    for w in report["workloads"]:
        assert [r["run"] for r in w["runs"]] == [1, 2, 3]
        assert all(r["gpu_util"] is not None and r["val_loss"] is not None for r in w["runs"])
        assert w["best_run"] in (1, 2, 3)
        config = Path(w["files"]["config"])
        assert config.parent.parent == work
        check = check_workload(config)
        assert not check.problems, check.problems
        assert check.workload is not None
        assert check.workload.hyperparameters.as_dict() == w["final"]
        assert Path(w["files"]["audit_log"]).is_file()
        assert Path(w["files"]["chart"]).read_bytes()[:4] == b"\x89PNG"
    assert any(w["final"] != w["before"] for w in report["workloads"]), report
    # the demo tunes copies: the example config.ini stays byte-identical
    assert (EXAMPLES / "mnist-lenet" / "config.ini").read_bytes() == example


@pytest.mark.slow
def test_jpo_demo_fast_table_on_a_local_prometheus(tmp_path: Path) -> None:
    work = tmp_path / "work"
    done = _jpo("demo", "--fast", "--workdir", str(work), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"cifar10-resnet18: {DEFAULT_ROUNDS} runs" in out and "then jpo suggest" in out
    assert "best known-good run: run" in out and "config.ini holds" in out
    assert "Prometheus at http://127.0.0.1:" in out
    assert str(work / "mnist-lenet" / "config.ini") in out
    assert str(work / "mnist-lenet" / ".jpo" / "audit.jsonl") in out
    assert str(work / "cifar10-resnet18-campaign.png") in out


def test_jpo_demo_unknown_workload_exits_2(tmp_path: Path) -> None:
    done = _jpo("demo", "--fast", "--workload", "no-such", "--workdir", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2
    assert "no-such" in done.stderr and "fix: pick from" in done.stderr
    assert "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir())
