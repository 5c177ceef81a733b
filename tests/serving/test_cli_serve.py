"""``jpo serve`` as a process: SIGTERM stops it and every Ray process it started.

Locally and with ``--address`` on a running token-auth cluster (the ``ray_head`` fixture),
which keeps running. Also: an ``--address`` where nothing listens fails at once with exit
5 naming it; the replica's ``policy_loaded`` gauge is set again on every health check, and
request (access) logs appear only at ``--log-level debug``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fakes.ray_cluster import Head, alive, alive_nodes, descendants

from jpo.learning.features import FEATURE_SPEC_VERSION, OBSERVATION_NAMES
from jpo.net import free_port

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 240.0
EXIT_TIMEOUT_S = 120.0
# Ray's per-node helpers that an unclean exit used to leave behind (issue 27)
AGENTS = ("dashboard/agent.py", "runtime_env/agent/main.py")


@pytest.mark.slow
def test_sigterm_stops_jpo_serve_and_all_its_ray_processes(tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "serve.log").open("w+")
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jpo.cli.app", "serve", "--port", str(port), "--num-cpus", "1"],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    children: list[Any] = []
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert proc.poll() is None, log.seek(0) or log.read()[-4000:]
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "jpo serve did not become healthy"
            time.sleep(1.0)
        for _ in range(20):
            assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        children = descendants(proc.pid)
        cmdlines = [" ".join(c.cmdline()) for c in children]
        assert any(a in c for a in AGENTS for c in cmdlines), cmdlines  # not vacuous

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=EXIT_TIMEOUT_S) == 0
        deadline = time.monotonic() + 30
        while alive(children) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert alive(children) == [], "orphaned Ray processes after SIGTERM"
        log.seek(0)
        output = log.read()
        # 21 requests: no access-log line for them at the default level (info)
        assert "GET /healthz" not in output, output[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        for child in children:  # only the processes this test started, by pid
            with contextlib.suppress(Exception):  # already gone
                child.kill()
        log.close()


def test_access_logs_only_at_debug() -> None:
    from jpo.cli.commands.serve import _logging_config
    from jpo.errors import ConfigError

    assert _logging_config("info") == {"log_level": "INFO", "enable_access_log": False}
    assert _logging_config("DEBUG") == {"log_level": "DEBUG", "enable_access_log": True}
    with pytest.raises(ConfigError, match="--log-level 'loud'"):
        _logging_config("loud")


class _Gauge:
    def __init__(self) -> None:
        self.calls: list[tuple[float, dict[str, str]]] = []

    def set(self, value: float, tags: dict[str, str]) -> None:
        self.calls.append((value, tags))


def test_policy_loaded_gauge_is_set_again_on_every_health_check() -> None:
    from jpo.serving.app import PolicyDeployment, _ReplicaMetrics

    metrics = _ReplicaMetrics()
    gauge = _Gauge()
    metrics._loaded = gauge  # type: ignore[assignment]
    replica = SimpleNamespace(
        service=SimpleNamespace(policy=object()),
        _metrics=metrics,
        version=lambda: "5",
    )
    check_health = PolicyDeployment.func_or_class.check_health
    for _ in range(3):
        check_health(replica)
    assert gauge.calls == [(1, {"policy_version": "5"})] * 3
    replica.version = lambda: "6"  # a promoted policy was loaded
    check_health(replica)
    assert gauge.calls[-2:] == [(0, {"policy_version": "5"}), (1, {"policy_version": "6"})]


def test_prometheus_client_queries_are_not_logged_at_info() -> None:
    import logging

    import jpo.telemetry.prometheus  # noqa: F401 - sets the httpx logger's level on import

    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)


def wait_healthy(
    url: str, proc: subprocess.Popen[bytes], log: Any, logs: Path | None = None
) -> None:
    """Wait until ``jpo serve`` answers ``/healthz``; fail with its log (and the cluster's
    Ray Client server logs under ``logs``) if it exits."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            log.seek(0)
            cluster = "".join(
                f"\n--- {f.name}:\n{f.read_text(errors='replace')[-2000:]}"
                for f in sorted(
                    (logs or Path("/nonexistent")).glob("session_latest/logs/ray_client_server*")
                )
            )
            pytest.fail(f"jpo serve exited early:\n{log.read()[-4000:]}{cluster}")
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "jpo serve did not become healthy"
        time.sleep(1.0)


def metric_lines(url: str, name: str, timeout_s: float = 90.0) -> list[str]:
    """Poll a Prometheus export until it has samples of ``name``; return their lines."""
    deadline = time.monotonic() + timeout_s  # Ray's agent exports every few seconds
    while True:
        try:
            text = httpx.get(url, timeout=10).text
        except httpx.HTTPError:
            text = ""
        lines = [ln for ln in text.splitlines() if ln.startswith(name + "{")]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(1.0)


BUNDLED = json.loads((REPO / "jpo" / "data" / "policy" / "manifest.json").read_text())
SUGGEST_BODY = {
    "workload": {"dataset": "cifar10", "model": "resnet18", "framework": "pytorch"},
    "hyperparameters": {"batch_size": 128, "learning_rate": 0.1, "num_layers": 18, "epochs": 200},
    "features": [0.1] * len(OBSERVATION_NAMES),
    "feature_spec_version": FEATURE_SPEC_VERSION,
}


@pytest.mark.slow
def test_serve_on_an_existing_cluster_serves_and_leaves_it_running(
    ray_head: Head, tmp_path: Path
) -> None:
    """``jpo serve --address ray://...`` (the operator guide's call) on a token-auth cluster:
    suggestions from the bundled policy behind the API token, ``policy_loaded`` 1 on the
    head's metrics export; a wrong Ray token fails with exit 5, a second jpo serve refuses
    to replace the app; SIGTERM exits 0, removes every process it started there, and the
    cluster stays up for the next driver."""
    http_port = free_port()
    api_token = secrets.token_hex(16)  # only in jpo serve's env: the cluster never saw it
    env = {**ray_head.env, "PYTHONPATH": str(REPO), "JPO_SERVE_TOKEN": api_token}
    before = {p.pid for p in descendants(ray_head.pid)}
    # without the cluster's Ray token: refused by the cluster, exit 5 naming the fix
    wrong = {**env, "RAY_AUTH_TOKEN": "0" * 64}
    refused = subprocess.run(
        [sys.executable, "-m", "jpo.cli.app", "serve", "--address", ray_head.gcs],
        cwd=tmp_path, env=wrong, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert refused.returncode == 5, refused.stderr[-3000:]
    assert f"--address '{ray_head.gcs}': cannot join" in refused.stderr, refused.stderr[-3000:]
    assert "RAY_AUTH_TOKEN" in refused.stderr
    log = (tmp_path / "serve.log").open("w+")
    cmd = [sys.executable, "-m", "jpo.cli.app", "serve", "--address", ray_head.client]
    serve = subprocess.Popen(
        [*cmd, "--port", str(http_port)], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        env=env, start_new_session=True,
    )  # fmt: skip
    started: list[Any] = []
    try:
        url = f"http://127.0.0.1:{http_port}"
        wait_healthy(url, serve, log, ray_head.temp_dir)
        version = str(BUNDLED["policy_version"])
        assert httpx.get(f"{url}/healthz", timeout=10).json()["policy_version"] == version
        auth = {"Authorization": f"Bearer {api_token}"}
        assert httpx.post(f"{url}/v1/suggest", json=SUGGEST_BODY, timeout=10).status_code == 401
        got = httpx.post(f"{url}/v1/suggest", json=SUGGEST_BODY, headers=auth, timeout=10)
        assert got.status_code == 200, got.text
        answer = got.json()
        assert str(answer["policy_version"]) == version, answer
        assert set(answer["hyperparameters"]) == set(SUGGEST_BODY["hyperparameters"]), answer
        loaded = metric_lines(ray_head.metrics_url, "ray_jpo_serve_policy_loaded")
        assert any(f'policy_version="{version}"' in ln and ln.endswith(" 1.0") for ln in loaded)
        # a second jpo serve on the cluster refuses to replace (and later delete) the app
        second = subprocess.run(
            [*cmd, "--port", str(free_port())], cwd=tmp_path, env=env, capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
        assert second.returncode == 2, second.stdout + second.stderr[-3000:]
        assert "already runs an application named 'jpo'" in second.stderr, second.stderr
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        started = [p for p in descendants(ray_head.pid) if p.pid not in before]
        assert alive(started), "nothing of jpo serve's ran on the cluster"  # not vacuous

        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=EXIT_TIMEOUT_S) == 0
        deadline = time.monotonic() + 60
        while alive(started) and time.monotonic() < deadline:
            time.sleep(0.5)
        log.seek(0)
        output = log.read()
        assert alive(started) == [], f"outlived jpo serve on the cluster; log:\n{output[-3000:]}"
        with pytest.raises(httpx.TransportError):  # the app and Serve's proxy are gone
            httpx.get(f"{url}/healthz", timeout=5)
        # the cluster itself is untouched: a new driver joins it and sees its node
        assert alive_nodes(ray_head.env, ray_head.gcs), "the cluster went down with jpo serve"
        assert "GET /healthz" not in output  # no access log at the default level
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait(timeout=30)
        for proc in started:  # only what this test started on the cluster, by pid
            with contextlib.suppress(Exception):  # already gone
                proc.kill()
        log.close()


def test_serve_address_where_nothing_listens_fails_at_once_naming_it(tmp_path: Path) -> None:
    """Exit 5 (docs/user-guide.md, "Exit codes") in well under Ray's endless retries."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for address in (f"127.0.0.1:{free_port()}", f"ray://127.0.0.1:{free_port()}"):
        proc = subprocess.run(
            [sys.executable, "-m", "jpo.cli.app", "serve", "--address", address],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 5, proc.stdout + proc.stderr
        assert f"--address '{address}': no Ray cluster answers" in proc.stderr, proc.stderr
        assert "ray start --head" in proc.stderr and "ray://" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "jpo.cli.app", "serve", "--address", "http://127.0.0.1:8265"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "not a Ray cluster address" in proc.stderr, proc.stderr
