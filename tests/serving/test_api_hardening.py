"""The Serve API's hardening (issue 26, item 8): docs behind the token, no server paths in
``/v1/policy`` or error details, 422 for every bad body, capped request headers.

The app runs under a real uvicorn server on a loopback port and is spoken to over real
HTTP (httpx); every documented status is checked there.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fakes.policy import fixed_action_policy

from jpo.learning.features import FEATURE_SPEC_VERSION, OBSERVATION_NAMES
from jpo.policy.artifact import MANIFEST_FILE, manifest_seal
from jpo.serving.api import PolicyService, create_api

pytestmark = pytest.mark.slow

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HP = {"batch_size": 64, "learning_rate": 0.01, "num_layers": 18, "epochs": 30}
WORKLOAD = {"dataset": "cifar10", "model": "resnet18", "framework": "pytorch"}


def body(**over: object) -> dict:
    base: dict = {
        "workload": WORKLOAD,
        "hyperparameters": HP,
        "features": [0.1] * len(OBSERVATION_NAMES),
        "feature_spec_version": FEATURE_SPEC_VERSION,
    }
    base.update(over)
    return base


def _policy_with_paths(folder: Path) -> Path:
    """A sealed artifact whose provenance names absolute paths (as `jpo train` writes)."""
    path = fixed_action_policy(folder, (0.5, 0.0, 0.0, 0.0))
    raw = json.loads((path / MANIFEST_FILE).read_text())
    raw["source"] = {"checkpoint": "/srv/secret/runs/ckpt_0100", "config": "configs/train.yaml"}
    raw["training_data"] = {"history": "/data/jpo/history", "split": "train"}
    raw.pop("artifact_sha256")
    raw["artifact_sha256"] = manifest_seal(raw)
    (path / MANIFEST_FILE).write_text(json.dumps(raw))
    return path


class _Server:
    """uvicorn serving ``app`` on a free loopback port, in a thread."""

    def __init__(self, app: object) -> None:
        import uvicorn

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            if self.server.started:
                return
            time.sleep(0.05)
        raise RuntimeError("uvicorn did not start")

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _policy_with_paths(tmp_path_factory.mktemp("serve") / "policy")


@pytest.fixture(scope="module")
def servers(folder: Path) -> Iterator[dict[str, str]]:
    service = PolicyService(folder)
    held = {
        "auth": _Server(create_api(service, token=TOKEN, max_body_bytes=8192)),
        "open": _Server(create_api(service, max_body_bytes=8192, max_header_bytes=8192)),
    }
    yield {name: s.url for name, s in held.items()}
    for s in held.values():
        s.close()


@pytest.mark.parametrize("route", ["/docs", "/redoc", "/openapi.json"])
def test_docs_need_the_token_when_auth_is_on(servers: dict[str, str], route: str) -> None:
    assert httpx.get(servers["auth"] + route).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.get(servers["auth"] + route, headers=wrong).status_code == 401
    assert httpx.get(servers["auth"] + route, headers=AUTH).status_code == 200
    assert httpx.get(servers["open"] + route).status_code == 200  # no token configured


def test_policy_info_shows_no_server_paths(servers: dict[str, str], folder: Path) -> None:
    got = httpx.get(servers["auth"] + "/v1/policy", headers=AUTH)
    assert got.status_code == 200
    text = got.text
    assert str(folder) not in text and str(folder.parent) not in text
    assert "/srv/secret" not in text and "/data/jpo" not in text
    data = got.json()
    assert "path" not in data
    assert data["manifest"]["source"]["checkpoint"] == "<path>"
    assert data["manifest"]["source"]["config"] == "configs/train.yaml"  # relative: kept


BAD_BODIES = {
    "outside-constraints": body(
        hyperparameters={
            "batch_size": 1_000_000,
            "learning_rate": 1e3,
            "num_layers": 100_000,
            "epochs": 1_000_000,
        }
    ),
    "too-few-features": body(features=[0.1] * 5),
    "feature-spec-mismatch": body(feature_spec_version="0-old"),
    "features-overflow-float32": body(features=[1e300] * len(OBSERVATION_NAMES)),
    "wrong-type": body(hyperparameters={**HP, "batch_size": "64"}),
    "unknown-field": body(extra=1),
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_bad_bodies_are_422_with_one_line_and_no_path(
    servers: dict[str, str], folder: Path, name: str
) -> None:
    got = httpx.post(servers["auth"] + "/v1/suggest", json=BAD_BODIES[name], headers=AUTH)
    assert got.status_code == 422, got.text
    assert str(folder) not in got.text
    detail = got.json()["detail"]
    if isinstance(detail, str):
        assert "\n" not in detail


@pytest.mark.parametrize(
    "raw",
    ["[" * 50_000 + "]" * 50_000, "{not json", '{"workload": NaN}'],
    ids=["nested-50000-deep", "not-json", "nan"],
)
def test_unparseable_bodies_are_422(servers: dict[str, str], raw: str) -> None:
    headers = {**AUTH, "content-type": "application/json"}
    big = httpx.post(
        servers["open"] + "/v1/suggest", content=raw.encode(), headers=headers
    )  # over 8192 bytes: the body limit answers first
    fits = raw if len(raw) <= 8000 else "[" * 4000 + "]" * 4000  # under the body limit
    small = httpx.post(servers["auth"] + "/v1/suggest", content=fits.encode(), headers=headers)
    assert big.status_code == 422, big.text
    assert small.status_code == 422, small.text


def test_oversize_headers_are_refused(servers: dict[str, str]) -> None:
    ok = httpx.post(servers["open"] + "/v1/suggest", json=body())
    assert ok.status_code == 200, ok.text
    medium = {"X-Pad": "x" * 12_000}  # over the app's 8192-byte header limit
    got = httpx.post(servers["open"] + "/v1/suggest", json=body(), headers=medium)
    assert got.status_code == 431, got.text
    huge = {"X-Pad": "x" * 200_000}  # 200 KB: the app or the HTTP server refuses it
    try:
        status = httpx.post(servers["open"] + "/v1/suggest", json=body(), headers=huge).status_code
    except httpx.RemoteProtocolError:
        status = 0  # the server closed the connection without an answer: refused too
    assert status in (0, 400, 431)


def test_suggest_needs_the_token(servers: dict[str, str]) -> None:
    assert httpx.post(servers["auth"] + "/v1/suggest", json=body()).status_code == 401
    assert httpx.post(servers["auth"] + "/v1/suggest", json=body(), headers=AUTH).status_code == 200
