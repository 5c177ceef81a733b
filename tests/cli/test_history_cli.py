"""``jpo history pull`` / ``show`` end to end: real Prometheus, real CLI entry point."""

from __future__ import annotations

import json
import time

import pytest
from fakes.cluster import FakeRun, openmetrics_history

from jpo.cli.app import main
from jpo.errors import ExitCode
from jpo.telemetry.history import read_history

T0 = float(int(time.time() // 3600) * 3600 - 2 * 3600)
RUNS = [
    FakeRun("cifar10", "resnet18", "pytorch", "r1", T0, T0 + 900),
    FakeRun("mnist", "mlp", "jax", "r2", T0 + 300, T0 + 1200, gpu_util_pct=()),
]


@pytest.mark.slow
def test_pull_then_repull_then_show(prometheus_factory, tmp_path, capsys) -> None:
    server = prometheus_factory(openmetrics=[openmetrics_history(RUNS)])
    store = tmp_path / "store"
    args = ["history", "pull", "--prometheus", server.url, "--since", "3h", "--step", "15s"]
    assert main([*args, "--out", str(store)]) == 0
    first = read_history(store)
    assert first.num_rows > 0
    assert set(first["dataset"].to_pylist()) == {"cifar10", "mnist"}
    assert "new rows appended" in capsys.readouterr().out
    # an overlapping re-pull adds no duplicate rows (--out above: the old spelling still works)
    assert main([*args, "--history", str(store)]) == 0
    again = read_history(store)
    assert again.num_rows == first.num_rows
    assert "; 0 new rows appended" in capsys.readouterr().out
    assert main(["history", "show", "--history", str(store), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["rows"] == first.num_rows
    assert [w["workload"] for w in shown["workloads"]] == [
        "cifar10.resnet18.pytorch",
        "mnist.mlp.jax",
    ]
    assert main(["history", "show", "--out", str(store)]) == 0
    assert "cifar10" in capsys.readouterr().out


def test_pull_from_an_unreachable_server_exits_telemetry(tmp_path, capsys) -> None:
    code = main(
        ["history", "pull", "--prometheus", "http://127.0.0.1:9", "--out", str(tmp_path / "s")]
    )
    assert code == ExitCode.TELEMETRY
    assert "127.0.0.1:9" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_bad_duration_is_invalid_input(tmp_path, capsys) -> None:
    code = main(
        ["history", "pull", "--prometheus", "http://x:1", "--since", "soon", "--out", str(tmp_path)]
    )
    assert code == ExitCode.INVALID_INPUT
    assert "soon" in capsys.readouterr().err


@pytest.mark.slow
def test_pull_that_matches_nothing_says_why_and_exits_telemetry(
    prometheus_factory, tmp_path, capsys
) -> None:
    # pods with the workload labels, but no label naming their runs (no run_id, no job
    # name), and no JPO exporter: what `jpo history pull` saw on a cluster of Jobs
    nameless = [
        FakeRun(
            "cifar10",
            "resnet18",
            "pytorch",
            "x",
            T0,
            T0 + 900,
            run_label=None,
            exports_training=False,
        )
    ]
    server = prometheus_factory(openmetrics=[openmetrics_history(nameless)])
    store = tmp_path / "store"
    args = ["history", "pull", "--prometheus", server.url, "--since", "3h", "--out", str(store)]
    assert main(args) == ExitCode.TELEMETRY
    err = " ".join(capsys.readouterr().err.split())
    assert "no samples matched in the last 3h" in err
    assert (
        "1 pod(s) carried the workload labels (label_dataset, label_model, label_framework" in err
    )
    assert (
        "none of them a run label (label_run_id: 0, label_training_kubeflow_org_job_name: 0" in err
    )
    assert not store.exists() or read_history(store).num_rows == 0


@pytest.mark.slow
def test_pull_finds_a_kubernetes_job_run(prometheus_factory, tmp_path) -> None:
    job = [FakeRun("cifar10", "resnet18", "pytorch", "train-7", T0, T0 + 900, run_label="job_name")]
    server = prometheus_factory(openmetrics=[openmetrics_history(job)])
    store = tmp_path / "store"
    args = ["history", "pull", "--prometheus", server.url, "--since", "3h", "--out", str(store)]
    assert main(args) == 0
    assert set(read_history(store)["run_id"].to_pylist()) == {"train-7"}
