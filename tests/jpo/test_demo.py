"""The README demo driver (jpo.demo) on both telemetry paths, with a tiny fixed policy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from jpo import audit
from jpo.config_file import check_workload
from jpo.demo import FAST_WORKLOADS, render_table, run_demo
from jpo.features import FEATURE_SPEC_VERSION, OBSERVATION_NAMES
from jpo.policy import write_artifact
from jpo.workload import HYPERPARAMETER_NAMES


def make_policy(folder: Path, action: tuple[float, ...]) -> Path:
    n_obs, n_act = len(OBSERVATION_NAMES), len(HYPERPARAMETER_NAMES)
    bias = np.concatenate([np.arctanh(np.asarray(action)), np.zeros(n_act)]).astype("f4")
    return write_artifact(
        folder,
        {"w": np.zeros((2 * n_act, n_obs), "f4"), "b": bias},
        {
            "policy_version": 1,
            "feature_spec_version": FEATURE_SPEC_VERSION,
            "observation": {
                "names": list(OBSERVATION_NAMES),
                "mean": [0.0] * n_obs,
                "std": [1.0] * n_obs,
            },
            "action": {"names": list(HYPERPARAMETER_NAMES)},
            "network": {"layers": [{"weight": "w", "bias": "b", "activation": "linear"}]},
        },
    )


def _check(rows, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    assert [r.workload for r in rows] == list(FAST_WORKLOADS)
    for row in rows:
        assert row.status.startswith("changed"), row.message
        assert row.after != row.before
        assert row.summary_after is not None and row.reward is not None
        (first, *rest) = audit.read_records(row.config.parent / ".jpo" / "audit.jsonl")
        assert first.changed and first.outcome is not None
        assert first.outcome["run_id"] == f"{row.workload}-run-2"
        if row.degraded:
            assert row.status.endswith("rolled_back") and rest[0].reason.startswith("rollback")
            assert row.rolled_back_to == row.before
    console = Console(record=True, width=200)
    console.print(render_table(rows))
    text = console.export_text()
    assert "cifar10-resnet18" in text and "->" in text
    # nothing outside the work dir: the examples are untouched copies
    assert all(str(r.config).startswith(str(workdir)) for r in rows)


def test_demo_on_the_parquet_history(tmp_path: Path) -> None:
    policy = make_policy(tmp_path / "policy", (0.5, 0.2, 0.0, -0.2))
    rows = run_demo(
        workdir=tmp_path / "work",
        fast=True,
        policy=policy,
        use_prometheus=False,
        say=lambda _: None,
    )
    _check(rows, tmp_path / "work")
    assert any((tmp_path / "work" / "history").rglob("*.parquet"))


@pytest.mark.slow
def test_demo_on_a_local_prometheus(tmp_path: Path) -> None:
    # cuts layers hard (18 -> 12 on cifar10): on the grounded profile (issue 30: the 200-epoch
    # recipe) the old action (0.5, 0.2, 0.0, -0.2) no longer degrades, as it only did
    # because the old 30-epoch default was under-trained
    policy = make_policy(tmp_path / "policy", (0.5, 0.2, -0.9, -0.2))
    said: list[str] = []
    rows = run_demo(
        workdir=tmp_path / "work", fast=True, policy=policy, use_prometheus=True, say=said.append
    )
    _check(rows, tmp_path / "work")
    assert any("Prometheus at http://127.0.0.1:" in s for s in said)
    assert any(r.degraded for r in rows)  # the fixed policy overshoots cifar10: rollback shown


def test_demo_without_a_policy_says_how_to_get_one(tmp_path: Path) -> None:
    from jpo.errors import PolicyError

    with pytest.raises(PolicyError, match="--policy"):
        run_demo(workdir=tmp_path, policy=tmp_path / "missing", say=lambda _: None)


@pytest.mark.slow
def test_live_demo_with_simulated_pods_scraped_by_prometheus(tmp_path: Path) -> None:
    """The default (non --fast) mode: `jpo simulate run` pods, a scraping Prometheus."""
    policy = make_policy(tmp_path / "policy", (0.5, 0.2, 0.0, -0.2))
    said: list[str] = []
    (row,) = run_demo(
        workdir=tmp_path / "work",
        workloads=("mnist-lenet",),
        policy=policy,
        use_prometheus=True,
        live=True,
        say=said.append,
    )
    assert any("scrapes 1 simulated pod" in s for s in said)
    assert row.status.startswith("changed"), row.message
    assert row.summary_before is not None and row.summary_after is not None
    assert row.reward is not None
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
    done = _jpo("demo", "--fast", "--no-prometheus", "--workdir", str(work), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["workdir"] == str(work)
    assert [w["workload"] for w in report["workloads"]] == list(FAST_WORKLOADS)
    changed = [w for w in report["workloads"] if w["after"] != w["before"]]
    assert changed, report
    # a change whose run degraded is rolled back by the demo's second suggest round: the
    # file then holds `rolled_back_to`; at least one change must survive on disk
    finals = [w["rolled_back_to"] or w["after"] for w in changed]
    assert any(final != w["before"] for final, w in zip(finals, changed, strict=True)), report
    for final, w in zip(finals, changed, strict=True):
        config = Path(w["files"]["config"])
        assert config.parent.parent == work
        original = (EXAMPLES / w["workload"] / "config.ini").read_bytes()
        if final != w["before"]:
            assert config.read_bytes() != original
        check = check_workload(config)
        assert not check.problems, check.problems
        assert check.workload is not None
        assert check.workload.hyperparameters.batch_size == final["batch_size"]
        assert Path(w["files"]["audit_log"]).is_file()
    assert (EXAMPLES / "mnist-lenet" / "config.ini").read_text().count("batch_size = 64") == 1


@pytest.mark.slow
def test_jpo_demo_fast_table_on_a_local_prometheus(tmp_path: Path) -> None:
    work = tmp_path / "work"
    done = _jpo("demo", "--fast", "--workdir", str(work), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "JPO demo: before -> after" in out and "cifar10-resnet18" in out and "->" in out
    assert "Prometheus at http://127.0.0.1:" in out
    assert str(work / "mnist-lenet" / "config.ini") in out
    assert str(work / "mnist-lenet" / ".jpo" / "audit.jsonl") in out


def test_jpo_demo_unknown_workload_exits_2(tmp_path: Path) -> None:
    done = _jpo("demo", "--fast", "--workload", "no-such", "--workdir", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2
    assert "no-such" in done.stderr and "fix: pick from" in done.stderr
    assert "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir())
