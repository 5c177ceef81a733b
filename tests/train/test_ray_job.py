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
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from jpo.net import free_port

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def _distinct_free_ports(count: int) -> list[int]:
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
    """A private Ray head: its dashboard URL, GCS address, temp dir and the env that
    authenticates to it."""

    def __init__(self, dashboard_url: str, gcs: str, env: dict[str, str], temp_dir: Path):
        self.dashboard_url = dashboard_url
        self.gcs = gcs
        self.env = env
        self.temp_dir = temp_dir


def _node_ports() -> list[str]:
    """``ray start`` flags giving one node its own free component ports."""
    ports = _distinct_free_ports(7)
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


@contextlib.contextmanager
def _ray_node(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
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
    deadline = time.monotonic() + 90
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


def _wait_for_nodes(env: dict[str, str], gcs: str, count: int, logs: list[Path]) -> list[dict]:
    """Wait until the cluster at ``gcs`` has ``count`` alive nodes; return them."""
    probe = (
        f"import json, ray; ray.init(address={gcs!r}, log_to_driver=False); "
        "print(json.dumps([n for n in ray.nodes() if n['Alive']]))"
    )
    deadline = time.monotonic() + 120
    while True:
        proc = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
        )
        if proc.returncode == 0:
            nodes = json.loads(proc.stdout.strip().splitlines()[-1])
            if len(nodes) >= count:
                return list(nodes)
        if time.monotonic() > deadline:
            pytest.fail("cluster not up: " + "".join(p.read_text()[-1500:] for p in logs))
        time.sleep(2)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[Head]:
    """One token-auth head with the dashboard for the module's tests (one start: the
    two-node test joins a worker node to it)."""
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
    dash, gcs_port, client_port = _distinct_free_ports(3)
    gcs = f"127.0.0.1:{gcs_port}"
    head_cmd = [
        RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
        "--port", str(gcs_port), "--ray-client-server-port", str(client_port),
        "--num-cpus", "2", "--num-gpus", "0",
        "--object-store-memory", str(200 * 1024 * 1024),
        "--include-dashboard", "true",
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
        "--temp-dir", str(temp_dir), "--disable-usage-stats", *_node_ports(),
    ]  # fmt: skip
    log = temp_dir / "head.log"
    url = f"http://127.0.0.1:{dash}"
    try:
        with _ray_node(head_cmd, env, log) as head:
            _wait_for_dashboard(url, token, head, log)
            yield Head(url, gcs, env, temp_dir)
    finally:
        time.sleep(2)
        for pid in _stragglers(str(temp_dir)):  # only processes of THIS cluster
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)
    # an error of the module's last test when the cluster left a process behind
    assert not _stragglers(str(temp_dir)), _stragglers(str(temp_dir))


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
            "register_module": "jpo.sim",
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
    # the job log (what `ray job submit` streams and the dashboard shows) says each phase
    for phase in ("phase 1/3 setup", "building replays", "phase 3/3 training", "iter 2 | steps"):
        assert phase in out, (phase, out[-4000:])


@pytest.mark.slow
def test_training_on_a_two_node_cluster_places_env_runners_on_the_worker(
    ray_head: Head, tmp_path: Path
) -> None:
    """A head and a worker node (separate `ray start` processes, token auth) on this
    machine; the env runner needs a custom resource only the worker offers; the run
    checkpoints to a path both nodes share and records where its env runners ran."""
    env = {**ray_head.env, "PYTHONPATH": str(REPO)}
    worker_cmd = [
        RAY, "start", "--block", "--address", ray_head.gcs, "--node-ip-address", "127.0.0.1",
        "--num-cpus", "2", "--num-gpus", "0", "--resources", json.dumps({"jpo_sampler": 2}),
        "--object-store-memory", str(100 * 1024 * 1024),
        "--temp-dir", str(ray_head.temp_dir), "--disable-usage-stats", *_node_ports(),
    ]  # fmt: skip
    logs = [ray_head.temp_dir / "head.log", ray_head.temp_dir / "worker.log"]
    shared = tmp_path / "shared-storage"
    config = {
        "seed": 4,
        "env": {
            "id": "jpo/PrometheusReplay-v0",
            "register_module": "jpo.sim",
            "config": {"split": "train", "episode_length": 4},
        },
        "model": {"fcnet_hiddens": [16, 16]},
        "sac": {
            "train_batch_size_per_learner": 32,
            "num_steps_sampled_before_learning_starts": 50,
            "replay_buffer": {"capacity": 2000},
        },
        "resources": {
            "num_env_runners": 1,
            "custom_resources_per_env_runner": {"jpo_sampler": 1},
            "num_learners": 0,
            "num_gpus_per_learner": 0,
            "torch_threads": 1,
        },
        "storage": {"path": str(shared), "checkpoint_every": 1},
        "stop": {"iterations": 2},
        "reporting": {"min_sample_timesteps_per_iteration": 100, "progress_bar": False},
    }
    cfg_path = tmp_path / "two-node.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    with _ray_node(worker_cmd, env, logs[1]):
        nodes = _wait_for_nodes(env, ray_head.gcs, 2, logs)
        worker = next(n for n in nodes if n["Resources"].get("jpo_sampler"))
        head = next(n for n in nodes if not n["Resources"].get("jpo_sampler"))
        proc = subprocess.run(
            [sys.executable, "-m", "jpo.train", "--config", str(cfg_path)],
            cwd=REPO,
            env={**env, "RAY_ADDRESS": ray_head.gcs},
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
    ckpt = shared / "checkpoints" / "iter_000002"
    assert (ckpt / "jpo_checkpoint.json").is_file(), proc.stderr[-4000:]
    run = json.loads((ckpt / "jpo_train_config.json").read_text())
    placement = run["placement"]
    assert placement["env_runner_nodes"] == [worker["NodeID"]]  # asked from inside the runner
    assert placement["driver_node"] == head["NodeID"]  # the driver joined the head's node
    assert "1 remote env runners on nodes" in proc.stderr
