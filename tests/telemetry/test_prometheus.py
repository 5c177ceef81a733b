"""PrometheusClient: every fault becomes its typed error (stub), and real queries work."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
from fakes.cluster import FakeRun, openmetrics_history
from fakes.fake_prometheus import FakePrometheus

from jpo.errors import ExitCode, TelemetryError
from jpo.telemetry.prometheus import (
    BadQuery,
    EmptyResult,
    NonFiniteSample,
    PartialData,
    PrometheusAuthFailed,
    PrometheusClient,
    PrometheusTimeout,
    PrometheusUnreachable,
    TooFewPoints,
    chunk_range,
)


@pytest.fixture
def stub():
    server = FakePrometheus()
    yield server
    server.close()


def client_for(stub: FakePrometheus, **kw) -> PrometheusClient:
    kw = {"timeout_s": 5.0, "retries": 2, "backoff_s": 0.01} | kw
    return PrometheusClient(stub.url, **kw)


def test_ok_range_query_parses_into_arrays(stub) -> None:
    result = client_for(stub).query_range("up", 0, 60, 15)
    (series,) = result.series
    assert series.labels["label_run_id"] == "r1"
    np.testing.assert_allclose(series.values, [0.5, 0.6, 0.7, 0.8])
    assert series.timestamps.dtype == np.float64
    assert stub.last_form["step"] == ["15"]


@pytest.mark.parametrize(
    ("mode", "error", "fragment"),
    [
        ("empty", EmptyResult, "no series"),
        ("warnings", PartialData, "store gateway"),
        ("nan", NonFiniteSample, "nan"),
        ("inf", NonFiniteSample, "inf"),
        ("neginf", NonFiniteSample, "-inf"),
        ("400", BadQuery, "HTTP 400"),
        ("422", BadQuery, "HTTP 422"),
        ("503", PrometheusTimeout, "HTTP 503"),
        ("500", PrometheusUnreachable, "HTTP 500"),
        ("not_json", PrometheusUnreachable, "not JSON"),
        ("scalar", BadQuery, "'string' result"),
    ],
)
def test_each_fault_has_its_typed_error(stub, mode, error, fragment) -> None:
    stub.mode = mode
    with pytest.raises(error, match=fragment) as info:
        client_for(stub).query_range("avg(up)", 0, 60, 15)
    assert isinstance(info.value, TelemetryError)
    assert info.value.exit_code == ExitCode.TELEMETRY
    assert stub.url in str(info.value)  # names the server
    if mode not in ("not_json", "401"):
        assert "avg(up)" in str(info.value)  # names the query


def test_a_refused_token_is_an_auth_failure_not_a_telemetry_fault(stub) -> None:
    stub.mode = "401"
    with pytest.raises(PrometheusAuthFailed, match="bearer token") as info:
        client_for(stub).query_range("avg(up)", 0, 60, 15)
    assert not isinstance(info.value, TelemetryError)  # no "carry on" path may swallow it
    assert info.value.exit_code == ExitCode.AUTH_FAILED
    assert stub.url in str(info.value)
    assert stub.requests == 1  # not retried


@pytest.mark.parametrize(("mode", "attempts"), [("400", 1), ("422", 1), ("503", 3), ("500", 3)])
def test_only_transient_failures_are_retried(stub, mode, attempts) -> None:
    stub.mode = mode
    with pytest.raises(TelemetryError):
        client_for(stub).query("up")
    assert stub.requests == attempts


def test_retry_recovers_from_a_flaky_server(stub) -> None:
    stub.mode, stub.fail_first = "flaky", 2
    result = client_for(stub, retries=2).query_range("up", 0, 60, 15)
    assert stub.requests == 3
    assert result.num_samples == 4


def test_hang_times_out(stub) -> None:
    stub.mode, stub.hang_s = "hang", 3.0
    with pytest.raises(PrometheusTimeout, match=r"timed out after 0\.3 s"):
        client_for(stub, timeout_s=0.3, retries=1).query("up")
    assert stub.requests == 2


def test_unreachable_server() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = PrometheusClient(f"http://127.0.0.1:{port}", timeout_s=2, retries=1, backoff_s=0)
    with pytest.raises(PrometheusUnreachable, match=f"127.0.0.1:{port}.*--prometheus"):
        client.query("up")
    with pytest.raises(PrometheusUnreachable, match="http://"):
        PrometheusClient("localhost:9090")


def test_nonfinite_and_too_few_points_can_be_opted_into(stub) -> None:
    stub.mode = "nan"
    result = client_for(stub).query_range("up", 0, 60, 15, allow_nonfinite=True)
    assert np.isnan(result.series[0].values).sum() == 1
    stub.mode = "ok"
    with pytest.raises(TooFewPoints, match="at least 10"):
        client_for(stub).query_range("up", 0, 60, 15, min_points=10)
    stub.mode = "empty"
    assert client_for(stub).query("up", allow_empty=True).series == ()


def test_bearer_token_is_sent(stub) -> None:
    client_for(stub, bearer_token="s3cret").query("up")
    assert stub.last_headers.get("Authorization") == "Bearer s3cret"


def test_chunk_range_covers_each_step_once() -> None:
    chunks = chunk_range(0, 100, 10, 4)
    assert chunks == [(0, 30), (40, 70), (80, 100)]
    points = [t for a, b in chunks for t in np.arange(a, b + 1, 10)]
    assert points == list(range(0, 101, 10))
    assert chunk_range(0, 86400, 15, 11000)[-1][1] == 86400


@pytest.mark.slow
def test_real_prometheus_instant_range_and_bad_query(prometheus_factory) -> None:
    t0 = float(int(time.time() // 3600) * 3600 - 2 * 3600)
    run = FakeRun("cifar10", "resnet18", "pytorch", "r1", t0, t0 + 600)
    server = prometheus_factory(openmetrics=[openmetrics_history([run])])
    client = PrometheusClient(server.url, timeout_s=30, retries=0)
    result = client.query("jpo_training_validation_loss", t0 + 60)
    assert result.series[0].values.tolist() == [0.9]
    ranged = client.query_range("jpo_training_throughput_samples_per_second", t0, t0 + 600, 15)
    assert len(ranged.series[0].values) == 41
    with pytest.raises(BadQuery, match="HTTP 400"):
        client.query("sum(")
    with pytest.raises(EmptyResult):
        client.query('up{job="nothing"}')
    with pytest.raises(NonFiniteSample, match="non-finite"):
        client.query("jpo_training_validation_loss / 0", t0 + 60)
    with pytest.raises(BadQuery, match=r"11,000|11000|resolution"):
        client.query_range("up", t0 - 86400 * 3, t0, 15)  # > 11,000 points per series


def test_importing_the_client_stays_light() -> None:
    import subprocess
    import sys

    heavy = "{'pandas', 'pyarrow', 'ray', 'torch'}"
    code = f"import sys, jpo.telemetry.prometheus; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
