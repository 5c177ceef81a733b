"""Metric sources: where a run's telemetry comes from, as HISTORY_SCHEMA Arrow tables.

:class:`MetricSource` is the abstract base; :class:`PrometheusSource` reads a live
Prometheus (the CI path and ``jpo history pull``), :class:`ParquetSource` reads the
Parquet history written by :mod:`jpo.telemetry.history` (training replay). Both return the same
long table (:data:`jpo.telemetry.schema.HISTORY_SCHEMA`) and raise the same
:class:`jpo.errors.TelemetryError` subclasses from :mod:`jpo.telemetry.prometheus`, so the code
above them cannot tell them apart. One shared test suite runs against both
(``tests/telemetry/test_telemetry.py``).

The CI path condenses the most recent FINISHED run (:meth:`MetricSource.select_run`): a
run whose latest ``run_status`` sample is 1 ok, 2 oom, 3 diverged or 4 failed; a run whose
latest sample is 0 is still running and is skipped (RunStillRunning when no finished run
is left). Its cost on Prometheus: one coarse range query to find the workload's runs and
their time span, one for their latest ``run_status``, then one range query that returns
every canonical metric of the chosen run (the templates joined with ``or``, each tagged
with a ``jpo_metric`` label).
"""

from __future__ import annotations

import abc
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jpo.telemetry.prometheus import (
    EmptyResult,
    NonFiniteSample,
    PrometheusClient,
    QueryResult,
    RunStillRunning,
    Series,
    StaleData,
    TooFewPoints,
    chunk_range,
)
from jpo.telemetry.promql import (
    GPUS,
    RUNS,
    WORKLOAD_FIELDS,
    MetricCatalog,
    load_catalog,
    matcher,
    parse_duration_s,
)
from jpo.telemetry.schema import HISTORY_SCHEMA, RUN_STATUS_CODES
from jpo.workload.types import WorkloadKey

RUNNING = 0
"""``run_status`` of a run that has not ended (jpo.telemetry.schema.RUN_STATUS_CODES)."""
FINISHED_STATUSES = frozenset(code for code in RUN_STATUS_CODES if code != RUNNING)
"""``run_status`` codes of a run that is over: 1 ok, 2 oom, 3 diverged, 4 failed."""

METRIC_LABEL = "jpo_metric"
"""Label that tags each metric's series in the combined per-run query."""


def _iso(t: float) -> str:
    """Return epoch seconds as an ISO-8601 UTC time, to the second."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch_s(t: float | datetime) -> float:
    return t.timestamp() if isinstance(t, datetime) else float(t)


def empty_history() -> pa.Table:
    """Return an empty table with HISTORY_SCHEMA."""
    return HISTORY_SCHEMA.empty_table()


def _numeric_array(values: np.ndarray, type_: pa.DataType) -> pa.Array:
    """Wrap a 1-d numpy array as an Arrow array without copying (and without pa.array).

    ``pa.array(<ndarray>)`` first asks pyarrow's pandas shim whether the input is a pandas
    object, which imports pandas (0.5 s cold); the CI stage never needs it.
    """
    arr = np.ascontiguousarray(values, dtype=type_.to_pandas_dtype())
    return pa.Array.from_buffers(type_, len(arr), [None, pa.py_buffer(arr)])


@contextmanager
def without_pandas() -> Iterator[None]:
    """Run a block with ``import pandas`` failing, so pyarrow works as if it were absent.

    pyarrow imports pandas lazily (0.5-0.8 s cold, benchmarks/suggest/RESULTS.md) the first
    time ``pa.array``, ``Array.to_numpy``, ``pa.scalar`` or ``Schema.empty_table`` runs, to
    recognise pandas inputs; pandas is optional for it, and a failed import is handled. The
    CI stage (``jpo suggest``) never hands pandas objects to pyarrow, so it runs inside
    this block. No-op when pandas is already imported. Code that needs
    ``Table.to_pandas()`` must not run inside it.
    """
    import sys

    if "pandas" in sys.modules:
        yield
        return
    blocker = _NoPandas()
    sys.meta_path.insert(0, blocker)
    try:
        yield
    finally:
        sys.meta_path.remove(blocker)


class _NoPandas:
    """A meta-path finder that makes ``import pandas`` fail (see :func:`without_pandas`)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"pandas is skipped in this process: {name}", name=name)
        return None


def result_to_table(
    result: QueryResult,
    metric: str | None,
    label_names: Sequence[str],
    *,
    drop_nonfinite: bool = False,
) -> pa.Table:
    """Convert a query result to HISTORY_SCHEMA rows, vectorized (no loop per sample).

    Args:
        result: parsed series.
        metric: canonical metric name of every series, or None to read it from each
            series' ``jpo_metric`` label.
        label_names: Prometheus label names of dataset, model, framework and run_id.
        drop_nonfinite: drop NaN/Inf samples instead of keeping them.
    """
    series = result.series
    if not series:
        return empty_history()
    lengths = np.fromiter((len(s.values) for s in series), dtype=np.int64, count=len(series))
    index = _numeric_array(np.repeat(np.arange(len(series), dtype=np.int64), lengths), pa.int64())
    ts = np.concatenate([s.timestamps for s in series])
    values = np.concatenate([s.values for s in series])
    ms = np.rint(ts * 1000.0).astype(np.int64)
    columns: dict[str, pa.Array] = {
        "timestamp": _numeric_array(ms, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    }
    for field, label in zip(WORKLOAD_FIELDS, label_names, strict=True):
        per_series = pa.array([s.labels.get(label, "") for s in series], type=pa.string())
        columns[field] = per_series.take(index)
    if metric is None:
        names = pa.array([s.labels.get(METRIC_LABEL, "") for s in series], type=pa.string())
        columns["metric"] = names.take(index)
    else:
        one = pa.array([metric], type=pa.string())
        columns["metric"] = one.take(_numeric_array(np.zeros(len(ms), np.int64), pa.int64()))
    columns["value"] = _numeric_array(values, pa.float64())
    table = pa.table(columns).select(HISTORY_SCHEMA.names).cast(HISTORY_SCHEMA)
    if drop_nonfinite:
        table = table.filter(pc.is_finite(table["value"]))
    return table


def sort_history(table: pa.Table) -> pa.Table:
    """Sort history rows by workload, run, metric and time."""
    keys = [*WORKLOAD_FIELDS, "metric", "timestamp"]
    return table.sort_by([(k, "ascending") for k in keys])


def check_run_table(table: pa.Table, what: str, min_points: int) -> pa.Table:
    """Raise NonFiniteSample / TooFewPoints for untrustworthy run rows; else return them."""
    finite = pc.is_finite(table["value"])
    if not pc.all(finite).as_py():
        bad = table.filter(pc.invert(finite))
        row = bad.slice(0, 1).to_pylist()[0]
        raise NonFiniteSample(
            f"{what}: {bad.num_rows} non-finite sample(s), first {row['metric']}={row['value']}"
            f" at {row['timestamp']}: fix the exporter or the template"
        )
    n_times = pc.count_distinct(table["timestamp"]).as_py()
    if n_times < min_points:
        raise TooFewPoints(
            f"{what}: only {n_times} distinct sample time(s), at least {min_points} are needed"
            " ([query].min_points in configs/metrics.toml): wait for a longer run or more"
            " scrapes"
        )
    return table


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One run of a workload: its id, last sample time and latest ``run_status``.

    ``status`` is None when the run has no (finite) ``run_status`` sample; ``last_seen`` is
    in epoch seconds and orders runs (newest last).
    """

    run_id: str
    last_seen: float
    status: int | None

    @property
    def finished(self) -> bool:
        """Whether the latest ``run_status`` says the run is over (1, 2, 3 or 4)."""
        return self.status in FINISHED_STATUSES

    @property
    def state(self) -> str:
        """The status in words: running, ok, oom, diverged, failed, or unknown."""
        if self.status is None:
            return "unknown (no run_status sample)"
        return RUN_STATUS_CODES.get(self.status, f"invalid run_status {self.status}")


@dataclass(frozen=True, slots=True)
class RunChoice:
    """The run the CI stage condenses, and the newer runs it skipped (not finished)."""

    run: RunInfo
    skipped: tuple[RunInfo, ...] = ()

    @property
    def run_id(self) -> str:
        """The chosen run's id."""
        return self.run.run_id

    def note(self) -> str:
        """One line naming the skipped newer runs, or "" when none was skipped."""
        if not self.skipped:
            return ""
        newer = ", ".join(f"{r.run_id!r} ({r.state})" for r in self.skipped)
        return f"newer run(s) {newer} not finished: used the latest finished run {self.run_id!r}"


def latest_status(timestamps: np.ndarray, values: np.ndarray) -> int | None:
    """Return the ``run_status`` of the newest finite sample, or None without one."""
    finite = np.isfinite(values)
    if not finite.any():
        return None
    ts, vs = timestamps[finite], values[finite]
    return round(float(vs[int(np.argmax(ts))]))


def run_status_of(table: pa.Table) -> int | None:
    """Return the latest ``run_status`` in one run's HISTORY_SCHEMA rows (None without one)."""
    rows = table.filter(pc.equal(table["metric"], "run_status"))
    ts = rows["timestamp"].cast(pa.int64()).to_numpy().astype(np.float64)
    return latest_status(ts, rows["value"].to_numpy())


def choose_finished(runs: Sequence[RunInfo], what: str) -> RunChoice:
    """Return the most recent finished run of ``runs`` (any order), with the newer ones skipped.

    Raises:
        RunStillRunning: no run is finished (``what`` names the workload and source).
        EmptyResult: ``runs`` is empty.
    """
    ordered = sorted(runs, key=lambda r: (r.last_seen, r.run_id), reverse=True)
    for i, run in enumerate(ordered):
        if run.finished:
            return RunChoice(run, tuple(ordered[:i]))
    if not ordered:
        raise EmptyResult(f"{what}: no run found")
    newest = ordered[0]
    if newest.status == RUNNING:
        raise RunStillRunning(
            f"{what}: run {newest.run_id!r} is still running (its latest run_status is 0) and"
            " no earlier run has finished: rerun `jpo suggest` after the run finishes"
        )
    raise RunStillRunning(
        f"{what}: no finished run; the newest, {newest.run_id!r}, has state {newest.state}:"
        " the workload must export jpo_training_run_status (jpo.telemetry.exporter) and end it with"
        " 1-4; rerun after the run finishes"
    )


class MetricSource(abc.ABC):
    """Where telemetry comes from; every method returns HISTORY_SCHEMA tables."""

    @abc.abstractmethod
    def list_runs(self, key: WorkloadKey) -> list[str]:
        """Return the run ids of ``key``, oldest first (by their last sample)."""

    @abc.abstractmethod
    def run_table(
        self, key: WorkloadKey, run_id: str | None = None, *, lookback: str | None = None
    ) -> pa.Table:
        """Return all canonical metrics of one run (default: the most recent FINISHED run).

        Raises:
            EmptyResult: no run of ``key`` (or no run ``run_id``) exists at all.
            RunStillRunning: ``run_id`` is None and no run of ``key`` has finished yet.
            StaleData: the workload exists, but has no run inside ``lookback``.
            NonFiniteSample: a sample of the run is NaN or infinite.
            TooFewPoints: the run has fewer than ``min_points`` sample times.
        """

    @abc.abstractmethod
    def history(self, start: float | datetime, end: float | datetime, step: float) -> pa.Table:
        """Return every workload's metrics between ``start`` and ``end`` (epoch s or datetime)."""

    def run_gpus(self, key: WorkloadKey, run_id: str) -> int | None:
        """Return the GPUs of one run's pods, or None when this source cannot tell."""
        return None

    def run_infos(self, key: WorkloadKey, *, lookback: str | None = None) -> list[RunInfo]:
        """Return every run of ``key`` with its latest ``run_status``, oldest first.

        Generic (and slow) default: reads each run's table. Backends override it.
        """
        out = []
        for i, run_id in enumerate(self.list_runs(key)):
            table = self.run_table(key, run_id, lookback=lookback)
            out.append(RunInfo(run_id, float(i), run_status_of(table)))
        return out

    def select_run(self, key: WorkloadKey, *, lookback: str | None = None) -> RunChoice:
        """Return the most recent FINISHED run of ``key`` (the run the CI stage condenses).

        Raises:
            EmptyResult / StaleData: no run of ``key`` at all (inside ``lookback``).
            RunStillRunning: runs exist, but none has finished yet.
        """
        runs = self.run_infos(key, lookback=lookback)
        return choose_finished(runs, f"workload {key.slug()}")


class PrometheusSource(MetricSource):
    """Reads runs and history from a live Prometheus through the metric catalog.

    Args:
        client: the HTTP client (its URL names the server in every error).
        catalog: metric templates; default ``configs/metrics.toml``.
        metrics: canonical metrics to fetch; default every template in the catalog.
        now: clock, for tests.
    """

    def __init__(
        self,
        client: PrometheusClient,
        catalog: MetricCatalog | None = None,
        *,
        metrics: Iterable[str] | None = None,
        now: float | None = None,
    ) -> None:
        self.client = client
        self.catalog = catalog or load_catalog()
        self.metrics = tuple(metrics) if metrics is not None else tuple(self.catalog.metrics)
        self._now = now
        self._spans: dict[tuple[WorkloadKey, str], tuple[float, float]] = {}
        self._finished: dict[tuple[WorkloadKey, str], tuple[float, float]] = {}

    @classmethod
    def from_url(
        cls, url: str, catalog: MetricCatalog | None = None, *, bearer_token: str | None = None
    ) -> PrometheusSource:
        """Build a source with the client settings of the catalog's ``[client]`` table."""
        catalog = catalog or load_catalog()
        s = catalog.settings
        client = PrometheusClient(
            url,
            timeout_s=s.timeout_s,
            retries=s.retries,
            backoff_s=s.backoff_s,
            bearer_token=bearer_token,
        )
        return cls(client, catalog)

    def now(self) -> float:
        """Return the current time in epoch seconds (fixed when the source was given one)."""
        return self._now if self._now is not None else time.time()

    def _runs(
        self, key: WorkloadKey, run_id: str | None, lookback: str | None
    ) -> dict[str, tuple[float, float]]:
        """Return {run_id: (first_seen, last_seen)} of ``key`` inside the lookback window.

        ``last_seen`` is exact (the newest sample's timestamp); ``first_seen`` is the
        sample in use at the first discovery step, at most one step after the run began.
        """
        s = self.catalog.settings
        end = self.now()
        start = end - parse_duration_s(lookback or s.lookback)
        promql = self.catalog.render(RUNS, key, run_id)
        run_label = self.catalog.labels(self.catalog.runs.label_set)[-1]
        spans: dict[str, tuple[float, float]] = {}
        step = s.discovery_step_s
        for t0, t1 in chunk_range(start, end, step, s.max_points_per_series):
            result = self.client.query_range(promql, t0, t1, step, allow_empty=True)
            for series in result.series:
                if not len(series.values):
                    continue
                rid = series.labels.get(run_label, "")
                first, last = float(series.values.min()), float(series.values.max())
                old = spans.get(rid)
                spans[rid] = (min(first, old[0]), max(last, old[1])) if old else (first, last)
        return spans

    def explain_no_runs(self, start: float, end: float) -> str:
        """Say why no run was found between ``start`` and ``end``: what was looked for.

        Counts the pods (``[runs] series``, e.g. kube_pod_labels) that carried the workload
        labels in that window, and how many of them each run label of ``[runs]
        run_labels`` (or the label set's run_id label) named.
        """
        cat = self.catalog
        label_set = cat.runs.label_set
        window = f"[{max(1, round(end - start))}s]"
        pods = f"{cat.runs_series}{{{cat.selector(label_set, with_run=False)}}}"
        workload_labels = ", ".join(cat.labels(label_set)[:3])
        run_labels = cat.run_naming_labels(label_set)

        def count(selector: str) -> int:
            result = self.client.query(
                f"count(last_over_time({selector}{window}))", end, allow_empty=True
            )
            return int(result.series[0].values[0]) if result.series else 0

        total = count(pods)
        named = {label: count(f'{pods[:-1]},{label}!=""}}') for label in run_labels}
        where = f"{cat.path} [runs] run_labels"
        head = (
            f"{self.client.url}: {total} pod(s) carried the workload labels ({workload_labels}"
            f" on {cat.runs_series}) between {_iso(start)} and {_iso(end)}"
        )
        per_label = ", ".join(f"{label}: {n}" for label, n in named.items())
        if total == 0:
            return (
                f"{head}: label the training pods with dataset, model and framework, and add"
                " those labels to kube-state-metrics' --metric-labels-allowlist"
            )
        if not any(named.values()):
            return (
                f"{head}, and none of them a run label ({per_label}): add the pod label that"
                f" names your runs to {where} (a Kubernetes Job's pods carry job-name), and"
                " to kube-state-metrics' --metric-labels-allowlist"
            )
        return (
            f"{head}; run labels ({per_label}); but the metric templates returned nothing:"
            " check that the runs' jpo_training_* series carry run_id = that label's value,"
            " and that cAdvisor and DCGM series exist for those pods"
        )

    def list_runs(self, key: WorkloadKey) -> list[str]:
        """Return the run ids of ``key`` seen inside ``[query].lookback``, oldest first."""
        spans = self._runs(key, None, None)
        return sorted(spans, key=lambda r: (spans[r][1], r))

    def _statuses(self, key: WorkloadKey, lookback: str | None) -> dict[str, int]:
        """Return {run_id: latest run_status} of ``key`` inside the lookback window.

        One coarse range query of the ``run_status`` template at the discovery step: a
        sample stays in use for Prometheus's 5 min lookback delta, so the last point of
        each series is the run's latest ``run_status`` sample.
        """
        if "run_status" not in self.catalog.metrics:
            return {}
        s = self.catalog.settings
        end = self.now()
        start = end - parse_duration_s(lookback or s.lookback)
        promql = self.catalog.render("run_status", key)
        run_label = self.catalog.labels(self.catalog.metrics["run_status"].label_set)[-1]
        latest: dict[str, tuple[float, int]] = {}
        step = s.discovery_step_s
        for t0, t1 in chunk_range(start, end, step, s.max_points_per_series):
            result = self.client.query_range(
                promql, t0, t1, step, allow_empty=True, allow_nonfinite=True
            )
            for series in result.series:
                status = latest_status(series.timestamps, series.values)
                if status is None:
                    continue
                rid = series.labels.get(run_label, "")
                t = float(series.timestamps[np.isfinite(series.values)].max())
                if rid not in latest or t >= latest[rid][0]:
                    latest[rid] = (t, status)
        return {rid: status for rid, (_, status) in latest.items()}

    def run_infos(self, key: WorkloadKey, *, lookback: str | None = None) -> list[RunInfo]:
        """Return the runs of ``key`` inside the lookback with their latest run_status."""
        spans = self._runs(key, None, lookback)
        statuses = self._statuses(key, lookback) if spans else {}
        runs = [RunInfo(r, last, statuses.get(r)) for r, (_, last) in spans.items()]
        return sorted(runs, key=lambda r: (r.last_seen, r.run_id))

    def select_run(self, key: WorkloadKey, *, lookback: str | None = None) -> RunChoice:
        """Return the most recent finished run of ``key`` (see :meth:`MetricSource.select_run`)."""
        lookback = lookback or self.catalog.settings.lookback
        spans = self._runs(key, None, lookback)
        if not spans:
            raise self._missing(key, None, lookback)
        statuses = self._statuses(key, lookback)
        runs = [RunInfo(r, last, statuses.get(r)) for r, (_, last) in spans.items()]
        choice = choose_finished(runs, f"workload {key.slug()} on {self.client.url}")
        # a finished run's span no longer grows: run_table(key, run_id) may reuse it
        self._finished[(key, choice.run_id)] = spans[choice.run_id]
        return choice

    def _missing(self, key: WorkloadKey, run_id: str | None, lookback: str) -> Exception:
        """Tell EmptyResult (never seen) from StaleData (seen, but not within lookback).

        A pod counts as seen when any label of ``[runs] run_labels`` (or the label set's
        run_id label) names the run (any run when ``run_id`` is None): a run named by its
        Job's or Kubeflow job's name is stale, not unknown, once it falls out of lookback.
        """
        cat = self.catalog
        label_set = cat.runs.label_set
        run_labels = cat.run_naming_labels(label_set)
        workload = cat.selector(label_set, key, with_run=False)
        named = [
            matcher(label, run_id) if run_id is not None else matcher(label, "", "!=")
            for label in run_labels
        ]
        what = f"workload {key.slug()}" + (f" run {run_id!r}" if run_id else "")
        if any(self.client.series(f"{cat.runs_series}{{{workload},{m}}}") for m in named):
            return StaleData(
                f"{what} is known to Prometheus at {self.client.url} but has no sample in the"
                f" last {lookback}: run the workload, or widen [query].lookback in"
                " configs/metrics.toml"
            )
        pod_labels = ",".join(n.removeprefix("label_") for n in cat.labels(label_set))
        return EmptyResult(
            f"{what}: no series on {self.client.url} matches {cat.runs_series}{{{workload}}}"
            f" with {' or '.join(named)}: check the pod labels (dataset, model, framework, and"
            f" the label naming the run: [runs] run_labels) and [label_sets] in {cat.path};"
            " kube-state-metrics 2.x exports pod labels only when allowlisted"
            f" (--metric-labels-allowlist=pods=[{pod_labels}], plus the run label your pods"
            " carry if it is not run_id, e.g. job-name; docs/RAW_METRICS.md)"
        )

    def run_table(
        self, key: WorkloadKey, run_id: str | None = None, *, lookback: str | None = None
    ) -> pa.Table:
        """Return all canonical metrics of one run of ``key`` (default: the latest finished)."""
        s = self.catalog.settings
        lookback = lookback or s.lookback
        if run_id is None:
            run_id = self.select_run(key, lookback=lookback).run_id
        span = self._finished.get((key, run_id))
        if span is None:
            spans = self._runs(key, run_id, lookback)
            if run_id not in spans:
                raise self._missing(key, run_id, lookback)
            span = spans[run_id]
        chosen = run_id
        first, last = span
        self._spans[(key, chosen)] = (first, last)
        step = s.run_step_s
        # ``first`` is the sample in use at the first discovery step inside the run, so
        # the run began up to one discovery step earlier; nothing of this run_id exists
        # before it began, so widening the window by that much adds no foreign rows.
        # The grid stays aligned to multiples of ``step`` (same timestamps as history).
        start = float(np.floor((first - s.discovery_step_s) / step) * step)
        # ``last`` is a sample's own timestamp; a live scrape's is off the step grid, and
        # the grid point before it still shows the previous sample: end on the grid point
        # at or after it, where the last sample (its final run_status) is in use.
        end = float(np.ceil(last / step - 1e-9) * step)
        parts = []
        for name in self.metrics:
            inner = self.catalog.render(name, key, chosen)
            parts.append(f'label_replace({inner}, "{METRIC_LABEL}", "{name}", "", "")')
        promql = " or ".join(parts)
        tables = []
        for t0, t1 in chunk_range(start, end, step, s.max_points_per_series):
            result = self.client.query_range(promql, t0, t1, step, allow_empty=True)
            tables.append(self._result_table(result, None))
        table = pa.concat_tables(tables) if tables else empty_history()
        what = f"run {chosen!r} of workload {key.slug()} on {self.client.url}"
        if table.num_rows == 0:
            raise EmptyResult(
                f"{what}: its pods exist but none of the metrics {', '.join(self.metrics)}"
                " has data: check that cAdvisor, kube-state-metrics, DCGM and the training"
                " exporter are scraped"
            )
        return check_run_table(sort_history(table), what, s.min_points)

    def run_gpus(self, key: WorkloadKey, run_id: str) -> int | None:
        """Return the run's GPUs (``[gpus]`` in the catalog: nvidia_com_gpu limits).

        None when the catalog has no ``[gpus]`` template, the run has no such series (a
        CPU-only pod, or kube-state-metrics not scraped) or the query fails: the caller
        then assumes 1 GPU and says so. A malformed answer (MalformedResponse: values that
        are not numbers, pairs without a value) is raised, not read as "no GPU limit": the
        server is not answering like Prometheus, so none of its data is trusted.
        """
        from jpo.errors import TelemetryError
        from jpo.telemetry.prometheus import MalformedResponse

        if self.catalog.gpus is None:
            return None
        s = self.catalog.settings
        try:
            span = self._spans.get((key, run_id))
            if span is None:
                spans = self._runs(key, run_id, None)
                if run_id not in spans:
                    return None
                span = spans[run_id]
            start = float(np.floor((span[0] - s.discovery_step_s) / s.run_step_s) * s.run_step_s)
            promql = self.catalog.render(GPUS, key, run_id)
            peak = 0.0
            for t0, t1 in chunk_range(start, span[1], s.run_step_s, s.max_points_per_series):
                result = self.client.query_range(promql, t0, t1, s.run_step_s, allow_empty=True)
                for series in result.series:
                    finite = series.values[np.isfinite(series.values)]
                    if finite.size:
                        peak = max(peak, float(finite.max()))
        except MalformedResponse:
            raise
        except TelemetryError:
            return None
        gpus = round(peak)
        return gpus if gpus >= 1 else None

    def _result_table(
        self, result: QueryResult, metric: str | None, drop_nonfinite: bool = False
    ) -> pa.Table:
        """Convert a result whose series may carry either label set's names."""
        if metric is not None:
            label_set = self.catalog.metrics[metric].label_set
            return result_to_table(
                result, metric, self.catalog.labels(label_set), drop_nonfinite=drop_nonfinite
            )
        by_set: dict[str, list[Series]] = {}
        for series in result.series:
            name = series.labels.get(METRIC_LABEL, "")
            by_set.setdefault(self.catalog.metrics[name].label_set, []).append(series)
        tables = [
            result_to_table(
                QueryResult(result.query, tuple(group)),
                None,
                self.catalog.labels(label_set),
                drop_nonfinite=drop_nonfinite,
            )
            for label_set, group in by_set.items()
        ]
        return pa.concat_tables(tables) if tables else empty_history()

    def history(
        self,
        start: float | datetime,
        end: float | datetime,
        step: float,
        *,
        drop_nonfinite: bool = False,
    ) -> pa.Table:
        """Return every workload's metrics: one batched range query per metric (and chunk).

        ``start`` is aligned down to a multiple of ``step`` so that overlapping pulls
        produce identical timestamps (and :func:`jpo.telemetry.history.append_history` dedups them).
        NaN/Inf samples raise NonFiniteSample unless ``drop_nonfinite``.
        """
        t0 = float(np.floor(_epoch_s(start) / step) * step)
        t1 = _epoch_s(end)
        max_points = self.catalog.settings.max_points_per_series
        jobs = [
            (name, self.catalog.render(name), c0, c1)
            for name in self.metrics
            for c0, c1 in chunk_range(t0, t1, step, max_points)
        ]

        def fetch(job: tuple[str, str, float, float]) -> pa.Table:
            name, promql, c0, c1 = job
            result = self.client.query_range(
                promql, c0, c1, step, allow_empty=True, allow_nonfinite=drop_nonfinite
            )
            return self._result_table(result, name, drop_nonfinite)

        workers = min(self.catalog.settings.max_parallel_queries, len(jobs))
        if workers <= 1:
            tables = [fetch(job) for job in jobs]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                tables = list(pool.map(fetch, jobs))
        if not tables:
            return empty_history()
        return pa.concat_tables(tables)


class ParquetSource(MetricSource):
    """Reads runs and history from a Parquet store written by :mod:`jpo.telemetry.history`.

    ``lookback`` and ``step`` are accepted for interface parity: the store holds what was
    pulled, at the step it was pulled with, and the latest stored run is used whatever its
    age.
    """

    def __init__(self, root: str | Path, *, min_points: int | None = None) -> None:
        self.root = Path(root)
        self.min_points = (
            min_points if min_points is not None else load_catalog().settings.min_points
        )

    def _workload(self, key: WorkloadKey) -> pa.Table:
        from jpo.telemetry.history import read_history

        return read_history(self.root, [key])

    def list_runs(self, key: WorkloadKey) -> list[str]:
        """Return the run ids of ``key`` in the store, oldest first (by their last sample)."""
        table = self._workload(key)
        if table.num_rows == 0:
            return []
        last = table.group_by("run_id").aggregate([("timestamp", "max")])
        last = last.sort_by([("timestamp_max", "ascending"), ("run_id", "ascending")])
        return [str(r) for r in last["run_id"].to_pylist()]

    def run_infos(self, key: WorkloadKey, *, lookback: str | None = None) -> list[RunInfo]:
        """Return the stored runs of ``key`` with their latest run_status, oldest first."""
        return self._run_infos(self._workload(key))

    @staticmethod
    def _run_infos(table: pa.Table) -> list[RunInfo]:
        if table.num_rows == 0:
            return []
        last = table.group_by("run_id").aggregate([("timestamp", "max")])
        last_ms = dict(
            zip(
                last["run_id"].to_pylist(),
                last["timestamp_max"].cast(pa.int64()).to_pylist(),
                strict=True,
            )
        )
        status_rows = table.filter(pc.equal(table["metric"], "run_status"))
        ids = np.asarray(status_rows["run_id"].to_pylist(), dtype=object)
        ts = status_rows["timestamp"].cast(pa.int64()).to_numpy()
        values = status_rows["value"].to_numpy()
        runs = []
        for rid, ms in last_ms.items():
            mask = ids == rid
            status = latest_status(ts[mask], values[mask]) if mask.any() else None
            runs.append(RunInfo(str(rid), ms / 1000.0, status))
        return sorted(runs, key=lambda r: (r.last_seen, r.run_id))

    def select_run(self, key: WorkloadKey, *, lookback: str | None = None) -> RunChoice:
        """Return the most recent finished stored run of ``key`` (whatever its age)."""
        runs = self.run_infos(key)
        where = f"workload {key.slug()} in the history store {self.root}"
        if not runs:
            raise EmptyResult(
                f"{where}: no rows: run `jpo history pull` for it, or check the workload labels"
            )
        return choose_finished(runs, where)

    def run_table(
        self, key: WorkloadKey, run_id: str | None = None, *, lookback: str | None = None
    ) -> pa.Table:
        """Return all stored metrics of one run of ``key`` (default: the latest finished)."""
        table = self._workload(key)
        runs = self.list_runs(key) if table.num_rows else []
        where = f"workload {key.slug()} in the history store {self.root}"
        if not runs:
            raise EmptyResult(
                f"{where}: no rows: run `jpo history pull` for it, or check the workload labels"
            )
        chosen = (
            run_id if run_id is not None else choose_finished(self._run_infos(table), where).run_id
        )
        if chosen not in runs:
            raise EmptyResult(f"{where}: no run {chosen!r}; stored runs: {', '.join(runs[-10:])}")
        rows = table.filter(pc.equal(table["run_id"], chosen))
        return check_run_table(sort_history(rows), f"run {chosen!r} of {where}", self.min_points)

    def history(self, start: float | datetime, end: float | datetime, step: float) -> pa.Table:
        """Return all stored rows with ``start <= timestamp <= end``."""
        from jpo.telemetry.history import read_history

        table = read_history(self.root)
        lo = pa.scalar(int(_epoch_s(start) * 1000), pa.timestamp("ms", tz="UTC"))
        hi = pa.scalar(int(_epoch_s(end) * 1000), pa.timestamp("ms", tz="UTC"))
        ts = table["timestamp"]
        return table.filter(pc.and_(pc.greater_equal(ts, lo), pc.less_equal(ts, hi)))


__all__ = [
    "FINISHED_STATUSES",
    "METRIC_LABEL",
    "MetricSource",
    "ParquetSource",
    "PrometheusSource",
    "RunChoice",
    "RunInfo",
    "check_run_table",
    "choose_finished",
    "empty_history",
    "result_to_table",
    "run_status_of",
    "sort_history",
]
