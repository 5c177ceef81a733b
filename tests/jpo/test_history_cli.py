"""``jpo history pull`` / ``show`` end to end: real Prometheus, real CLI entry point."""

from __future__ import annotations

import json
import time

import pytest
from fakes.cluster import FakeRun, openmetrics_history

from jpo.cli import main
from jpo.errors import ExitCode
from jpo.history import read_history

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
    # an overlapping re-pull adds no duplicate rows
    assert main([*args, "--out", str(store)]) == 0
    again = read_history(store)
    assert again.num_rows == first.num_rows
    assert "; 0 new rows appended" in capsys.readouterr().out
    assert main(["history", "show", "--out", str(store), "--json"]) == 0
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
