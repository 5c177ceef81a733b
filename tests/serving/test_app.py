"""The Ray Serve deployment over real HTTP on loopback (slow: starts local Ray + Serve)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fakes.policy import fixed_action_policy

from jpo.learning.features import FEATURE_SPEC_VERSION, OBSERVATION_NAMES
from jpo.net import free_port
from jpo.policy.artifact import set_latest

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HP = {"batch_size": 64, "learning_rate": 0.01, "num_layers": 18, "epochs": 30}
BODY = {
    "workload": {"dataset": "cifar10", "model": "resnet18", "framework": "pytorch"},
    "hyperparameters": HP,
    "features": [0.1] * len(OBSERVATION_NAMES),
    "feature_spec_version": FEATURE_SPEC_VERSION,
}


make_policy = fixed_action_policy


METRICS_PORT = free_port()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("policies")
    make_policy(root / "v000001", (0.5, 0.0, 0.0, 0.0), 1)
    set_latest(root, "v000001")
    return root


def test_serve_yaml_deploys_this_app_with_valid_settings() -> None:
    import yaml

    from jpo.serving.app import SERVE_YAML, ServeSettings, default_settings

    doc = yaml.safe_load(SERVE_YAML.read_text())
    (application,) = doc["applications"]
    assert application["import_path"] == "jpo.serving.app:app"
    (deployment,) = application["deployments"]
    assert deployment["name"] == "JpoPolicy"
    assert deployment["autoscaling_config"]["max_replicas"] >= 1
    settings = ServeSettings.model_validate(default_settings())
    assert settings.max_body_bytes == deployment["user_config"]["max_body_bytes"]


def test_bad_settings_fail_at_build_time_naming_the_key() -> None:
    from pydantic import ValidationError

    from jpo.serving.app import build_app

    with pytest.raises(ValidationError, match="poll_interval"):
        build_app({"poll_interval_s": -1})
    with pytest.raises(ValidationError, match="unknown"):
        build_app({"unknown": 1})


@pytest.fixture(scope="module")
def serve_url(store: Path) -> Iterator[str]:
    import os

    import ray
    from ray import serve

    from jpo.serving.app import build_app

    os.environ["JPO_SERVE_TOKEN"] = TOKEN  # replicas inherit the driver's environment
    port = free_port()
    ray.init(
        _metrics_export_port=METRICS_PORT,
        num_cpus=2,
        object_store_memory=80 * 1024 * 1024,
        include_dashboard=False,
        runtime_env={"env_vars": {"JPO_SERVE_TOKEN": TOKEN}},
        log_to_driver=False,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = build_app({"policy_path": str(store), "poll_interval_s": 0.5})
        serve.run(app, name="jpo", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "Serve did not become healthy"
            time.sleep(0.5)
        yield url
    finally:
        os.environ.pop("JPO_SERVE_TOKEN", None)
        serve.shutdown()
        ray.shutdown()


@pytest.mark.slow
def test_health_policy_and_suggest_over_http(serve_url: str) -> None:
    health = httpx.get(f"{serve_url}/healthz", timeout=10).json()
    assert health == {"status": "ok", "policy_version": "1"}
    info = httpx.get(f"{serve_url}/v1/policy", headers=AUTH, timeout=10).json()
    assert info["version"] == "1"
    got = httpx.post(f"{serve_url}/v1/suggest", json=BODY, headers=AUTH, timeout=10)
    assert got.status_code == 200, got.text
    assert got.json()["hyperparameters"]["batch_size"] > HP["batch_size"]


@pytest.mark.slow
def test_replicas_export_suggestion_and_policy_metrics(serve_url: str) -> None:
    """JPO's replica metrics reach Ray's Prometheus export (what a cluster scrapes)."""
    got = httpx.post(f"{serve_url}/v1/suggest", json=BODY, headers=AUTH, timeout=10)
    assert got.status_code == 200, got.text
    wanted = (
        "ray_jpo_serve_suggestions_total{",
        "ray_jpo_serve_policy_loaded{",
    )
    text, deadline = "", time.monotonic() + 90  # Ray's agent exports every few seconds
    while time.monotonic() < deadline:
        try:
            text = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).text
        except httpx.HTTPError:
            text = ""
        if all(w in text for w in wanted):
            break
        time.sleep(1.0)
    lines = [ln for ln in text.splitlines() if ln.startswith(wanted)]
    assert any('dataset="cifar10"' in ln and 'changed="true"' in ln for ln in lines), lines
    assert any('policy_version="1"' in ln and ln.endswith(" 1.0") for ln in lines), lines


@pytest.mark.slow
def test_dashboard_serve_panels_return_data_from_a_real_prometheus(
    serve_url: str, prometheus_factory
) -> None:
    """The Grafana dashboard's Serve panels over Ray's export, scraped by a real Prometheus."""
    from jpo.reporting.dashboard import instantiate, load_dashboard, metric_names, panel_queries

    queries = [
        q
        for q in panel_queries(load_dashboard())
        if any(n.startswith("ray_") for n in metric_names(q.expr))
    ]
    panels = {q.panel for q in queries}
    assert panels >= {"Served policy version", "Serve latency (policy deployment)"}
    server = prometheus_factory(targets=[("ray", f"127.0.0.1:{METRICS_PORT}")])
    server.wait_for_scrape("ray")
    deadline = time.monotonic() + 120
    for q in queries:
        expr = instantiate(q.expr)

        def answered(result: list) -> bool:
            # keep requests flowing so rate() over the scrapes has two points
            httpx.post(f"{serve_url}/v1/suggest", json=BODY, headers=AUTH, timeout=10)
            return bool(result)

        result = server.wait_for(expr, answered, timeout_s=max(deadline - time.monotonic(), 30))
        assert result, (q.panel, expr)
    served = server.wait_for("max by (policy_version) (ray_jpo_serve_policy_loaded) == 1")
    assert {r["metric"]["policy_version"] for r in served} <= {"1", "2"}


@pytest.mark.slow
def test_auth_and_validation_through_the_proxy(serve_url: str) -> None:
    assert httpx.post(f"{serve_url}/v1/suggest", json=BODY, timeout=10).status_code == 401
    bad = {**BODY, "hyperparameters": {**HP, "batch_size": "lots"}}
    assert (
        httpx.post(f"{serve_url}/v1/suggest", json=bad, headers=AUTH, timeout=10).status_code == 422
    )
    huge = b'{"x": "' + b"y" * 100_000 + b'"}'
    got = httpx.post(
        f"{serve_url}/v1/suggest",
        content=huge,
        headers={**AUTH, "content-type": "application/json"},
        timeout=10,
    )
    assert got.status_code == 422


@pytest.mark.slow
def test_a_promoted_policy_is_picked_up_without_dropping_requests(
    serve_url: str, store: Path
) -> None:
    import concurrent.futures

    make_policy(store / "v000002", (-0.5, 0.0, 0.0, 0.0), 2)
    set_latest(store, "v000002")
    versions: set[str] = set()
    failures = 0
    deadline = time.monotonic() + 60

    def one() -> str | None:
        r = httpx.post(f"{serve_url}/v1/suggest", json=BODY, headers=AUTH, timeout=10)
        return r.json()["policy_version"] if r.status_code == 200 else None

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        while time.monotonic() < deadline:
            for v in pool.map(lambda _: one(), range(8)):
                if v is None:
                    failures += 1
                else:
                    versions.add(v)
            if "2" in versions:
                break
    assert failures == 0
    assert "2" in versions
    final = httpx.post(f"{serve_url}/v1/suggest", json=BODY, headers=AUTH, timeout=10).json()
    assert final["policy_version"] == "2"
    assert final["hyperparameters"]["batch_size"] < HP["batch_size"]


@pytest.mark.slow
def test_reconfigure_switches_the_policy_in_place(
    serve_url: str, store: Path, tmp_path: Path
) -> None:
    import concurrent.futures

    from ray import serve

    from jpo.serving.app import build_app

    other = make_policy(tmp_path / "other" / "v000005", (0.0, 0.5, 0.0, 0.0), 5)
    failures = 0

    def one() -> str | None:
        r = httpx.post(f"{serve_url}/v1/suggest", json=BODY, headers=AUTH, timeout=30)
        return r.json()["policy_version"] if r.status_code == 200 else None

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        background = [pool.submit(one) for _ in range(40)]
        serve.run(
            build_app(
                {"policy_path": str(store), "poll_interval_s": 0.5},  # same args: no restart
                user_config={"policy_path": str(other), "poll_interval_s": 0},
            ),
            name="jpo",
            route_prefix="/",
        )
        failures = sum(1 for f in background if f.result() is None)
    assert failures == 0
    final = httpx.post(f"{serve_url}/v1/suggest", json=BODY, headers=AUTH, timeout=10).json()
    assert final["policy_version"] == "5"
    assert final["hyperparameters"]["learning_rate"] > HP["learning_rate"]
