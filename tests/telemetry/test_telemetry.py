"""MetricSource: one shared suite run against both backends, plus Prometheus specifics.

The Prometheus backend reads a real server into which a fake cluster's raw series
(cAdvisor, kube-state-metrics, DCGM incl. exported_pod, training exporter) were
backfilled with promtool; the Parquet backend reads the canonical values of the same runs
from a history store. Both must give the same answers.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from fakes.cluster import ClusterExporter, FakeRun, canonical_table, openmetrics_history

from jpo.telemetry.history import append_history
from jpo.telemetry.prometheus import (
    EmptyResult,
    NonFiniteSample,
    PrometheusClient,
    RunStillRunning,
    StaleData,
    TooFewPoints,
)
from jpo.telemetry.promql import load_catalog
from jpo.telemetry.schema import HISTORY_SCHEMA
from jpo.telemetry.sources import MetricSource, ParquetSource, PrometheusSource
from jpo.workload.types import WorkloadKey

W1 = WorkloadKey("cifar10", "resnet18", "pytorch")
W2 = WorkloadKey("mnist", "mlp", "jax")
UNKNOWN = WorkloadKey("imagenet", "vit", "pytorch")

T0 = float(int(time.time() // 3600) * 3600 - 3 * 3600)  # 3 h ago, on the hour
RUNS = [
    FakeRun("cifar10", "resnet18", "pytorch", "r1", T0, T0 + 1200),
    FakeRun(
        "cifar10",
        "resnet18",
        "pytorch",
        "r2",
        T0 + 1800,
        T0 + 3000,
        cpu_used=3.0,
        throughput=1500.0,
    ),
    FakeRun(
        "mnist",
        "mlp",
        "jax",
        "r7",
        T0 + 600,
        T0 + 2400,
        gpu_util_pct=(40.0, 60.0),
        dcgm_exported=True,
        mem_used=1.0 * 2**30,
        fb_used_mib=2000.0,
        fb_free_mib=38000.0,
    ),
]
EXPECTED = {(r.dataset, r.model, r.framework, r.run_id): r.expected() for r in RUNS}


def medians(table: pa.Table) -> dict[str, float]:
    out = {}
    for metric in pc.unique(table["metric"]).to_pylist():
        values = table.filter(pc.equal(table["metric"], metric))["value"].to_numpy()
        out[metric] = float(np.median(values))
    return out


def assert_matches(table: pa.Table, run: tuple[str, str, str, str]) -> None:
    assert table.schema.equals(HISTORY_SCHEMA)
    assert table.num_rows > 0
    assert set(pc.unique(table["run_id"]).to_pylist()) == {run[3]}
    got = medians(table)
    for metric, value in EXPECTED[run].items():
        assert got[metric] == pytest.approx(value, rel=1e-6), metric


@pytest.fixture(scope="module")
def prometheus_server(prometheus_factory):
    return prometheus_factory(openmetrics=[openmetrics_history(RUNS)])


@pytest.fixture(scope="module")
def parquet_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("history")
    append_history(root, canonical_table(RUNS))
    return root


@pytest.fixture(params=["prometheus", "parquet"])
def source(request) -> MetricSource:
    if request.param == "prometheus":
        server = request.getfixturevalue("prometheus_server")
        return PrometheusSource.from_url(server.url)
    return ParquetSource(request.getfixturevalue("parquet_root"))


pytestmark = pytest.mark.slow


# --- the shared suite: every MetricSource backend must pass these -------------------------


def test_list_runs_oldest_first(source: MetricSource) -> None:
    assert source.list_runs(W1) == ["r1", "r2"]
    assert source.list_runs(W2) == ["r7"]
    assert source.list_runs(UNKNOWN) == []


def test_run_table_defaults_to_latest_run(source: MetricSource) -> None:
    assert_matches(source.run_table(W1), ("cifar10", "resnet18", "pytorch", "r2"))


def test_run_table_for_a_named_run(source: MetricSource) -> None:
    assert_matches(source.run_table(W1, "r1"), ("cifar10", "resnet18", "pytorch", "r1"))


def test_an_unknown_workload_on_prometheus_names_the_label_allowlist(prometheus_server) -> None:
    """kube-state-metrics 2.x drops pod labels unless allowlisted: the error says how."""
    source = PrometheusSource.from_url(prometheus_server.url)
    allowlist = r"--metric-labels-allowlist=pods=\[dataset,model,framework,run_id\]"
    with pytest.raises(EmptyResult, match=allowlist):
        source.run_table(UNKNOWN)


def test_dcgm_exported_pod_form_joins_the_workload(source: MetricSource) -> None:
    assert_matches(source.run_table(W2), ("mnist", "mlp", "jax", "r7"))


def test_unknown_workload_or_run_is_empty_result(source: MetricSource) -> None:
    with pytest.raises(EmptyResult, match="imagenet"):
        source.run_table(UNKNOWN)
    with pytest.raises(EmptyResult, match="nope"):
        source.run_table(W1, "nope")


def test_history_of_a_quiet_window_is_empty_not_an_error(source: MetricSource) -> None:
    # a continuous cycle pulls the window since its last pull: a quiet one adds nothing
    table = source.history(T0 - 7200, T0 - 3600, 15.0)
    assert table.schema.equals(HISTORY_SCHEMA)
    assert table.num_rows == 0


def test_history_covers_every_workload_and_metric(source: MetricSource) -> None:
    table = source.history(T0, T0 + 3600, 15.0)
    assert table.schema.equals(HISTORY_SCHEMA)
    keys = table.group_by(["dataset", "model", "framework", "run_id"]).aggregate([])
    assert sorted(tuple(r.values()) for r in keys.to_pylist()) == sorted(EXPECTED)
    metrics = set(pc.unique(table["metric"]).to_pylist())
    assert set(EXPECTED[("cifar10", "resnet18", "pytorch", "r1")]) <= metrics


# --- Prometheus specifics -----------------------------------------------------------------


def test_run_table_is_clipped_to_the_run(prometheus_server) -> None:
    table = PrometheusSource.from_url(prometheus_server.url).run_table(W1, "r1")
    ts = table["timestamp"].cast(pa.int64()).to_numpy() / 1000.0
    assert ts.min() >= T0 and ts.max() <= T0 + 1200


def test_run_outside_lookback_is_stale_not_empty(prometheus_server) -> None:
    source = PrometheusSource.from_url(prometheus_server.url)
    with pytest.raises(StaleData, match="10m"):
        source.run_table(W1, lookback="10m")


def test_history_chunks_under_the_points_limit(prometheus_server) -> None:
    catalog = load_catalog()
    small = replace(catalog, settings=replace(catalog.settings, max_points_per_series=7))
    client = PrometheusClient(prometheus_server.url, timeout_s=30, retries=0)
    chunked = PrometheusSource(client, small, metrics=["cpu_util", "gpu_util"]).history(
        T0, T0 + 3600, 15.0
    )
    whole = PrometheusSource(client, catalog, metrics=["cpu_util", "gpu_util"]).history(
        T0, T0 + 3600, 15.0
    )
    order = [("dataset", "ascending"), ("run_id", "ascending"), ("metric", "ascending")]
    order.append(("timestamp", "ascending"))
    assert chunked.num_rows == whole.num_rows > 0
    assert chunked.sort_by(order).equals(whole.sort_by(order))
    r1 = chunked.filter(pc.equal(chunked["run_id"], "r1"))
    ts = r1.filter(pc.equal(r1["metric"], "cpu_util"))["timestamp"].cast(pa.int64())
    assert pc.count_distinct(ts).as_py() == len(ts)  # no step twice at chunk seams


def test_history_pulls_align_to_the_step(prometheus_server) -> None:
    source = PrometheusSource.from_url(prometheus_server.url)
    a = source.history(T0 + 7, T0 + 600, 15.0)
    ms = a["timestamp"].cast(pa.int64()).to_numpy()
    assert (ms % 15000 == 0).all()


def test_live_scrape_of_the_fake_cluster(prometheus_factory) -> None:
    live = FakeRun("coco", "detr", "pytorch", "live1", gpu_util_pct=(70.0,))
    exporter = ClusterExporter([live])
    try:
        server = prometheus_factory(targets=[("cluster", exporter.address)])
        server.wait_for_scrape("cluster")
        # rate() needs two scrapes inside its window: poll until the CPU series appears.
        catalog = load_catalog()
        # Scrapes every 1 s: irate() over 5 s always holds two scrapes.
        fast = replace(
            catalog.settings, run_step_s=1.0, discovery_step_s=1.0, lookback="10m", rate_window="5s"
        )
        source = PrometheusSource.from_url(server.url, replace(catalog, settings=fast))
        server.wait_for(source.catalog.render("cpu_util"))
        server.wait_for(
            'count_over_time(kube_pod_labels{label_run_id="live1"}[5m])',
            lambda r: bool(r) and float(r[0]["value"][1]) >= 20,
        )
        table = source.run_table(WorkloadKey("coco", "detr", "pytorch"))
        got = medians(table)
        assert got["gpu_util"] == pytest.approx(0.7)
        assert got["mem_util"] == pytest.approx(0.75)
        assert got["cpu_util"] == pytest.approx(0.5, rel=0.2)  # live rate: scrape jitter
    finally:
        exporter.close()


# --- Parquet specifics --------------------------------------------------------------------


def test_parquet_rejects_non_finite_and_short_runs(tmp_path) -> None:
    run = FakeRun("a", "b", "c", "short", T0, T0 + 15)
    append_history(tmp_path, canonical_table([run]))
    with pytest.raises(TooFewPoints, match="short"):
        ParquetSource(tmp_path, min_points=4).run_table(WorkloadKey("a", "b", "c"))
    bad = canonical_table([FakeRun("a", "b", "c", "nan", T0, T0 + 600)])
    values = bad["value"].to_numpy().copy()
    values[3] = np.nan
    bad = bad.set_column(6, "value", pa.array(values))
    append_history(tmp_path, bad)
    with pytest.raises(NonFiniteSample, match="non-finite"):
        ParquetSource(tmp_path).run_table(WorkloadKey("a", "b", "c"), "nan")


def test_zero_limit_is_non_finite_never_zero(prometheus_factory) -> None:
    """A CPU limit of 0 makes cpu_util +Inf: JPO raises instead of reading 0 or dropping it."""
    run = FakeRun("zero", "limit", "pytorch", "z1", T0, T0 + 600, cpu_limit=0.0)
    server = prometheus_factory(openmetrics=[openmetrics_history([run])])
    source = PrometheusSource.from_url(server.url)
    with pytest.raises(NonFiniteSample, match="cpu_util"):
        source.run_table(WorkloadKey("zero", "limit", "pytorch"))
    with pytest.raises(NonFiniteSample, match="non-finite"):
        source.history(T0, T0 + 600, 15.0)
    kept = source.history(T0, T0 + 600, 15.0, drop_nonfinite=True)
    assert "cpu_util" not in set(kept["metric"].to_pylist())
    assert "mem_util" in set(kept["metric"].to_pylist())


def test_simulator_history_reads_back_identically(prometheus_factory, tmp_path) -> None:
    """Contract with jpo.sim.simulator: its OpenMetrics, backfilled and read through the
    templates, gives the same rows as its Parquet (cpu_util: irate has no first sample)."""
    from jpo.sim.response import load_catalog as load_profiles
    from jpo.sim.simulator import generate_history

    names = sorted(load_profiles())[:2]
    end = float(int(time.time() // 3600) * 3600) - 8 * 3600
    # two runs of c4-t5 take 7.8 h: the window must hold them (generate_history keeps runs
    # inside [start, end])
    generated = generate_history(
        names, 2, tmp_path / "pq", openmetrics=tmp_path / "h.om", start=end - 12 * 3600, end=end
    )
    server = prometheus_factory(openmetrics=[(tmp_path / "h.om").read_text(encoding="utf-8")])
    prom, parquet = PrometheusSource.from_url(server.url), ParquetSource(tmp_path / "pq")
    for run in generated.runs:
        row = run.table.slice(0, 1).to_pylist()[0]
        key = WorkloadKey(row["dataset"], row["model"], row["framework"])
        assert prom.list_runs(key) == parquet.list_runs(key)
        a, b = prom.run_table(key, row["run_id"]), parquet.run_table(key, row["run_id"])
        for metric in sorted(set(b["metric"].to_pylist())):
            va = a.filter(pc.equal(a["metric"], metric))["value"].to_numpy()
            vb = b.filter(pc.equal(b["metric"], metric))["value"].to_numpy()
            if metric == "cpu_util":
                vb = vb[1:]
            np.testing.assert_allclose(va, vb, rtol=1e-6, atol=1e-9, err_msg=metric)


# --- run selection: the most recent FINISHED run (CI path) ---------------------------------

# cifar10-resnet18: two runs, the newer one still running (cut halfway, run_status 0 throughout);
# fashionmnist-cnn: one run, still running.
FINISHED_WL, RUNNING_WL = "cifar10-resnet18", "fashionmnist-cnn"


def _still_running(run, fraction: float = 0.5):  # type: ignore[no-untyped-def]
    """Return ``run`` cut after ``fraction`` of its scrapes: every run_status sample is 0."""
    from jpo.sim.response import history_table

    k = max(int(run.times_s.size * fraction), 6)
    series = {m: v[:k].copy() for m, v in run.series.items()}
    assert not series["run_status"].any()
    times = run.times_s[:k]
    return replace(
        run,
        times_s=times,
        series=series,
        table=history_table(run.profile.key, run.run_id, times, series),
    )


@pytest.fixture(scope="module")
def selection_runs():  # type: ignore[no-untyped-def]
    from jpo.sim.simulator import generate_runs

    end = float(int(time.time() // 3600) * 3600) - 4 * 3600
    done, newer = generate_runs([FINISHED_WL], 2, start=end - 30 * 3600, end=end)
    (only,) = generate_runs([RUNNING_WL], 1, seed=1, start=end - 30 * 3600, end=end)
    return [done, _still_running(newer), _still_running(only)]


@pytest.fixture(scope="module")
def selection_prometheus(prometheus_factory, selection_runs):  # type: ignore[no-untyped-def]
    import io

    from jpo.sim.simulator import write_openmetrics

    buf = io.StringIO()
    write_openmetrics(selection_runs, buf)
    return prometheus_factory(openmetrics=[buf.getvalue()])


@pytest.fixture(params=["prometheus", "parquet"])
def selection_source(request, selection_runs, tmp_path_factory) -> MetricSource:  # type: ignore[no-untyped-def]
    if request.param == "prometheus":
        return PrometheusSource.from_url(request.getfixturevalue("selection_prometheus").url)
    root = tmp_path_factory.mktemp("selection")
    append_history(root, pa.concat_tables([r.table for r in selection_runs]))
    return ParquetSource(root)


def _key(run) -> WorkloadKey:  # type: ignore[no-untyped-def]
    return WorkloadKey(run.profile.dataset, run.profile.model, run.profile.framework)


def test_run_table_skips_a_newer_run_still_running(selection_source, selection_runs) -> None:
    done, newer, _ = selection_runs
    key = _key(done)
    assert selection_source.list_runs(key) == [done.run_id, newer.run_id]
    choice = selection_source.select_run(key)
    assert choice.run_id == done.run_id
    assert [(r.run_id, r.status) for r in choice.skipped] == [(newer.run_id, 0)]
    assert newer.run_id in choice.note() and done.run_id in choice.note()
    table = selection_source.run_table(key)
    assert set(pc.unique(table["run_id"]).to_pylist()) == {done.run_id}
    status = table.filter(pc.equal(table["metric"], "run_status"))
    assert status["value"].to_numpy()[-1] in (1, 2, 3, 4)  # its final sample is read
    # a named run is still served as asked, running or not
    named = selection_source.run_table(key, newer.run_id)
    assert set(pc.unique(named["run_id"]).to_pylist()) == {newer.run_id}


def test_only_a_running_run_is_run_still_running(selection_source, selection_runs) -> None:
    only = selection_runs[2]
    for call in (selection_source.select_run, selection_source.run_table):
        with pytest.raises(RunStillRunning, match=rf"{only.run_id}.*still running.*rerun"):
            call(_key(only))


def test_simulator_runs_are_read_back_whole(prometheus_factory, tmp_path) -> None:
    """Run discovery keeps every scrape of a run, the first and the last included: each
    metric's timestamps from run_table are the simulator's (cpu_util: irate has no first
    sample). One run is scraped off the 15 s query grid (7 s late, as a live scrape may be):
    each sample then shows at the next grid point, the last one (final run_status) too."""
    import io

    from jpo.sim.simulator import generate_runs, shift_run, write_openmetrics

    end = float(int(time.time() // 3600) * 3600) - 5 * 3600 + 7 * 15  # off the minute grid
    runs = generate_runs(["mnist-lenet", "higgs-mlp"], 3, seed=3, start=end - 20 * 3600, end=end)
    runs[1] = shift_run(runs[1], 7.0)
    buf = io.StringIO()
    write_openmetrics(runs, buf)
    server = prometheus_factory(openmetrics=[buf.getvalue()])
    source = PrometheusSource.from_url(server.url)
    for run in runs:
        table = source.run_table(_key(run), run.run_id)
        step = source.catalog.settings.run_step_s
        want_ms = np.rint(np.ceil(run.times_s / step) * step * 1000).astype(np.int64)
        for metric in sorted(run.series):
            got = table.filter(pc.equal(table["metric"], metric))
            ms = got["timestamp"].cast(pa.int64()).to_numpy()
            expect = want_ms[1:] if metric == "cpu_util" else want_ms
            np.testing.assert_array_equal(ms, expect, err_msg=f"{run.run_id} {metric}")
            values = got["value"].to_numpy()
            ref = run.series[metric][1:] if metric == "cpu_util" else run.series[metric]
            np.testing.assert_allclose(values, ref, rtol=1e-6, atol=1e-9, err_msg=metric)


def _jpo(*args: str, cwd=None):  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "jpo.cli.app", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


@pytest.mark.parametrize("workload", [FINISHED_WL, RUNNING_WL])
def test_jpo_suggest_condenses_the_latest_finished_run(
    workload: str, selection_prometheus, selection_runs, tmp_path
) -> None:
    """The CI stage over a real Prometheus: a newer run still running is skipped (and named);
    with only a running run, config.ini stays byte-identical, exit 11, the run is named."""
    import json
    import shutil
    from pathlib import Path

    example = Path(__file__).parents[2] / "examples" / "workloads" / workload / "config.ini"
    config = tmp_path / "config.ini"
    shutil.copy(example, config)
    before = config.read_bytes()
    done, newer, only = selection_runs
    out = _jpo(
        "suggest", "--config", str(config), "--prometheus", selection_prometheus.url, "--json"
    )
    assert "Traceback" not in out.stderr, out.stderr
    result = json.loads(out.stdout)
    if workload == RUNNING_WL:
        assert out.returncode == 11, out.stderr
        assert result["status"] == "no_data"
        assert only.run_id in result["message"] and "still running" in result["message"]
        assert "rerun" in result["message"] and str(config) in result["message"]
        assert config.read_bytes() == before
        assert not (tmp_path / ".jpo").exists() or not any((tmp_path / ".jpo").rglob("*.jsonl"))
    else:
        assert out.returncode in (0, 10, 12), out.stderr
        assert result["run_id"] == done.run_id
        assert any(newer.run_id in n and "not finished" in n for n in result["notes"])
        log = next(tmp_path.rglob("*.jsonl"))
        record = json.loads(log.read_text().splitlines()[-1])
        assert record["telemetry"]["run_id"] == done.run_id


# --- runs named by a Kubernetes Job or a Kubeflow training job (configs/metrics.toml) --------

W3 = WorkloadKey("imdb", "lstm", "pytorch")
LABELLED_RUNS = [
    # a Kubernetes Job's pod: job-name (and batch.kubernetes.io/job-name), no run_id label
    FakeRun("imdb", "lstm", "pytorch", "imdb-train-28991", T0, T0 + 900, run_label="job_name"),
    # a Kubeflow PyTorchJob's pod: training.kubeflow.org/job-name
    FakeRun(
        "imdb",
        "lstm",
        "pytorch",
        "imdb-pytorchjob-4",
        T0 + 1200,
        T0 + 2100,
        cpu_used=3.0,
        run_label="training_kubeflow_org_job_name",
    ),
    # a pod with the workload labels but nothing naming its run: not a run
    FakeRun("imdb", "lstm", "pytorch", "nameless", T0 + 2400, T0 + 3000, run_label=None),
]


@pytest.fixture(scope="module")
def labelled_prometheus(prometheus_factory):
    return prometheus_factory(openmetrics=[openmetrics_history(LABELLED_RUNS)])


def test_runs_are_found_by_job_and_kubeflow_job_names(labelled_prometheus) -> None:
    source = PrometheusSource.from_url(labelled_prometheus.url)
    assert source.list_runs(W3) == ["imdb-train-28991", "imdb-pytorchjob-4"]
    for run in LABELLED_RUNS[:2]:
        table = source.run_table(W3, run.run_id)
        assert set(pc.unique(table["run_id"]).to_pylist()) == {run.run_id}
        got = medians(table)
        for metric, value in run.expected().items():  # pod (cAdvisor, DCGM) and training series
            assert got[metric] == pytest.approx(value, rel=1e-6), (run.run_id, metric)
    assert source.select_run(W3).run_id == "imdb-pytorchjob-4"
    history = source.history(T0 - 600, T0 + 3600, 15.0)
    pod_rows = history.filter(pc.equal(history["metric"], "cpu_util"))
    assert set(pc.unique(pod_rows["run_id"]).to_pylist()) == {
        "imdb-train-28991",
        "imdb-pytorchjob-4",
    }


def test_a_job_named_run_out_of_lookback_is_stale_not_unknown(labelled_prometheus) -> None:
    """The never-seen/stale probe looks at every run label, not only run_id."""
    source = PrometheusSource.from_url(labelled_prometheus.url)
    with pytest.raises(StaleData, match="10m"):
        source.select_run(W3, lookback="10m")
    with pytest.raises(StaleData, match="imdb-train-28991"):
        source.run_table(W3, "imdb-train-28991", lookback="10m")
    with pytest.raises(EmptyResult, match="label_training_kubeflow_org_job_name=") as err:
        source.run_table(W3, "never-ran", lookback="10m")
    assert 'label_job_name="never-ran"' in str(err.value)
    assert "[runs] run_labels" in str(err.value)


def test_with_run_id_only_those_runs_are_invisible(labelled_prometheus) -> None:
    """What the catalog did before [runs] run_labels: only the run_id pod label counted."""
    catalog = dataclasses.replace(load_catalog(), run_labels=())
    source = PrometheusSource.from_url(labelled_prometheus.url, catalog)
    assert source.list_runs(W3) == []


def test_no_run_explained_with_the_labels_and_pod_counts(labelled_prometheus) -> None:
    source = PrometheusSource.from_url(labelled_prometheus.url)
    why = source.explain_no_runs(T0 - 600, T0 + 3600)
    assert "3 pod(s) carried the workload labels" in why
    assert "label_job_name: 1" in why and "label_training_kubeflow_org_job_name: 1" in why
    bare = dataclasses.replace(load_catalog(), run_labels=())
    why = PrometheusSource.from_url(labelled_prometheus.url, bare).explain_no_runs(
        T0 - 600, T0 + 3600
    )
    assert "none of them a run label (label_run_id: 0)" in why
    assert "[runs] run_labels" in why and "job-name" in why
