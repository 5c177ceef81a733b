"""`ray job submit` end to end: a token-auth Ray head, a tiny training job, a checkpoint.

The head is started with ``ray start --head --block`` in its own process group and torn
down by signalling that group (and any straggler whose command line names this test's
private temp dir). ``ray stop`` is NOT used here: it stops every Ray on the machine,
including other people's. Token auth: ``RAY_AUTH_MODE=token`` plus the token in
``RAY_AUTH_TOKEN`` for both the head and the CLI (Ray 2.60 also reads
``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``; the env var keeps ``~`` untouched).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _distinct_free_ports(count: int) -> list[int]:
    """Return ``count`` different free loopback ports."""
    ports: list[int] = []
    while len(ports) < count:
        port = _free_port()
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


def _stragglers(marker: str) -> list[int]:
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


class Head:
    """A private Ray head: its dashboard URL and the env that authenticates to it."""

    def __init__(self, dashboard_url: str, env: dict[str, str], temp_dir: Path):
        self.dashboard_url = dashboard_url
        self.env = env
        self.temp_dir = temp_dir


@pytest.fixture(scope="module")
def ray_head() -> Iterator[Head]:
    temp_dir = Path(tempfile.mkdtemp(prefix="jpo-rj-", dir="/tmp"))  # short: socket paths
    token = secrets.token_hex(32)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    ports = _distinct_free_ports(9)
    dash = ports[0]
    worker_ports = 200
    worker_base = _worker_port_base(ports, width=worker_ports)
    cmd = [
        RAY, "start", "--head", "--block",
        "--node-ip-address", "127.0.0.1",
        "--port", str(ports[1]),
        "--num-cpus", "2", "--num-gpus", "0",
        "--object-store-memory", str(200 * 1024 * 1024),
        "--include-dashboard", "true",
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
        "--dashboard-agent-listen-port", str(ports[2]),
        "--dashboard-agent-grpc-port", str(ports[3]),
        "--runtime-env-agent-port", str(ports[4]),
        "--metrics-export-port", str(ports[5]),
        "--ray-client-server-port", str(ports[6]),
        "--node-manager-port", str(ports[7]),
        "--object-manager-port", str(ports[8]),
        "--min-worker-port", str(worker_base), "--max-worker-port", str(worker_base + worker_ports),
        "--temp-dir", str(temp_dir),
        "--disable-usage-stats",
    ]  # fmt: skip
    log = (temp_dir / "head.log").open("w")
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ray start exited: {(temp_dir / 'head.log').read_text()[-3000:]}")
            try:
                resp = httpx.get(f"{url}/api/version", headers={"Authorization": f"Bearer {token}"})
                if resp.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"dashboard not up: {(temp_dir / 'head.log').read_text()[-3000:]}")
            time.sleep(1)
        yield Head(url, env, temp_dir)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(2)
        for pid in _stragglers(str(temp_dir)):  # only processes of THIS head
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_dashboard_refuses_requests_without_the_token(ray_head: Head) -> None:
    resp = httpx.get(f"{ray_head.dashboard_url}/api/jobs/")
    assert resp.status_code in (401, 403)


@pytest.mark.slow
def test_ray_job_submit_trains_and_checkpoints(ray_head: Head, tmp_path: Path) -> None:
    storage = tmp_path / "store"
    config = {
        "seed": 3,
        "env": {
            "id": "jpo/PrometheusReplay-v0",
            "register_module": "envs",
            "config": {"split": "train", "episode_length": 4},
        },
        "model": {"fcnet_hiddens": [16, 16]},
        "sac": {
            "train_batch_size_per_learner": 32,
            "num_steps_sampled_before_learning_starts": 50,
            "replay_buffer": {"capacity": 2000},
        },
        "resources": {"torch_threads": 1},
        "storage": {"path": str(storage), "checkpoint_every": 1},
        "stop": {"iterations": 50},
        "reporting": {"min_sample_timesteps_per_iteration": 100, "progress_bar": False},
    }
    cfg_path = tmp_path / "job.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    runtime_env = {"excludes": [".git", "runs", "*.egg-info", "notebooks"]}
    proc = subprocess.run(
        [
            RAY,
            "job",
            "submit",
            "--address",
            ray_head.dashboard_url,
            "--working-dir",
            ".",
            "--runtime-env-json",
            json.dumps(runtime_env),
            "--",
            "python",
            "-m",
            "jpo.train",
            "--config",
            str(cfg_path),
            "--stop-iters",
            "2",
        ],
        cwd=REPO,
        env=ray_head.env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "succeeded" in out, out[-4000:]
    ckpt = storage / "checkpoints" / "iter_000002"
    assert (ckpt / "jpo_checkpoint.json").is_file(), out[-4000:]
    assert (ckpt / "rllib_checkpoint.json").is_file()
    assert json.loads((ckpt / "jpo_checkpoint.json").read_text())["iteration"] == 2
