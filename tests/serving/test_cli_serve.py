"""``jpo serve`` as a process: SIGTERM stops it and every Ray process it started.

Also: the replica's ``policy_loaded`` gauge is set again on every health check, and
request (access) logs appear only at ``--log-level debug``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from jpo.net import free_port

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 240.0
EXIT_TIMEOUT_S = 120.0
# Ray's per-node helpers that an unclean exit used to leave behind (issue 27)
AGENTS = ("dashboard/agent.py", "runtime_env/agent/main.py")


def descendants(pid: int) -> list[Any]:
    import psutil

    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def alive(procs: list[Any]) -> list[str]:
    """Processes of ``procs`` still running (same pid and start time, not zombies)."""
    import psutil

    left = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{proc.pid} {' '.join(proc.cmdline())[:160]}")
        except psutil.NoSuchProcess:
            continue
    return left


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


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Any) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"jpo serve exited early:\n{log.read()[-4000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "jpo serve did not become healthy"
        time.sleep(1.0)


@pytest.mark.slow
def test_serve_on_an_existing_cluster_leaves_it_running(tmp_path: Path) -> None:
    """``--address``: deploy onto a `ray start` cluster; SIGTERM deletes only the app."""
    gcs_port, http_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    # Ray's token auth, as on a cluster (configs/k8s): the client needs the head's token
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    ray_bin = str(Path(sys.executable).parent / "ray")
    # a private temp dir: no other `ray.init()` on this machine finds this cluster (short:
    # Ray's unix sockets live under it, and their paths may not exceed 107 bytes)
    temp_dir = Path(tempfile.mkdtemp(prefix="jpo-ray-", dir="/tmp"))
    head = subprocess.Popen(
        [
            ray_bin,
            "start",
            "--head",
            "--block",
            f"--port={gcs_port}",
            "--num-cpus=1",
            "--include-dashboard=false",
            f"--temp-dir={temp_dir}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    log = (tmp_path / "serve.log").open("w+")
    serve = None
    try:
        address = f"127.0.0.1:{gcs_port}"
        serve = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jpo.cli.app",
                "serve",
                "--address",
                address,
                "--port",
                str(http_port),
            ],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        url = f"http://127.0.0.1:{http_port}"
        wait_healthy(url, serve, log)
        head_children = descendants(head.pid)
        assert not any(c.pid == serve.pid for c in head_children)
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=EXIT_TIMEOUT_S) == 0
        # the cluster is still up (its processes alive); the app is gone
        assert head.poll() is None
        assert alive(head_children), "the cluster went down with jpo serve"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 404:
                    break
            except httpx.HTTPError:
                break
            time.sleep(1.0)
        else:
            pytest.fail("the app still answers after jpo serve exited")
    finally:
        if serve is not None and serve.poll() is None:
            serve.kill()
            serve.wait(timeout=30)
        children = descendants(head.pid)
        head.terminate()  # `ray start --block` stops its cluster on SIGTERM
        try:
            head.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            head.kill()
        deadline = time.monotonic() + 30
        while alive(children) and time.monotonic() < deadline:
            time.sleep(0.5)
        for child in children:  # only the processes this test started, by pid
            with contextlib.suppress(Exception):
                child.kill()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
