"""Prometheus HTTP API client with timeouts, bounded retries and typed errors.

Every failure is raised as a :class:`jpo.errors.TelemetryError` subclass whose message
names the URL and query at fault and the fix; none is ever read as 0 % utilization:

=====================  ===============================================================
PrometheusUnreachable  connection refused/reset, DNS failure, 5xx other than 503/504,
                       a malformed URL
PrometheusAuthFailed   401/403 (wrong or missing bearer token): not a telemetry fault
                       but a misconfiguration, so it is an AuthFailed (exit 8, "stop")
                       that no CI-stage "carry on" path swallows
PrometheusTimeout      one attempt outlasted ``timeout_s`` (a total deadline per
                       attempt, :mod:`jpo.http_deadline`: a server dripping bytes is cut
                       off too), or the server answered 503/504
MalformedResponse      the answer is not a Prometheus result: a sample value that is
                       not a number (``"abc"``), a pair without a value, wrong shapes
BadQuery               400/422: the PromQL does not parse or cannot be executed
PartialData            the response carries ``warnings`` (some data is missing)
EmptyResult            the query succeeded but returned no series
StaleData              the series exist, but have no sample in the lookback window
NonFiniteSample        a NaN, +Inf or -Inf sample (e.g. a division by a zero limit)
TooFewPoints           fewer samples than needed to trust a statistic
RunStillRunning        the workload's runs are all still running (latest run_status 0)
=====================  ===============================================================

One query makes at most ``retries + 1`` attempts of at most ``timeout_s`` each (plus the
back-off between them): that bounds how long any Prometheus call can hold the CI stage.

Results are parsed into numpy arrays per series (no Python loop per sample; see
:class:`Series`). Importing this module pulls in httpx and numpy only.

API reference: https://prometheus.io/docs/prometheus/latest/querying/api/
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np

from jpo.errors import AuthFailed, TelemetryError
from jpo.http_deadline import DeadlineTransport, deadline
from jpo.safe_json import loads_bounded

MAX_ANSWER_DEPTH = 32
"""Deepest JSON nesting accepted in an answer (a range-query result needs 5)."""

log = logging.getLogger(__name__)

# httpx logs every request at INFO ("HTTP Request: POST .../api/v1/query_range ..."): a
# continuous pull would print one line per query. JPO logs its queries at DEBUG instead
# (below); a level the application sets on the "httpx" logger itself is left alone.
if logging.getLogger("httpx").level == logging.NOTSET:
    logging.getLogger("httpx").setLevel(logging.WARNING)


class PrometheusUnreachable(TelemetryError):
    """Prometheus could not be reached or refused the request."""


class PrometheusAuthFailed(AuthFailed):
    """Prometheus refused JPO's credentials (HTTP 401/403)."""


class MalformedResponse(TelemetryError):
    """The answer is not a well-formed Prometheus result (non-numeric values, bad shapes)."""


class PrometheusTimeout(TelemetryError):
    """A request timed out, or Prometheus answered 503/504."""


class BadQuery(TelemetryError):
    """Prometheus rejected the query (HTTP 400 or 422)."""


class PartialData(TelemetryError):
    """The response carried warnings: some of the data is missing."""


class EmptyResult(TelemetryError):
    """The query returned no series."""


class StaleData(TelemetryError):
    """The series exist but have no sample inside the lookback window."""


class NonFiniteSample(TelemetryError):
    """A sample is NaN, +Inf or -Inf."""


class TooFewPoints(TelemetryError):
    """Fewer samples than needed to compute a trustworthy statistic."""


class RunStillRunning(TelemetryError):
    """No finished run to condense: the run(s) found are still running (run_status 0)."""


@dataclass(frozen=True, slots=True)
class Series:
    """One time series of a result: its labels, timestamps (s since epoch) and values."""

    labels: Mapping[str, str]
    timestamps: np.ndarray
    values: np.ndarray


@dataclass(frozen=True, slots=True)
class QueryResult:
    """A parsed query response: the series and any warnings the server sent."""

    query: str
    series: tuple[Series, ...]
    warnings: tuple[str, ...] = field(default=())

    @property
    def num_samples(self) -> int:
        """Return the total number of samples across all series."""
        return sum(len(s.values) for s in self.series)


def _to_epoch_s(t: float | datetime | None) -> float:
    if t is None:
        return time.time()
    if isinstance(t, datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        return t.timestamp()
    return float(t)


def _fmt_time(t: float) -> str:
    return f"{t:.3f}"


def _parse_pairs(pairs: Sequence[Sequence[Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Parse ``[[ts, "value"], ...]`` into float arrays with numpy (C loops only).

    Raises ValueError for anything else: a value that is not a number (``"abc"``), a pair
    without a value, a list nested deeper or a scalar in place of a pair.
    """
    if not pairs:
        return np.empty(0, np.float64), np.empty(0, np.float64)
    if not isinstance(pairs, list) or not all(
        isinstance(p, list) and len(p) == 2 and not isinstance(p[1], (list, dict)) for p in pairs
    ):
        raise ValueError('every sample must be a [timestamp, "value"] pair')
    arr = np.array(pairs, dtype=str)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"samples have shape {arr.shape}, not (n, 2)")
    return arr[:, 0].astype(np.float64), arr[:, 1].astype(np.float64)


class PrometheusClient:
    """Instant and range queries against one Prometheus server.

    Args:
        url: base URL, e.g. ``http://prometheus.monitoring:9090``.
        timeout_s: total deadline (s) of one HTTP attempt: connect, send, headers and body
            together, however slowly the server sends them.
        retries: extra attempts after a connection error, timeout or 5xx.
        backoff_s: first back-off between attempts; doubles each time.
        bearer_token: sent as ``Authorization: Bearer ...`` when given.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 30.0,
        retries: int = 2,
        backoff_s: float = 0.5,
        bearer_token: str | None = None,
    ) -> None:
        _check_url(url)
        if timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise ValueError("timeout_s must be > 0, retries and backoff_s >= 0")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else {}
        self._http = httpx.Client(timeout=timeout_s, headers=headers, transport=DeadlineTransport())

    def close(self) -> None:
        """Close the underlying HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def query(
        self,
        promql: str,
        time: float | datetime | None = None,
        *,
        allow_empty: bool = False,
        allow_nonfinite: bool = False,
    ) -> QueryResult:
        """Evaluate an instant query (``/api/v1/query``) at ``time`` (default: now)."""
        params = {"query": promql}
        if time is not None:
            params["time"] = _fmt_time(_to_epoch_s(time))
        data = self._request("/api/v1/query", params, promql)
        result = self._parse(data, promql)
        return self._check(result, allow_empty=allow_empty, allow_nonfinite=allow_nonfinite)

    def query_range(
        self,
        promql: str,
        start: float | datetime,
        end: float | datetime,
        step: float,
        *,
        allow_empty: bool = False,
        allow_nonfinite: bool = False,
        min_points: int = 0,
    ) -> QueryResult:
        """Evaluate a range query (``/api/v1/query_range``) from ``start`` to ``end``.

        ``step`` is in seconds. Raises TooFewPoints when every series has fewer than
        ``min_points`` samples. Splitting under the points-per-series limit is the
        caller's job (:func:`chunk_range`).
        """
        t0, t1 = _to_epoch_s(start), _to_epoch_s(end)
        if step <= 0 or t1 < t0:
            raise BadQuery(
                f"range query {promql!r} to {self.url}: need step > 0 and end >= start,"
                f" got start={t0}, end={t1}, step={step}"
            )
        params = {
            "query": promql,
            "start": _fmt_time(t0),
            "end": _fmt_time(t1),
            "step": f"{step:g}",
        }
        data = self._request("/api/v1/query_range", params, promql)
        result = self._check(
            self._parse(data, promql), allow_empty=allow_empty, allow_nonfinite=allow_nonfinite
        )
        if min_points and result.series and max(len(s.values) for s in result.series) < min_points:
            most = max(len(s.values) for s in result.series)
            raise TooFewPoints(
                f"query {promql!r} on {self.url} returned at most {most} samples per series"
                f" between {t0:.0f} and {t1:.0f}; at least {min_points} are needed: widen the"
                " range, lower the step, or wait for more scrapes"
            )
        return result

    def series(
        self, match: str, start: float | None = None, end: float | None = None
    ) -> list[dict[str, str]]:
        """Return the label sets of series matching ``match`` (``/api/v1/series``)."""
        params = {"match[]": match}
        if start is not None:
            params["start"] = _fmt_time(start)
        if end is not None:
            params["end"] = _fmt_time(end)
        data = self._request("/api/v1/series", params, match)
        return list(data.get("data") or [])

    def _request(self, path: str, params: dict[str, str], promql: str) -> dict[str, Any]:
        url = self.url + path
        what = f"query {promql!r} to {url}"
        last: TelemetryError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                log.debug("POST %s %s", url, promql)
                with deadline(self.timeout_s):  # total per attempt, not per socket read
                    response = self._http.post(url, data=params)
            except httpx.TimeoutException as err:
                last = PrometheusTimeout(
                    f"{what} timed out after {self.timeout_s:g} s ({self.retries + 1} attempts):"
                    " raise [client].timeout_s in configs/metrics.toml or narrow the query"
                )
                last.__cause__ = err
                continue
            except httpx.HTTPError as err:
                last = PrometheusUnreachable(
                    f"cannot reach Prometheus at {self.url} ({type(err).__name__}: {err}) after"
                    f" {self.retries + 1} attempts: check the URL (--prometheus) and that the"
                    " server is up"
                )
                last.__cause__ = err
                continue
            status = response.status_code
            if status in (400, 422):
                raise BadQuery(
                    f"Prometheus at {url} rejected {promql!r} (HTTP {status}:"
                    f" {_error_text(response)}): fix the template in configs/metrics.toml"
                )
            if status in (401, 403):
                raise PrometheusAuthFailed(
                    f"Prometheus at {url} refused access (HTTP {status}): pass a valid bearer"
                    " token ($JPO_PROMETHEUS_TOKEN)"
                )
            if status in (503, 504):
                last = PrometheusTimeout(
                    f"{what}: HTTP {status} ({_error_text(response)}) after {self.retries + 1}"
                    " attempts: the server is overloaded or hit its query timeout; retry later"
                    " or shorten the range"
                )
                continue
            if status >= 500:
                last = PrometheusUnreachable(
                    f"{what}: HTTP {status} ({_error_text(response)}) after {self.retries + 1}"
                    " attempts: check the Prometheus server's logs"
                )
                continue
            if status != 200:
                raise PrometheusUnreachable(
                    f"{what}: unexpected HTTP {status}; is {self.url} a Prometheus server?"
                )
            try:  # depth-checked first: a deeply nested answer must not recurse
                body = loads_bounded(response.text, max_depth=MAX_ANSWER_DEPTH)
            except ValueError as err:
                raise PrometheusUnreachable(
                    f"{what}: the response is not JSON; is {self.url} a Prometheus server?"
                ) from err
            if not isinstance(body, dict) or body.get("status") != "success":
                raise BadQuery(f"{what}: Prometheus answered {str(body)[:300]}")
            return body
        assert last is not None
        raise last

    def _parse(self, body: Mapping[str, Any], promql: str) -> QueryResult:
        try:
            return self._parse_result(body, promql)
        except (ValueError, TypeError, AttributeError, KeyError, IndexError) as err:
            raise MalformedResponse(
                f"query {promql!r} on {self.url}: malformed answer ({str(err)[:200]}): the"
                " server or a proxy in front of it is not answering like Prometheus; check"
                " the URL and the exporters"
            ) from err

    def _parse_result(self, body: Mapping[str, Any], promql: str) -> QueryResult:
        data = body.get("data") or {}
        kind = data.get("resultType")
        raw = data.get("result") or []
        if kind == "scalar":
            raw = [{"metric": {}, "value": raw}] if raw else []
            kind = "vector"
        if kind not in ("vector", "matrix"):
            raise BadQuery(
                f"query {promql!r} on {self.url} returned a {kind!r} result; JPO needs an"
                " instant or range vector: fix the template in configs/metrics.toml"
            )
        if not isinstance(raw, list):
            raise ValueError(f"result is a {type(raw).__name__}, not a list")
        series = []
        for item in raw:
            pairs = item.get("values") if kind == "matrix" else [item.get("value")]
            ts, vals = _parse_pairs(pairs or [])
            labels = item.get("metric") or {}
            if not isinstance(labels, dict):
                raise ValueError("a series' metric is not a label mapping")
            series.append(Series({str(k): str(v) for k, v in labels.items()}, ts, vals))
        warnings = tuple(str(w) for w in body.get("warnings") or ())
        return QueryResult(promql, tuple(series), warnings)

    def _check(
        self, result: QueryResult, *, allow_empty: bool, allow_nonfinite: bool
    ) -> QueryResult:
        where = f"query {result.query!r} on {self.url}"
        if result.warnings:
            raise PartialData(
                f"{where} returned partial data; warnings: {'; '.join(result.warnings)}:"
                " retry when the server is healthy, or narrow the query"
            )
        if not result.series and not allow_empty:
            raise EmptyResult(
                f"{where} returned no series: check the workload labels and that the exporters"
                " are scraped (configs/metrics.toml holds the templates)"
            )
        if not allow_nonfinite:
            for s in result.series:
                bad = ~np.isfinite(s.values)
                if bad.any():
                    i = int(np.argmax(bad))
                    raise NonFiniteSample(
                        f"{where}: series {dict(s.labels)} has {int(bad.sum())} non-finite"
                        f" sample(s), first {s.values[i]} at {s.timestamps[i]:.0f}: a limit or"
                        " denominator is 0 or missing; fix the exporter or the template"
                    )
        return result


def _check_url(url: object) -> None:
    """Refuse a URL that is not ``http(s)://host[:port][/path]`` (PrometheusUnreachable)."""
    bad = not isinstance(url, str) or not url.startswith(("http://", "https://"))
    if not bad:
        try:
            parsed = httpx.URL(str(url))
            bad = not parsed.host or any(c.isspace() for c in str(url))
        except (httpx.InvalidURL, ValueError, TypeError):
            bad = True
    if bad:
        raise PrometheusUnreachable(
            f"Prometheus URL {url!r} is malformed: it must be http:// or https:// with a host;"
            " pass e.g. --prometheus http://localhost:9090"
        )


def _error_text(response: httpx.Response) -> str:
    try:
        body = loads_bounded(response.text, max_depth=MAX_ANSWER_DEPTH)
        return f"{body.get('errorType', '')}: {body.get('error', '')}".strip(": ")[:300]
    except (ValueError, AttributeError):
        return response.text[:200]


def chunk_range(
    start: float, end: float, step: float, max_points: int
) -> list[tuple[float, float]]:
    """Split [start, end] at ``step`` into contiguous chunks of at most ``max_points`` points.

    Consecutive chunks share no evaluation time: chunk k+1 starts one step after chunk k
    ends, so concatenated results contain every step exactly once.
    """
    if step <= 0 or max_points < 1:
        raise ValueError("step must be > 0 and max_points >= 1")
    total = math.floor((end - start) / step + 1e-9) + 1
    chunks = []
    for first in range(0, max(total, 0), max_points):
        last = min(first + max_points, total) - 1
        chunks.append((start + first * step, start + last * step))
    return chunks
