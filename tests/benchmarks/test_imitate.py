"""The imitation trainer (benchmarks/train/imitate.py) and its teacher (teacher.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import envs  # noqa: F401  (registers the replay env)
from envs.replay_env import PrometheusReplayEnv
from jpo.policy import LocalPolicy

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks" / "train"))

from teacher import oracle_configs, teacher_action  # noqa: E402


@pytest.fixture(scope="module")
def env() -> PrometheusReplayEnv:
    return PrometheusReplayEnv(
        config={"workloads": ["cifar10-resnet18", "mnist-lenet"], "episode_length": 6}
    )


def test_the_teacher_walks_each_config_to_its_oracle(env: PrometheusReplayEnv) -> None:
    """Each teacher step moves every parameter towards the oracle's value, never past it."""
    oracles = oracle_configs(env.profiles, env.constraints)
    assert set(oracles) == {"cifar10-resnet18", "mnist-lenet"}
    for name, target in oracles.items():
        env.reset(seed=0, options={"workload": name, "start": 0})
        trace = [env.hyperparameters]
        for _ in range(6):  # one episode
            before = env.hyperparameters
            action = teacher_action(env, target, hold=())
            assert np.all(np.abs(action) <= 1.0)
            _, _, _, _, info = env.step(action.astype(np.float32))
            after = env.hyperparameters
            trace.append(after)
            if info["rolled_back"]:
                continue  # a failed run: back to the last good config
            for key in ("batch_size", "learning_rate", "num_layers", "epochs"):
                b, a, t = getattr(before, key), getattr(after, key), getattr(target, key)
                slack = 1e-6 * abs(t)  # the env takes float32 actions
                assert min(b, t) - slack <= a <= max(b, t) + slack, (name, key, b, a, t)
        assert trace[-1] != trace[0]


def test_holding_the_learning_rate_leaves_it_to_the_coupling(env: PrometheusReplayEnv) -> None:
    env.reset(seed=0, options={"workload": "mnist-lenet", "start": 0})
    target = oracle_configs(env.profiles[1:], env.constraints)["mnist-lenet"]
    action = teacher_action(env, target, hold=("learning_rate",))
    assert action[1] == 0.0 and action[0] != 0.0


def test_imitate_exports_a_policy_that_ci_can_load(tmp_path: Path) -> None:
    out = tmp_path / "dagger-s3"
    cache = tmp_path / "oracles.json"
    command = [
        sys.executable, str(REPO / "benchmarks" / "train" / "imitate.py"),
        "--seed", "3", "--export", str(out), "--iterations", "2", "--episodes", "6",
        "--epochs", "2", "--oracle-cache", str(cache),
        "--set", "env.config.randomized_profiles=0",
        "--set", "env.config.episode_length=4",
        "--set", "env.config.workloads=[cifar10-resnet18, mnist-lenet, imdb-lstm]",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["teacher_workloads"] == 3
    assert [it["states"] for it in report["iterations"]] == [24, 48]
    policy = LocalPolicy.load(out)
    action = policy.act(np.zeros(len(policy.observation_names), dtype=np.float32))
    assert action.shape == (4,) and np.all(np.abs(action) <= 1.0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["algorithm"] == "dagger-oracle"
    assert manifest["source"]["hold"] == ["learning_rate"]
    # the oracle cache is reused when the env and the oracle's configs match
    assert set(json.loads(cache.read_text())["oracles"]) == {
        "cifar10-resnet18", "mnist-lenet", "imdb-lstm"
    }  # fmt: skip
    cached = json.loads(cache.read_text())
    del cached["oracles"]["imdb-lstm"]  # a cache hit shows in the number of teachers
    cache.write_text(json.dumps(cached))
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(again.stdout.strip().splitlines()[-1])["teacher_workloads"] == 2
