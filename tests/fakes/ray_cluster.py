"""A private, real Ray cluster for tests: a token-auth head (and worker nodes) on loopback.

Each node is one ``ray start ... --block`` process in its own process group, on free
loopback ports and a private temp dir, and is stopped by signalling that group (then any
straggler whose command line names this cluster's temp dir). ``ray stop`` is NOT used: it
stops every Ray on the machine, including other people's. Token auth as the operator
guide sets it up: ``RAY_AUTH_MODE=token`` plus the token in ``RAY_AUTH_TOKEN`` for the
nodes and every client (Ray 2.60 also reads ``RAY_AUTH_TOKEN_PATH`` or
``~/.ray/auth_token``; the env var keeps ``~`` untouched).

The ``ray_head`` fixture (tests/conftest.py) starts one head per test module with
:func:`ray_head_cluster`; tests/train/test_ray_job.py joins a worker node to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from jpo.net import free_port

RAY = str(Path(sys.executable).parent / "ray")
READY_TIMEOUT_S = 90.0  # generous: a loaded 2-core machine starts a head in ~10-30 s


@dataclass(frozen=True)
class Head:
    """A private Ray head: where to reach it and the env that authenticates to it."""

    dashboard_url: str  # http://127.0.0.1:<port>, what `ray job submit --address` takes
    gcs: str  # 127.0.0.1:<port>, the GCS address a driver on this node joins
    client: str  # ray://127.0.0.1:<port>, the Ray Client address (KubeRay's 10001)
    metrics_url: str  # the head node's Prometheus export (--metrics-export-port)
    env: dict[str, str]  # os.environ plus the token, without RAY_ADDRESS
    temp_dir: Path  # private: no other `ray.init()` on this machine finds the cluster
    pid: int  # the `ray start --block` process; its descendants are the head's processes


def distinct_free_ports(count: int) -> list[int]:
    """Return ``count`` different free loopback ports."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _worker_port_base(taken: list[int], width: int) -> int:
    """Return a worker-port range start whose ``width`` ports hold none of ``taken``.

    `ray start` refuses a component port inside the worker range; the free ports above
    come from the kernel's ephemeral range (32768+ on Linux), which a random range in
    20000-40200 overlapped often enough to fail CI once.
    """
    while True:
        base = 20000 + secrets.randbelow(20000)
        if not any(base <= port <= base + width for port in taken):
            return base


def node_ports(metrics_port: int | None = None) -> list[str]:
    """``ray start`` flags giving one node its own free component ports."""
    ports = distinct_free_ports(7)
    if metrics_port is not None:
        ports[5] = metrics_port
    base = _worker_port_base(ports, width=100)
    return [
        "--node-manager-port", str(ports[0]),
        "--object-manager-port", str(ports[1]),
        "--dashboard-agent-listen-port", str(ports[2]),
        "--dashboard-agent-grpc-port", str(ports[3]),
        "--runtime-env-agent-port", str(ports[4]),
        "--metrics-export-port", str(ports[5]),
        "--min-worker-port", str(base), "--max-worker-port", str(base + 100),
    ]  # fmt: skip


def stragglers(marker: str) -> list[int]:
    """Pids of processes (not this one) whose command line contains ``marker``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline and int(proc.name) != os.getpid():
            pids.append(int(proc.name))
    return pids


def descendants(pid: int) -> list[Any]:
    """``psutil.Process`` objects of every live descendant of ``pid``."""
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


@contextlib.contextmanager
def ray_node(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run one ``ray start ... --block`` node in its own process group; stop that group."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _wait_for_dashboard(url: str, token: str, head: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until the head's dashboard answers an authenticated request."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if head.poll() is not None:
            pytest.fail(f"ray start exited: {log.read_text()[-3000:]}")
        try:
            resp = httpx.get(f"{url}/api/version", headers={"Authorization": f"Bearer {token}"})
            if resp.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"dashboard not up: {log.read_text()[-3000:]}")
        time.sleep(1)


NODE_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")
"""Process titles of the per-node agents the raylet starts last (after the dashboard is up)."""


def _wait_for_agents(head: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until the head node's agents run, so its set of processes is complete."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        titles = " ".join(alive(descendants(head.pid)))
        if all(agent in titles for agent in NODE_AGENTS):
            return
        if head.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the head's agents did not start: {log.read_text()[-3000:]}")
        time.sleep(1)


def alive_nodes(env: dict[str, str], gcs: str) -> list[dict[str, Any]] | None:
    """The cluster's alive nodes as a new driver sees them (None: it could not connect)."""
    probe = (
        f"import json, ray; ray.init(address={gcs!r}, log_to_driver=False); "
        "print(json.dumps([n for n in ray.nodes() if n['Alive']]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        return None
    return list(json.loads(proc.stdout.strip().splitlines()[-1]))


def wait_for_nodes(env: dict[str, str], gcs: str, count: int, logs: list[Path]) -> list[dict]:
    """Wait until the cluster at ``gcs`` has ``count`` alive nodes; return them."""
    deadline = time.monotonic() + 2 * READY_TIMEOUT_S
    while True:
        nodes = alive_nodes(env, gcs)
        if nodes is not None and len(nodes) >= count:
            return nodes
        if time.monotonic() > deadline:
            pytest.fail("cluster not up: " + "".join(p.read_text()[-1500:] for p in logs))
        time.sleep(2)


@contextlib.contextmanager
def ray_head_cluster() -> Iterator[Head]:
    """Start one token-auth head with the dashboard and Ray Client; stop it and its
    processes on exit, failing if one of them survives."""
    temp_dir = Path(tempfile.mkdtemp(prefix="jpo-rj-", dir="/tmp"))  # short: socket paths
    token = secrets.token_hex(32)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_USAGE_STATS_ENABLED": "0",
        # Serve's proxy started in over 15 s on a loaded 2-core machine, and Serve killed it
        # after 3 readiness checks of 5 s each (jpo serve then failed with ActorDiedError)
        "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
    }
    env.pop("RAY_ADDRESS", None)
    dash, gcs_port, client_port, metrics_port = distinct_free_ports(4)
    gcs = f"127.0.0.1:{gcs_port}"
    head_cmd = [
        RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
        "--port", str(gcs_port), "--ray-client-server-port", str(client_port),
        "--num-cpus", "2", "--num-gpus", "0",
        "--object-store-memory", str(200 * 1024 * 1024),
        "--include-dashboard", "true",
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
        "--temp-dir", str(temp_dir), "--disable-usage-stats", *node_ports(metrics_port),
    ]  # fmt: skip
    log = temp_dir / "head.log"
    url = f"http://127.0.0.1:{dash}"
    try:
        with ray_node(head_cmd, env, log) as head:
            _wait_for_dashboard(url, token, head, log)
            _wait_for_agents(head, log)
            yield Head(
                dashboard_url=url,
                gcs=gcs,
                client=f"ray://127.0.0.1:{client_port}",
                metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
                env=env,
                temp_dir=temp_dir,
                pid=head.pid,
            )
    finally:
        time.sleep(2)
        for pid in stragglers(str(temp_dir)):  # only processes of THIS cluster
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)
    # an error of the module's last test when the cluster left a process behind
    assert not stragglers(str(temp_dir)), stragglers(str(temp_dir))
