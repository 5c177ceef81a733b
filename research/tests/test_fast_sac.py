"""The research trainer (research/train/fast_sac.py) and the recipe scorer's labels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jpo.policy.artifact import LocalPolicy

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "research" / "evaluate"))

from diagnose import recipe_label  # noqa: E402


def test_fast_sac_exports_a_policy_that_ci_can_load(tmp_path: Path) -> None:
    """A short run writes an artifact (and a snapshot) with the RLlib export's manifest."""
    out = tmp_path / "tiny-s3"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "research" / "train" / "fast_sac.py"),
            "--steps", "96",
            "--seed", "3",
            "--export", str(out),
            "--export-every", "48",
            "--set", "env.config.randomized_profiles=0",
        "--set", f"env.config.teacher_cache={tmp_path / 'env-oracles.json'}",
            "--set", f"env.config.teacher_cache={tmp_path / 'env-oracles.json'}",
            "--set", "env.config.episode_length=4",
            "--set", "sac.num_steps_sampled_before_learning_starts=32",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["env_steps"] == 96 and report["updates"] == 64
    assert report["overrides"]["env.config.randomized_profiles"] == 0
    policy = LocalPolicy.load(out)
    assert policy.action_names == ("batch_size", "learning_rate", "num_layers", "epochs")
    assert policy.learning_rate_follows_batch == 1.0
    action = policy.act(np.zeros(len(policy.observation_names), dtype=np.float32))
    assert action.shape == (4,) and np.all(np.abs(action) <= 1.0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["algorithm"] == "minimal-sac"
    assert manifest["training_data"]["env_steps"] == 96
    assert LocalPolicy.load(tmp_path / "tiny-s3-48").version == policy.version


def test_recipe_label_groups_seeds_and_snapshots() -> None:
    assert recipe_label("/tmp/fast/v3-s0") == "v3"
    assert recipe_label("/tmp/fast/wide-p1000-s12") == "wide-p1000"
    assert recipe_label("/tmp/fast/v3-s2-50k") == "v3@50k"
    assert recipe_label("jpo/data/policy") == "policy"


@pytest.mark.parametrize("hold", ["learning_rate", "learning_rate,epochs"])
def test_behaviour_cloning_pulls_the_actor_towards_the_teacher(tmp_path: Path, hold: str) -> None:
    """With a large BC weight, SAC's actor ends near the oracle teacher's actions.

    configs/train.yaml's env teacher holds learning_rate and epochs: with that hold the
    labels come from the env's infos (no second oracle search), with another from fast_sac.
    """
    import jpo.sim  # noqa: F401
    from jpo.sim.replay_env import PrometheusReplayEnv

    sys.path.insert(0, str(REPO / "research" / "train"))
    from jpo.sim.teacher import oracle_configs, teacher_action

    workloads = ["cifar10-resnet18", "mnist-lenet", "imdb-lstm"]
    runs = {}
    for weight in ("0", "100"):
        out = tmp_path / f"bc{weight}"
        subprocess.run(
            [
                sys.executable, str(REPO / "research" / "train" / "fast_sac.py"),
                "--steps", "600", "--seed", "1", "--export", str(out),
                "--bc-weight", weight, "--bc-hold", hold,
                "--oracle-cache", str(tmp_path / "oracles.json"),
                "--set", "env.config.randomized_profiles=0",
                "--set", f"env.config.teacher_cache={tmp_path / 'env-oracles.json'}",
                "--set", "env.config.episode_length=4",
                "--set", f"env.config.workloads=[{', '.join(workloads)}]",
                "--set", "sac.num_steps_sampled_before_learning_starts=64",
            ],
            cwd=REPO, capture_output=True, text=True, check=True,
        )  # fmt: skip
        runs[weight] = LocalPolicy.load(out)
        assert json.loads((out / "manifest.json").read_text())["source"]["bc_weight"] == float(
            weight
        )
    # fast_sac searched the oracle itself only where the env's labels had another hold
    assert (tmp_path / "oracles.json").exists() == (hold == "learning_rate")
    env = PrometheusReplayEnv(config={"workloads": workloads, "episode_length": 4})
    oracles = oracle_configs(env.profiles, env.constraints)
    errors = {w: 0.0 for w in runs}
    for name in workloads:
        for start in range(4):
            obs, _ = env.reset(seed=start, options={"workload": name, "start": start})
            label = teacher_action(env, oracles[name], hold=tuple(hold.split(",")))
            for weight, policy in runs.items():
                errors[weight] += float(np.sum((policy.act(obs) - label) ** 2))
    assert errors["100"] < 0.5 * errors["0"]
