"""One suite for every PolicySource backend, plus fault injection for the endpoint.

The endpoint backend talks real HTTP to the Serve app's FastAPI part (jpo.serving.api) run by
uvicorn on a loopback port; the faults come from a tiny http.server that is slow, answers
5xx or answers garbage.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import uvicorn
from fakes.policy import fixed_action_policy

from jpo.errors import PolicyError
from jpo.learning.features import FEATURE_SPEC_VERSION, OBSERVATION_NAMES
from jpo.net import free_port
from jpo.policy.source import (
    EndpointPolicySource,
    FallbackPolicySource,
    LocalPolicySource,
    PolicyQuery,
    PolicySource,
    PolicyUnavailable,
)
from jpo.serving.api import PolicyService, create_api
from jpo.workload.types import HYPERPARAMETER_NAMES, Hyperparameters, WorkloadKey

ACTION = (0.5, -0.25, 0.0, 0.1)
KEY = WorkloadKey("cifar10", "resnet18", "pytorch")
CURRENT = Hyperparameters(64, 0.01, 18, 30)


def make_policy(folder: Path, action: tuple[float, ...] = ACTION, version: int = 3) -> Path:
    return fixed_action_policy(folder, action, version)


def query() -> PolicyQuery:
    obs = np.full(len(OBSERVATION_NAMES), 0.2, dtype=np.float32)
    return PolicyQuery(KEY, CURRENT, obs, FEATURE_SPEC_VERSION)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_policy(tmp_path_factory.mktemp("policy") / "v000003")


@pytest.fixture(scope="module")
def endpoint_url(artifact: Path) -> Iterator[str]:
    """The Serve app's FastAPI part behind uvicorn on a loopback port (real HTTP)."""
    port = free_port()
    app = create_api(PolicyService(artifact))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(params=["local", "endpoint", "fallback"])
def source(request: pytest.FixtureRequest, artifact: Path) -> PolicySource:
    if request.param == "local":
        return LocalPolicySource(artifact)
    url = request.getfixturevalue("endpoint_url")
    endpoint = EndpointPolicySource(url, timeout_s=5.0, retries=0)
    if request.param == "endpoint":
        return endpoint
    return FallbackPolicySource([endpoint, LocalPolicySource(artifact)])


# --------------------------------------------------------------------- the shared suite


def test_every_backend_returns_the_policys_action(source: PolicySource) -> None:
    answer = source.answer(query())
    assert answer.action == pytest.approx(ACTION, abs=1e-5)
    assert answer.action_names == HYPERPARAMETER_NAMES
    assert answer.version == "3"
    assert answer.notes == ()


def test_every_backend_reports_its_version_and_origin(source: PolicySource) -> None:
    assert source.version() == "3"
    assert source.description
    assert source.answer(query()).source in source.description


def test_every_backend_is_deterministic(source: PolicySource) -> None:
    assert source.answer(query()).action == source.answer(query()).action


# ----------------------------------------------------------------------- local specifics


def test_local_missing_artifact_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        LocalPolicySource(tmp_path / "nope").answer(query())


def test_endpoint_answer_carries_the_servers_suggestion(endpoint_url: str) -> None:
    answer = EndpointPolicySource(endpoint_url).answer(query())
    assert answer.suggested is not None
    assert answer.suggested.batch_size > CURRENT.batch_size


# ------------------------------------------------------------------------ fault injection


class _Faulty(BaseHTTPRequestHandler):
    """/slow/... sleeps, /error/... answers 503, /garbage/... 200 with bad bodies."""

    calls: ClassVar[dict[str, int]] = {}

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self) -> None:
        mode = self.path.strip("/").split("/")[0]
        _Faulty.calls[mode] = _Faulty.calls.get(mode, 0) + 1
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        if mode == "slow":
            time.sleep(1.5)
            status, body = 200, b"{}"
        elif mode == "error":
            status, body = 503, b"overloaded"
        elif mode == "notjson":
            status, body = 200, b"<html>proxy error</html>"
        elif mode == "nan":
            payload = {
                "hyperparameters": CURRENT.as_dict(),
                "action": [float("nan")] * 4,
                "action_names": list(HYPERPARAMETER_NAMES),
                "predicted_gain": None,
                "policy_version": "9",
                "feature_spec_version": FEATURE_SPEC_VERSION,
            }
            status, body = 200, json.dumps(payload).encode()
        elif mode == "unauthorized":
            status, body = 401, b'{"detail": "token"}'
        else:  # wrong shape
            status, body = 200, json.dumps({"action": "up"}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer
    do_POST = _answer


@pytest.fixture(scope="module")
def faulty_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Faulty)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _fault_urls(faulty_url: str) -> dict[str, str]:
    return {
        "unreachable": f"http://127.0.0.1:{free_port()}",
        "slow": f"{faulty_url}/slow",
        "5xx": f"{faulty_url}/error",
        "not-json": f"{faulty_url}/notjson",
        "malformed": f"{faulty_url}/shape",
        "nan-action": f"{faulty_url}/nan",
    }


FAULTS = ["unreachable", "slow", "5xx", "not-json", "malformed", "nan-action"]
MESSAGES = {
    "unreachable": "unreachable",
    "slow": "no answer within",
    "5xx": "server error 503",
    "not-json": "not JSON",
    "malformed": "malformed answer",
    "nan-action": "malformed answer",
}


@pytest.mark.parametrize("fault", FAULTS)
def test_endpoint_faults_are_policy_errors_naming_the_cause(faulty_url: str, fault: str) -> None:
    url = _fault_urls(faulty_url)[fault]
    source = EndpointPolicySource(url, timeout_s=0.5, retries=0)
    with pytest.raises(PolicyError, match=MESSAGES[fault]) as err:
        source.answer(query())
    assert url in str(err.value)


@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_falls_back_to_the_local_policy(
    faulty_url: str, artifact: Path, fault: str
) -> None:
    url = _fault_urls(faulty_url)[fault]
    source = FallbackPolicySource(
        [EndpointPolicySource(url, timeout_s=0.5, retries=0), LocalPolicySource(artifact)]
    )
    answer = source.answer(query())
    assert answer.action == pytest.approx(ACTION, abs=1e-5)
    assert answer.source == f"file:{artifact}"
    assert any(MESSAGES[fault] in n for n in answer.notes)
    assert any("fell back" in n for n in answer.notes)


@pytest.mark.parametrize("fault", FAULTS)
def test_without_fallback_each_fault_is_policy_unavailable(faulty_url: str, fault: str) -> None:
    url = _fault_urls(faulty_url)[fault]
    source = FallbackPolicySource([EndpointPolicySource(url, timeout_s=0.5, retries=0)])
    with pytest.raises(PolicyUnavailable, match="left unchanged"):
        source.answer(query())


def test_5xx_is_retried_but_4xx_is_not(faulty_url: str) -> None:
    _Faulty.calls.clear()
    with pytest.raises(PolicyError):
        EndpointPolicySource(f"{faulty_url}/error", retries=2, backoff_s=0.01).answer(query())
    with pytest.raises(PolicyError, match="JPO_SERVE_TOKEN"):
        EndpointPolicySource(f"{faulty_url}/unauthorized", retries=2).answer(query())
    assert _Faulty.calls == {"error": 3, "unauthorized": 1}
