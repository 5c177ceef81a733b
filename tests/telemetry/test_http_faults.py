"""Corrupt Prometheus answers, dripping servers and endpoint auth (issue 26, items 5-7).

The corrupt answers come from tests/fakes/fake_prometheus.py (a real Prometheus never
sends ``"abc"`` as a sample value); the dripping server is a real loopback HTTP server
that sends a correct answer one byte at a time, status line and headers included, so
that no per-read timeout ever expires. The CLI-level cases (exit code, one line,
config.ini untouched) are in tests/cli/test_cli_errors.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fakes.fake_prometheus import CORRUPT, DripServer, FakePrometheus
from fakes.policy import fixed_action_policy

from jpo.errors import ExitCode, PolicyAuthError, PolicyError, TelemetryError
from jpo.learning.features import FEATURE_SPEC_VERSION, OBSERVATION_NAMES
from jpo.policy.source import (
    EndpointPolicySource,
    FallbackPolicySource,
    LocalPolicySource,
    PolicyQuery,
)
from jpo.safe_json import JsonDepthError, json_depth, loads_bounded
from jpo.telemetry.prometheus import MalformedResponse, PrometheusClient, PrometheusTimeout
from jpo.workload.types import Hyperparameters, WorkloadKey


@pytest.fixture
def stub() -> Iterator[FakePrometheus]:
    server = FakePrometheus("ok")
    yield server
    server.close()


@pytest.fixture
def drip() -> Iterator[DripServer]:
    server = DripServer(interval_s=0.05)  # ~20 bytes/s: the full answer takes ~20 s
    yield server
    server.close()


@pytest.mark.parametrize("mode", sorted(CORRUPT))
@pytest.mark.parametrize("kind", ["range", "instant"])
def test_corrupt_samples_are_a_telemetry_error_naming_query_and_url(
    stub: FakePrometheus, mode: str, kind: str
) -> None:
    stub.mode = mode
    client = PrometheusClient(stub.url, timeout_s=5.0, retries=0)
    with pytest.raises(MalformedResponse) as err:
        if kind == "range":
            client.query_range("avg(up)", 0, 60, 15)
        else:
            client.query("avg(up)")
    message = str(err.value)
    assert isinstance(err.value, TelemetryError)
    assert err.value.exit_code == ExitCode.TELEMETRY
    assert stub.url in message and "avg(up)" in message
    assert "\n" not in message


def test_a_deeply_nested_answer_is_a_telemetry_error(stub: FakePrometheus) -> None:
    stub.mode = "deep"
    with pytest.raises(TelemetryError, match="not JSON") as err:
        PrometheusClient(stub.url, retries=0).query("up")
    assert stub.url in str(err.value)


@pytest.mark.parametrize(
    "url", ["http://", "http:// spaced.example:9090", "http://[::1", "ftp://x", "localhost:9090"]
)
def test_malformed_urls_are_telemetry_errors(url: str) -> None:
    with pytest.raises(TelemetryError, match="malformed"):
        PrometheusClient(url)


@pytest.mark.parametrize("retries", [0, 1])
def test_a_dripping_prometheus_is_cut_off_by_the_deadline(drip: DripServer, retries: int) -> None:
    client = PrometheusClient(drip.url, timeout_s=1.0, retries=retries, backoff_s=0.0)
    with pytest.raises(PrometheusTimeout, match=r"timed out after 1 s"):
        client.query("up")
    assert drip.sent < drip.total  # the client hung up long before the answer was complete


def _query() -> PolicyQuery:
    return PolicyQuery(
        WorkloadKey("cifar10", "resnet18", "pytorch"),
        Hyperparameters(64, 0.05, 18, 30),
        np.zeros(len(OBSERVATION_NAMES), dtype=np.float32),
        FEATURE_SPEC_VERSION,
    )


def test_a_dripping_endpoint_is_cut_off_by_the_deadline(drip: DripServer) -> None:
    source = EndpointPolicySource(drip.url, timeout_s=1.0, retries=0)
    with pytest.raises(PolicyError, match=r"no answer within 1 s"):
        source.answer(_query())
    assert drip.sent < drip.total


class _Status:
    """A loopback endpoint answering every request with one status code."""

    def __init__(self, status: int) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from threading import Thread

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_is_never_hidden_by_the_local_fallback(tmp_path: Path, status: int) -> None:
    server = _Status(status)
    try:
        local = LocalPolicySource(fixed_action_policy(tmp_path / "p", (0.5, 0.0, 0.0, 0.0)))
        source = FallbackPolicySource([EndpointPolicySource(server.url, retries=0), local])
        with pytest.raises(PolicyAuthError, match=f"{status} unauthorized") as err:
            source.answer(_query())
        assert err.value.exit_code == ExitCode.AUTH_FAILED
        with pytest.raises(PolicyAuthError):
            source.version()
    finally:
        server.close()


def test_json_depth_is_measured_without_recursion() -> None:
    assert json_depth('{"a": [1, {"b": "[[[["}]}') == 3
    deep = "[" * 200_000 + "]" * 200_000
    assert json_depth(deep, 32) == 33  # stops early past the limit
    with pytest.raises(JsonDepthError):
        loads_bounded(deep, max_depth=32)
    with pytest.raises(ValueError, match="NaN"):
        loads_bounded('{"x": NaN}', max_depth=4)
    assert loads_bounded('{"x": [1, 2]}', max_depth=4) == {"x": [1, 2]}


def test_an_endpoint_answer_nested_too_deep_is_a_policy_error(tmp_path: Path) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    body = ("[" * 100_000 + "]" * 100_000).encode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(PolicyError, match="nested more than"):
            EndpointPolicySource(url, retries=0).answer(_query())
    finally:
        server.shutdown()
        server.server_close()
