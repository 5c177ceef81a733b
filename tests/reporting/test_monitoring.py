from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jpo.net import free_port
from jpo.reporting.monitoring import AuditLogCollector, decision_of, render_metrics, write_textfile
from jpo.stage.audit import AuditRecord, append_record, update_outcome
from jpo.workload.types import Hyperparameters, WorkloadKey

CIFAR = WorkloadKey("cifar10", "resnet18", "pytorch")
IMDB = WorkloadKey("imdb", "lstm", "tensorflow")
HP = Hyperparameters(128, 0.01, 18, 30)
BIGGER = Hyperparameters(256, 0.01, 18, 30)


def _rec(key: WorkloadKey, reason: str, *, changed: bool, version: str = "v3") -> AuditRecord:
    return AuditRecord.for_change(
        key,
        HP,
        BIGGER if changed else HP,
        reason,
        policy_version=version,
        source="jpo/data/policy",
        changed=changed,
    )


@pytest.fixture
def audit_log(tmp_path: Path) -> Path:
    """A log with every decision kind and two scored runs (one degraded)."""
    path = tmp_path / "audit.jsonl"
    first = _rec(CIFAR, "policy", changed=True, version="v2")
    append_record(path, first)
    update_outcome(path, first.suggestion_id, {"reward": 1.25, "degraded": False})
    second = _rec(CIFAR, "policy", changed=True)
    append_record(path, second)
    update_outcome(path, second.suggestion_id, {"reward": -0.75, "degraded": True})
    append_record(path, _rec(CIFAR, "rollback: val loss +4 %", changed=True))
    append_record(path, _rec(CIFAR, "unchanged: hysteresis", changed=False))
    append_record(path, _rec(IMDB, "needs approval: batch_size x2", changed=False))
    return path


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _labels(key: WorkloadKey, **extra: str) -> frozenset[tuple[str, str]]:
    return frozenset(
        {"dataset": key.dataset, "model": key.model, "framework": key.framework, **extra}.items()
    )


def test_decision_labels_follow_the_recorded_reason() -> None:
    assert decision_of(_rec(CIFAR, "policy", changed=True)) == "changed"
    assert decision_of(_rec(CIFAR, "rollback: failed (oom)", changed=True)) == "rollback"
    assert decision_of(_rec(CIFAR, "unchanged: no data", changed=False)) == "unchanged"
    assert decision_of(_rec(CIFAR, "needs approval: lr x3", changed=False)) == "needs_approval"
    assert decision_of(_rec(CIFAR, "something new", changed=False)) == "other"


def test_metrics_count_decisions_rollbacks_feedback_and_policy(audit_log: Path) -> None:
    got = _samples(render_metrics([audit_log]))

    def suggestions(key: WorkloadKey, decision: str) -> float:
        return got[("jpo_suggestions_total", _labels(key, decision=decision))]

    assert suggestions(CIFAR, "changed") == 2
    assert suggestions(CIFAR, "rollback") == 1
    assert suggestions(CIFAR, "unchanged") == 1
    assert suggestions(IMDB, "needs_approval") == 1
    assert got[("jpo_rollbacks_total", _labels(CIFAR))] == 1
    assert got[("jpo_feedback_total", _labels(CIFAR, verdict="ok"))] == 1
    assert got[("jpo_feedback_total", _labels(CIFAR, verdict="degraded"))] == 1
    assert got[("jpo_last_reward", _labels(CIFAR))] == -0.75  # the newest scored run
    assert ("jpo_last_reward", _labels(IMDB)) not in got  # never scored: absent, not 0
    policy = _labels(CIFAR, policy_version="v3", source="jpo/data/policy")
    assert got[("jpo_policy_info", policy)] == 1
    assert got[("jpo_audit_log_up", frozenset({("path", str(audit_log))}))] == 1


def test_a_corrupt_log_is_reported_down_and_exports_no_series(
    audit_log: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "suggestion", "dataset": 1}\n', encoding="utf-8")
    got = _samples(render_metrics([audit_log, bad]))
    assert got[("jpo_audit_log_up", frozenset({("path", str(bad))}))] == 0
    assert got[("jpo_audit_log_up", frozenset({("path", str(audit_log))}))] == 1
    assert got[("jpo_suggestions_total", _labels(CIFAR, decision="changed"))] == 2


def test_missing_log_is_empty_and_up(tmp_path: Path) -> None:
    missing = tmp_path / "none.jsonl"
    got = _samples(render_metrics([missing]))
    assert got == {("jpo_audit_log_up", frozenset({("path", str(missing))})): 1.0}


def test_collector_rereads_a_log_that_grew(audit_log: Path) -> None:
    collector = AuditLogCollector([audit_log])

    def changed_count() -> float:
        for family in collector.collect():
            for s in family.samples:
                if s.name == "jpo_suggestions_total" and s.labels == dict(
                    dataset="cifar10", model="resnet18", framework="pytorch", decision="changed"
                ):
                    return s.value
        raise AssertionError("no changed series")

    assert changed_count() == 2
    append_record(audit_log, _rec(CIFAR, "policy", changed=True))
    assert changed_count() == 3


def test_textfile_is_written_for_node_exporter(audit_log: Path, tmp_path: Path) -> None:
    out = tmp_path / "jpo.prom"
    write_textfile(out, [audit_log])
    assert _samples(out.read_text())[("jpo_rollbacks_total", _labels(CIFAR))] == 1
    assert list(tmp_path.glob("jpo.prom.*")) == []  # no temp file left behind


def _jpo(*args: str) -> list[str]:
    return [sys.executable, "-m", "jpo.cli.app", *args]


def test_cli_refuses_port_and_textfile_together(audit_log: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        _jpo(
            "metrics",
            "--log",
            str(audit_log),
            "--port",
            "9",
            "--textfile",
            str(tmp_path / "x.prom"),
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "not both" in proc.stderr
    assert "Traceback" not in proc.stderr


@contextlib.contextmanager
def _jpo_metrics_scraped(audit_log: Path, prometheus_factory) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    """`jpo metrics --port` serving ``audit_log``, scraped by a real Prometheus (job jpo)."""
    port = free_port()
    env = {**os.environ, "JPO_AUDIT_LOG": str(audit_log)}
    proc = subprocess.Popen(
        _jpo("metrics", "--port", str(port), "--addr", "127.0.0.1"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "jpo metrics did not start"
                time.sleep(0.2)
        server = prometheus_factory(targets=[("jpo", f"127.0.0.1:{port}")])
        server.wait_for_scrape("jpo")
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_prometheus_scrapes_jpo_metrics(audit_log: Path, prometheus_factory) -> None:
    with _jpo_metrics_scraped(audit_log, prometheus_factory) as server:
        result = server.wait_for('jpo_suggestions_total{dataset="cifar10",decision="changed"}')
        assert float(result[0]["value"][1]) == 2
        result = server.wait_for('jpo_rollbacks_total{model="resnet18"}')
        assert float(result[0]["value"][1]) == 1


def test_a_torn_tail_skips_the_line_and_exports_the_rest(audit_log: Path) -> None:
    with audit_log.open("ab") as f:
        f.write(b'{"kind": "suggestion", "datas')  # a short write on a full disk
    got = _samples(render_metrics([audit_log]))
    assert got[("jpo_audit_log_up", frozenset({("path", str(audit_log))}))] == 1
    assert got[("jpo_suggestions_total", _labels(CIFAR, decision="changed"))] == 2


# ------------------------------------------------------------------ Grafana dashboard
def _jpo_exported(audit_log: Path) -> set[str]:
    """Every sample name `jpo metrics` exports for a log with every decision kind."""
    text = render_metrics([audit_log])
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def _serve_exported(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Names the Serve replicas export through Ray (their definitions, Ray's naming)."""
    import ray.serve._private.replica as ray_replica
    import ray.util.metrics as ray_metrics

    from jpo.serving.app import _ReplicaMetrics

    defined: list[tuple[str, str]] = []

    def recorder(kind: str) -> Any:
        def make(name: str, **_kw: Any) -> Any:
            defined.append((kind, name))
            return types.SimpleNamespace(inc=lambda **_: None, set=lambda *_a, **_k: None)

        return make

    monkeypatch.setattr(ray_metrics, "Counter", recorder("counter"))
    monkeypatch.setattr(ray_metrics, "Gauge", recorder("gauge"))
    _ReplicaMetrics()
    assert {n for _, n in defined} == {"jpo_serve_suggestions", "jpo_serve_policy_loaded"}
    names = {f"ray_{n}_total" if kind == "counter" else f"ray_{n}" for kind, n in defined}
    # Ray Serve's own per-replica histograms (latency), from Ray's own definitions
    source = Path(ray_replica.__file__).read_text(encoding="utf-8")
    for n in re.findall(r'metrics\.Histogram\(\s*"([a-z0-9_]+)"', source):
        names |= {f"ray_{n}_bucket", f"ray_{n}_sum", f"ray_{n}_count"}
    return names


def test_every_dashboard_panel_reads_a_metric_jpo_exports(
    audit_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jpo.reporting.dashboard import DASHBOARD_PATH, load_dashboard, metric_names, panel_queries

    dashboard = load_dashboard()
    assert DASHBOARD_PATH.as_posix().endswith("configs/k8s/dashboards/jpo-fleet.json")
    queries = panel_queries(dashboard)
    exported = _jpo_exported(audit_log) | _serve_exported(monkeypatch)
    titled = [p for p in dashboard["panels"] if p.get("type") != "row"]
    assert titled and all(p.get("targets") for p in titled)
    for q in queries:
        names = metric_names(q.expr)
        assert names, f"panel {q.panel!r} {q.ref_id}: no JPO/Ray metric in {q.expr!r}"
        missing = names - exported
        assert not missing, f"panel {q.panel!r} reads {missing}, which nothing exports"
    read = set().union(*(metric_names(q.expr) for q in queries))
    for wanted in (
        "jpo_suggestions_total",  # suggestions by decision
        "jpo_rollbacks_total",
        "jpo_last_reward",
        "jpo_feedback_total",
        "jpo_policy_info",
        "ray_jpo_serve_policy_loaded",  # the served policy version
        "ray_serve_deployment_processing_latency_ms_bucket",  # Serve latency
    ):
        assert wanted in read, wanted
    by_title = {p["title"]: p for p in titled}
    assert "decision" in by_title["Suggestions by decision (total)"]["targets"][0]["expr"]


@pytest.mark.slow
def test_dashboard_queries_return_data_from_a_real_prometheus(
    audit_log: Path, prometheus_factory
) -> None:
    """Every panel over `jpo metrics` answers with data (Serve's: tests/serving/test_app.py)."""
    from jpo.reporting.dashboard import instantiate, load_dashboard, metric_names, panel_queries

    queries = [
        q
        for q in panel_queries(load_dashboard())
        if all(n.startswith("jpo_") for n in metric_names(q.expr))
    ]
    assert len(queries) >= 9
    with _jpo_metrics_scraped(audit_log, prometheus_factory) as server:
        for q in queries:
            result = server.wait_for(instantiate(q.expr), timeout_s=60)
            assert result, (q.panel, q.expr)
        decisions = server.wait_for(
            instantiate('sum by (decision) (jpo_suggestions_total{dataset=~"$dataset"})')
        )
        counts = {r["metric"]["decision"]: float(r["value"][1]) for r in decisions}
        assert counts == {"changed": 2, "rollback": 1, "unchanged": 1, "needs_approval": 1}
