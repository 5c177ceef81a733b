"""The real digits-mlp workload: a short end-to-end run with a real Prometheus."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "digits-mlp"


def test_config_ini_passes_the_workload_checker() -> None:
    from jpo.workload.config_file import check_workload, read_workload
    from jpo.workload.constraints import load_constraints

    report = check_workload(EXAMPLE / "config.ini", load_constraints())
    assert not list(getattr(report, "problems", ()))
    workload = read_workload(EXAMPLE / "config.ini")
    assert workload.key.slug() == "digits.mlp.pytorch"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus missing")
def test_short_end_to_end_run(tmp_path: Path) -> None:
    """Two CI rounds on the real app: suggest, train, feedback; then the next suggestion."""
    original = (EXAMPLE / "config.ini").read_bytes()
    proc = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE / "run_e2e.py"),
            "--short",
            "--rounds",
            "2",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "jpo suggest (2) exit code" in proc.stdout and "incumbent: run-" in proc.stdout
    summary = json.loads((tmp_path / "e2e.json").read_text())
    runs, steps = summary["runs"], summary["steps"]
    assert [run["run_id"] for run in runs] == ["run-1", "run-2", "run-3"]
    for run in runs:
        assert run["status"] == "ok"
        assert math.isfinite(run["final_val_loss"]) and run["final_val_loss"] > 0
        assert run["throughput_mean"] > 0
        measured = run["measured"]
        assert measured["scrapes"] > 0
        assert 0 < measured["cpu_util_mean"] < 4
        assert 0 < measured["mem_util_mean"] < 1
        assert measured["gpu_util_mean"] is None  # CPU-only: no DCGM series
    # config.ini says `device = cpu`: the pod's CPU and memory stand in for the GPU's, the
    # script's catalog matches its 1 s scrapes, and the bundled policy's step on this
    # workload (batch size up nearly a full trust region) is far above the hysteresis.
    first = json.loads(steps[0]["suggest"]["stdout"])
    assert steps[0]["suggest"]["exit_code"] == 0, first["message"]
    assert first["status"] == "changed" and first["run_id"] == "run-1"
    assert runs[1]["hyperparameters"] == first["after"] != runs[0]["hyperparameters"]
    fed = steps[0]["feedback"]
    assert fed is not None and fed["exit_code"] == 0, fed
    outcome = json.loads(fed["stdout"])
    assert outcome["run_id"] == "run-2" and math.isfinite(outcome["reward"])
    assert outcome["summary"]["gpu_util_mean"] == outcome["summary"]["cpu_util_mean"]
    assert not (tmp_path / "history").exists()  # the replay env trains on GPU runs only
    # round 2 starts from run 2's outcome: back to run 1's values after a degraded run,
    # else a step from run 2's values
    second = json.loads(steps[1]["suggest"]["stdout"])
    assert steps[1]["suggest"]["exit_code"] in {0, 10}, second["message"]
    assert second["run_id"] == "run-2" and second["before"] == runs[1]["hyperparameters"]
    if outcome["degraded"]:
        assert second["status"] == "rolled_back"
        assert second["after"] == runs[0]["hyperparameters"]
    assert runs[2]["hyperparameters"] == second["after"]
    following = json.loads(summary["next_suggest"]["stdout"])
    assert summary["next_suggest"]["exit_code"] in {0, 10}, following["message"]
    assert following["run_id"] == "run-3"
    assert summary["incumbent"] in {"run-1", "run-2", "run-3"}
    # the example's own config.ini is never edited: the script works on a copy
    assert (EXAMPLE / "config.ini").read_bytes() == original


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus missing")
def test_a_pod_that_exits_right_after_finishing_is_seen_finished(prometheus_factory) -> None:  # type: ignore[no-untyped-def]
    """Prometheus marks a stopped target's series stale at once; the run must still count.

    At the default 60 s discovery step a plain selector saw the final run_status only when
    a step landed in the seconds between finish() and the pod's exit: the full digits e2e
    run once answered "state unknown (no run_status sample)" for its finished run.
    """
    import os
    from dataclasses import replace

    sys.path.insert(0, str(EXAMPLE))
    from local_pod_exporter import LocalPod, LocalPodCollector, serve

    from jpo.telemetry.exporter import TrainingExporter
    from jpo.telemetry.promql import load_catalog
    from jpo.telemetry.sources import PrometheusSource
    from jpo.workload.types import Hyperparameters, WorkloadKey

    key = WorkloadKey("digits", "mlp", "pytorch")
    pod = LocalPod(os.getpid(), key.dataset, key.model, key.framework, "gone1", 1.0, 2.0**30)
    pod_server = serve(LocalPodCollector([pod]), 0)  # keeps the completed pod's labels
    app = TrainingExporter(key.dataset, key.model, key.framework, "gone1", addr="127.0.0.1")
    app.start()
    try:
        app.set_hyperparameters(Hyperparameters(16, 0.001, 2, 6))
        app.report(throughput=100.0, val_loss=0.5, epoch=6)
        app.finish("ok")
        prom = prometheus_factory(
            targets=[
                ("digits-pod", f"127.0.0.1:{pod_server.server_port}"),  # type: ignore[attr-defined]
                ("digits-app", f"127.0.0.1:{app.port}"),
            ]
        )
        prom.wait_for('jpo_training_run_status{run_id="gone1"} == 1')
        app.stop()  # the pod exits: its series go stale at the next failed scrape
        prom.wait_for('jpo_training_run_status{run_id="gone1"}', lambda r: not r)
        prom.wait_for('kube_pod_labels{label_run_id="gone1"}')
        catalog = load_catalog()
        assert catalog.settings.discovery_step_s == 60  # the shipped default
        catalog = replace(catalog, settings=replace(catalog.settings, lookback="1h"))
        choice = PrometheusSource.from_url(prom.url, catalog).select_run(key)
        assert choice.run_id == "gone1"
    finally:
        app.stop()
        pod_server.shutdown()  # type: ignore[attr-defined]
