"""`ray job submit` end to end: a token-auth Ray head, a tiny training job, a checkpoint;
and training on a two-node cluster (a worker node joined to that head).

The head is the ``ray_head`` fixture (tests/conftest.py, tests/fakes/ray_cluster.py): one
per module, on free loopback ports and a private temp dir, never stopped with ``ray stop``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from fakes.ray_cluster import RAY, Head, node_ports, ray_node, wait_for_nodes

REPO = Path(__file__).resolve().parents[2]


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
    machine; the env runner needs a custom resource only the worker offers; the learner
    trains on its samples; the run checkpoints to a path both nodes reach and records
    where its env runners ran."""
    env = {**ray_head.env, "PYTHONPATH": str(REPO)}
    worker_cmd = [
        RAY, "start", "--block", "--address", ray_head.gcs, "--node-ip-address", "127.0.0.1",
        "--num-cpus", "2", "--num-gpus", "0", "--resources", json.dumps({"jpo_sampler": 2}),
        "--object-store-memory", str(100 * 1024 * 1024),
        "--temp-dir", str(ray_head.temp_dir), "--disable-usage-stats", *node_ports(),
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
    with ray_node(worker_cmd, env, logs[1]):
        nodes = wait_for_nodes(env, ray_head.gcs, 2, logs)
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
        # the worker node reaches the checkpoint the head's driver wrote (a task that only
        # the worker's custom resource can run reads it there)
        seen = subprocess.run(
            [sys.executable, "-c", READ_ON_WORKER, ray_head.gcs, str(ckpt / "jpo_checkpoint.json")],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert seen.returncode == 0, seen.stderr[-3000:]
        node, iteration = json.loads(seen.stdout.strip().splitlines()[-1])
        assert (node, iteration) == (worker["NodeID"], 2)
    assert (ckpt / "jpo_checkpoint.json").is_file(), proc.stderr[-4000:]
    # RLlib's full checkpoint: the learner's state and the env runner state it gathered
    for part in ("rllib_checkpoint.json", "learner_group", "env_runner"):
        assert (ckpt / part).exists(), part
    run = json.loads((ckpt / "jpo_train_config.json").read_text())
    placement = run["placement"]
    assert placement["env_runner_nodes"] == [worker["NodeID"]]  # asked from inside the runner
    assert placement["driver_node"] == head["NodeID"]  # the driver joined the head's node
    assert "1 remote env runners on nodes" in proc.stderr
    # the learner trained on what that runner sampled (with a remote runner, RLlib samples
    # only there): >= 100 env steps per iteration (min_sample_timesteps_per_iteration)
    rows = [json.loads(line) for line in (shared / "progress.jsonl").read_text().splitlines()]
    steps = [r["env_steps"] for r in rows]
    assert len(steps) == 2 and steps[0] >= 100 and steps[1] - steps[0] >= 100, rows
    assert rows[-1]["updates_lifetime"] > 0, rows[-1]


READ_ON_WORKER = """
import json, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)

@ray.remote(num_cpus=0, resources={"jpo_sampler": 1})
def read(path):
    with open(path) as fh:
        return ray.get_runtime_context().get_node_id(), json.load(fh)["iteration"]

print(json.dumps(ray.get(read.remote(sys.argv[2]))))
"""
