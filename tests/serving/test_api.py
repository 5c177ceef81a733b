"""The Serve app's HTTP logic through FastAPI's TestClient (no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes.policy import RUN_SUMMARY, fixed_action_policy
from fastapi.testclient import TestClient

from jpo.learning.features import FEATURE_SPEC_VERSION, OBSERVATION_NAMES
from jpo.serving.api import PolicyService, create_api
from jpo.workload.types import HYPERPARAMETER_NAMES

ACTION = (0.5, 0.0, 0.0, 0.0)  # batch size up, the rest unchanged


def make_policy(
    folder: Path,
    action: tuple[float, ...] = ACTION,
    version: int = 1,
    coupling: float | None = None,
) -> Path:
    """Tiny artifact whose deterministic action is ``action`` whatever the observation."""
    return fixed_action_policy(folder, action, version, coupling)


SUMMARY = RUN_SUMMARY
HP = {"batch_size": 64, "learning_rate": 0.01, "num_layers": 18, "epochs": 30}
WORKLOAD = {"dataset": "cifar10", "model": "resnet18", "framework": "pytorch"}


def body(**over: object) -> dict:
    base = {
        "workload": WORKLOAD,
        "hyperparameters": HP,
        "features": [0.1] * len(OBSERVATION_NAMES),
        "feature_spec_version": FEATURE_SPEC_VERSION,
    }
    base.update(over)
    return base


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    return make_policy(tmp_path / "policy")


@pytest.fixture
def service(policy_dir: Path) -> PolicyService:
    return PolicyService(policy_dir)


@pytest.fixture
def client(service: PolicyService) -> TestClient:
    return TestClient(create_api(service, max_body_bytes=8192))


def test_healthz_and_policy_info(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "policy_version": "1"}
    info = client.get("/v1/policy").json()
    assert info["version"] == "1"
    assert info["manifest"]["feature_spec_version"] == FEATURE_SPEC_VERSION


def test_suggest_with_features_maps_the_action_through_constraints(client: TestClient) -> None:
    got = client.post("/v1/suggest", json=body())
    assert got.status_code == 200, got.text
    data = got.json()
    assert data["action"] == pytest.approx(list(ACTION), abs=1e-6)
    assert data["action_names"] == list(HYPERPARAMETER_NAMES)
    assert data["hyperparameters"]["batch_size"] > HP["batch_size"]
    assert data["hyperparameters"]["learning_rate"] == HP["learning_rate"]
    assert data["policy_version"] == "1"
    assert data["predicted_gain"] is None  # no summary to price it with
    assert data["learning_rate_follows_batch"] == 0.0  # a manifest without it: uncoupled


def test_suggest_applies_the_policys_learning_rate_coupling(tmp_path: Path) -> None:
    """The action mapping is the policy's: lr follows batch with the manifest's exponent."""
    policy = make_policy(tmp_path / "coupled", (0.999, 0.0, 0.0, 0.0), coupling=1.0)
    data = TestClient(create_api(PolicyService(policy))).post("/v1/suggest", json=body()).json()
    assert data["learning_rate_follows_batch"] == 1.0
    batch = data["hyperparameters"]["batch_size"]
    assert batch > HP["batch_size"]
    assert data["hyperparameters"]["learning_rate"] == pytest.approx(
        HP["learning_rate"] * batch / HP["batch_size"]
    )


def test_on_suggest_sees_each_answered_suggestion_only(service: PolicyService) -> None:
    seen: list[tuple[str, int, str]] = []
    client = TestClient(
        create_api(
            service,
            on_suggest=lambda req, resp: seen.append(
                (req.workload.dataset, resp.hyperparameters.batch_size, resp.policy_version)
            ),
        )
    )
    assert client.post("/v1/suggest", json=body()).status_code == 200
    assert client.post("/v1/suggest", json=body(features=["lots"])).status_code == 422
    assert len(seen) == 1
    dataset, batch_size, version = seen[0]
    assert (dataset, version) == (WORKLOAD["dataset"], "1")
    assert batch_size > HP["batch_size"]


def test_suggest_with_a_raw_summary_prices_the_gain(client: TestClient) -> None:
    got = client.post(
        "/v1/suggest",
        json={"workload": WORKLOAD, "hyperparameters": HP, "summary": SUMMARY},
    )
    assert got.status_code == 200, got.text
    assert got.json()["predicted_gain"] > 0


@pytest.mark.parametrize(
    "raw",
    [
        '{{"workload": {}, "hyperparameters": {}, "summary": {}}}'.format(
            '{"dataset": "c", "model": "m", "framework": "pytorch"}',
            '{"batch_size": 64, "learning_rate": NaN, "num_layers": 18, "epochs": 30}',
            "null",
        ),
        '{"workload": {"dataset": "c", "model": "m", "framework": "pytorch"}, '
        '"hyperparameters": {"batch_size": 64, "learning_rate": 0.01, "num_layers": 18, '
        '"epochs": 30}, "features": [Infinity], "feature_spec_version": "1"}',
    ],
    ids=["nan-hyperparameter", "inf-feature"],
)
def test_nan_and_inf_are_422(client: TestClient, raw: str) -> None:
    got = client.post("/v1/suggest", content=raw, headers={"content-type": "application/json"})
    assert got.status_code == 422


@pytest.mark.parametrize(
    "bad",
    [
        body(hyperparameters={**HP, "batch_size": "64"}),  # wrong type
        body(hyperparameters={**HP, "batch_size": 64.5}),  # wrong type
        body(workload={**WORKLOAD, "team": "x"}),  # unknown workload field
        body(extra=1),  # unknown top-level field
        body(workload={**WORKLOAD, "model": "bad model!"}),  # not a label value
        body(features=[0.0] * 600),  # too long
        body(features=None),  # neither features nor summary
        body(summary={**SUMMARY, "gpu_util_mean": -1.0}),
        body(hyperparameters={k: v for k, v in HP.items() if k != "epochs"}),
    ],
)
def test_bad_bodies_are_422(client: TestClient, bad: dict) -> None:
    assert client.post("/v1/suggest", json=bad).status_code == 422


def test_oversize_body_is_422_before_parsing(client: TestClient) -> None:
    raw = '{"pad": "' + "x" * 10000 + '"}'
    got = client.post("/v1/suggest", content=raw, headers={"content-type": "application/json"})
    assert got.status_code == 422
    assert "8192 bytes" in got.json()["detail"]


def test_feature_spec_mismatch_is_a_clear_422(client: TestClient) -> None:
    # a bad body like any other (README: bad bodies get 422; it was 409 before issue 26)
    got = client.post("/v1/suggest", json=body(feature_spec_version="0-old"))
    assert got.status_code == 422
    assert "feature_spec_version" in got.json()["detail"]


def test_bearer_token_is_required_when_configured(service: PolicyService) -> None:
    client = TestClient(create_api(service, token="s3cret"))
    assert client.post("/v1/suggest", json=body()).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert client.post("/v1/suggest", json=body(), headers=wrong).status_code == 401
    assert client.get("/v1/policy").status_code == 401
    ok = {"Authorization": "Bearer s3cret"}
    assert client.post("/v1/suggest", json=body(), headers=ok).status_code == 200
    assert client.get("/healthz").status_code == 200  # liveness stays open


def test_token_from_env_or_secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jpo.serving.auth import load_token

    monkeypatch.delenv("JPO_SERVE_TOKEN", raising=False)
    monkeypatch.delenv("JPO_SERVE_TOKEN_FILE", raising=False)
    assert load_token() is None
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    assert load_token(str(secret)) == "from-file"
    monkeypatch.setenv("JPO_SERVE_TOKEN", "from-env")
    assert load_token(str(secret)) == "from-env"


def test_hot_reload_picks_a_newer_version_and_keeps_answering(tmp_path: Path) -> None:
    root = tmp_path / "store"
    make_policy(root / "v000001", version=1)
    service = PolicyService(root)
    client = TestClient(create_api(service))
    assert client.get("/healthz").json()["policy_version"] == "1"
    assert service.reload() is False  # nothing new
    make_policy(root / "v000002", action=(-0.5, 0.0, 0.0, 0.0), version=2)
    assert service.reload() is True
    data = client.post("/v1/suggest", json=body()).json()
    assert data["policy_version"] == "2"
    assert data["hyperparameters"]["batch_size"] < HP["batch_size"]


def test_a_broken_new_version_keeps_the_old_one(tmp_path: Path) -> None:
    from jpo.errors import PolicyError

    root = tmp_path / "store"
    make_policy(root / "v000001", version=1)
    service = PolicyService(root)
    broken = make_policy(root / "v000002", version=2)
    (broken / "policy.npz").write_bytes(b"garbage")
    with pytest.raises(PolicyError):
        service.reload()
    assert service.policy.version == 1
    client = TestClient(create_api(service))
    assert client.post("/v1/suggest", json=body()).json()["policy_version"] == "1"
