"""Safe PromQL: pinned escapes and query strings, and proof against a real Prometheus."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from fakes.cluster import FakeRun, openmetrics_history
from hypothesis import given
from hypothesis import strategies as st

from jpo.errors import ConfigError
from jpo.telemetry.prometheus import EmptyResult, PrometheusClient
from jpo.telemetry.promql import (
    RUNS,
    duration,
    escape_label_value,
    load_catalog,
    matcher,
    parse_duration_s,
    render_template,
)
from jpo.workload.types import WorkloadKey

HOSTILE = ['a"b', "a\\b", "a\nb", 'x"} or vector(1) #', "ümlaut-数据", "{{selector}}"]


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("cifar10", '"cifar10"'),
        ('a"b', '"a\\"b"'),
        ("a\\b", '"a\\\\b"'),
        ("a\nb", '"a\\nb"'),
        ("a\rb\tc", '"a\\rb\\tc"'),
        ('x"} or vector(1) #', '"x\\"} or vector(1) #"'),
        ("ümlaut-数据", '"ümlaut-数据"'),
        ("\x00\x1b\x7f\x85", '"\\x00\\x1b\\x7f\\u0085"'),
        ("", '""'),
    ],
)
def test_escape_label_value_pins_go_string_rules(value: str, literal: str) -> None:
    assert escape_label_value(value) == literal


def test_invalid_utf8_is_rejected() -> None:
    with pytest.raises(ConfigError, match="UTF-8"):
        escape_label_value(b"\xff\xfe")
    with pytest.raises(ConfigError, match="surrogate"):
        escape_label_value("a\udc80b")
    assert escape_label_value("é".encode()) == '"é"'


@given(st.text())
def test_escaped_value_is_one_closed_string(value: str) -> None:
    """Whatever the value, the literal is "..." with every inner quote escaped."""
    literal = escape_label_value(value)
    assert literal.startswith('"') and literal.endswith('"')
    inner = literal[1:-1]
    i = 0
    while i < len(inner):
        if inner[i] == "\\":
            i += 2
            continue
        assert inner[i] not in '"\n'
        i += 1
    assert not inner.endswith("\\") or inner.endswith("\\\\")


def test_matcher_rejects_bad_label_names_and_operators() -> None:
    assert matcher("label_model", 'a"b') == 'label_model="a\\"b"'
    with pytest.raises(ConfigError):
        matcher("bad-name", "x")
    with pytest.raises(ConfigError):
        matcher("ok", "x", "=~")


def test_rendered_queries_are_pinned_for_hostile_values() -> None:
    catalog = load_catalog()
    key = WorkloadKey('x"} or vector(1) #', "a\\b", "a\nb")
    assert catalog.render("throughput", key, 'a"b') == (
        "sum by (dataset, model, framework, run_id) (jpo_training_throughput_samples_per_second"
        '{dataset="x\\"} or vector(1) #",model="a\\\\b",framework="a\\nb",run_id="a\\"b"})'
    )
    # the run label is derived from [runs] run_labels (first non-empty), then matched
    derive = (
        '"jpo_run_labels", ";", "label_run_id", "label_training_kubeflow_org_job_name", '
        '"label_batch_kubernetes_io_job_name", "label_job_name"), "label_run_id", "$1", '
        '"jpo_run_labels", ";*([^;]+).*")'
    )
    assert catalog.render(RUNS, WorkloadKey("ümlaut-数据", "m", "{{by}}")) == (
        "max by (label_dataset, label_model, label_framework, label_run_id) ("
        "(label_replace(label_join(timestamp(kube_pod_labels{"
        'label_dataset="ümlaut-数据",label_model="m",label_framework="{{by}}"}), '
        f"{derive} unless on (label_run_id) vector(1)))"
    )
    # a hostile run id: escaped as a PromQL string, and `$` kept literal in the replacement
    assert catalog.render(RUNS, WorkloadKey("d", "m", "f"), 'a"$1}') == (
        "max by (label_dataset, label_model, label_framework, label_run_id) ("
        "(label_replace(label_join(timestamp(kube_pod_labels{"
        'label_dataset="d",label_model="m",label_framework="f"}), '
        f"{derive} and on (label_run_id) "
        'label_replace(vector(1), "label_run_id", "a\\"$$1}", "", "")))'
    )


def test_all_workloads_selector_and_snippets() -> None:
    catalog = load_catalog()
    q = catalog.render("cpu_util")
    assert 'container!="",container!="POD"' in q
    assert 'kube_pod_labels{label_dataset!="",label_model!="",label_framework!=""}' in q
    assert "{{" not in q and "[1m]" in q
    assert "exported_pod" in catalog.render("gpu_util")


def test_unknown_placeholder_or_metric_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="nope"):
        render_template("up{{{nope}}}", {}, where="x")
    with pytest.raises(ConfigError, match="no template"):
        load_catalog().render("not_a_metric")
    bad = tmp_path / "metrics.toml"
    bad.write_text(
        (load_catalog().path.read_text()).replace('label_set = "training"', 'label_set = "nope"', 1)
    )
    with pytest.raises(ConfigError, match="nope"):
        load_catalog(bad)
    bad.write_text("[query\n")
    with pytest.raises(ConfigError, match="TOML"):
        load_catalog(bad)


def test_parse_duration() -> None:
    assert parse_duration_s("1h30m") == 5400
    assert parse_duration_s("7d") == 7 * 86400
    with pytest.raises(ConfigError):
        parse_duration_s("soon")


def test_step_windows_are_prometheus_durations_of_the_query_steps() -> None:
    assert duration(60) == "60000ms" and duration(0.5) == "500ms"
    assert parse_duration_s(duration(15)) == 15
    with pytest.raises(ConfigError, match="at least 1 ms"):
        duration(0.0001)
    catalog = load_catalog()
    # the final samples before a pod exits are read over each query's step (metrics.toml)
    step = duration(catalog.settings.discovery_step_s)
    assert "last_over_time(jpo_training_run_status{" in catalog.render("run_status")
    assert catalog.render("run_status").endswith(f"[{step}]))")
    assert catalog.render("val_loss").endswith(f"[{duration(catalog.settings.run_step_s)}]))")


# --- against the real Prometheus ----------------------------------------------------------

T0 = float(int(time.time() // 3600) * 3600 - 2 * 3600)
STORED = [*HOSTILE[:3], "ümlaut-数据", "ab", "a", "b", "x", "a\\\\b"]


@pytest.fixture(scope="module")
def hostile_prometheus(prometheus_factory):
    runs = [
        replace(FakeRun(ds, "m", "f", f"r{i}", T0, T0 + 300), throughput=100.0 + i)
        for i, ds in enumerate(STORED)
    ]
    return prometheus_factory(openmetrics=[openmetrics_history(runs)])


@pytest.mark.slow
@pytest.mark.parametrize("value", STORED)
def test_hostile_value_matches_exactly_its_own_series(hostile_prometheus, value: str) -> None:
    catalog = load_catalog()
    client = PrometheusClient(hostile_prometheus.url, timeout_s=30, retries=0)
    for metric in ("throughput", "cpu_util"):
        result = client.query(catalog.render(metric, WorkloadKey(value, "m", "f")), T0 + 120)
        label = "dataset" if metric == "throughput" else "label_dataset"
        assert [s.labels[label] for s in result.series] == [value]
    assert result.series[0].values[0] == pytest.approx(0.5)


@pytest.mark.slow
@pytest.mark.parametrize("value", ['x"} or vector(1) #', "{{selector}}", 'a"} or up{a="'])
def test_injection_attempt_matches_nothing(hostile_prometheus, value: str) -> None:
    catalog = load_catalog()
    client = PrometheusClient(hostile_prometheus.url, timeout_s=30, retries=0)
    for metric in ("throughput", "cpu_util", "gpu_util"):
        with pytest.raises(EmptyResult):
            client.query(catalog.render(metric, WorkloadKey(value, "m", "f")), T0 + 120)
    # while the all-workloads query does see every stored workload:
    everything = client.query(catalog.render("throughput"), T0 + 120)
    assert sorted(s.labels["dataset"] for s in everything.series) == sorted(STORED)
