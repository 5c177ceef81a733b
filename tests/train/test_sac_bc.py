"""SAC with the teacher's behaviour-cloning term (jpo/train/sac_bc.py) inside RLlib."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml

from jpo.errors import ConfigError
from jpo.train.sac_bc import TEACHER_ACTION, TeacherActionsToBatch, keep_infos_in_samples
from jpo.train.trainer import build_sac_config, load_train_config

REPO = Path(__file__).resolve().parents[2]


def _config(
    tmp_path: Path,
    *,
    teacher: bool,
    bc_weight: float,
    iterations: int = 3,
    remote: bool = False,
) -> Path:
    resources: dict[str, object] = {
        "ray_num_cpus": 2,
        "object_store_memory_mb": 200,
        "torch_threads": 1,
    }
    if remote:  # the shape of a KubeRay run: env runners and a learner as Ray actors
        resources |= {"ray_num_cpus": 3, "num_env_runners": 1, "num_learners": 1}
    cfg = {
        "seed": 2,
        "env": {
            "id": "jpo/PrometheusReplay-v0",
            "register_module": "jpo.sim",
            "config": {
                "workloads": ["cifar10-resnet18", "mnist-lenet", "imdb-lstm"],
                "episode_length": 4,
                "step_info": False,
                "teacher": teacher,
                "teacher_cache": str(tmp_path / "oracles.json"),
            },
        },
        "model": {"fcnet_hiddens": [16, 16]},
        "sac": {
            "train_batch_size_per_learner": 32,
            "num_steps_sampled_before_learning_starts": 50,
            "replay_buffer": {"type": "EpisodeReplayBuffer", "capacity": 2000},
            "bc_weight": bc_weight,
        },
        "resources": resources,
        "storage": {"path": str(tmp_path / "store"), "checkpoint_every": 10, "keep": 1},
        "stop": {"iterations": iterations},
        "reporting": {"min_sample_timesteps_per_iteration": 100, "progress_bar": False},
    }
    path = tmp_path / "bc.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_teacher_actions_line_up_with_observations() -> None:
    """In RLlib's own learner pipeline, row i of the column belongs to observation i."""
    from ray.rllib.algorithms.sac import SACConfig
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    obs_space = gym.spaces.Box(-100.0, 100.0, (3,), np.float32)
    act_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    config = (
        SACConfig()
        .environment(observation_space=obs_space, action_space=act_space)
        .learners(learner_connector=lambda _o, _a: TeacherActionsToBatch())
    )
    module = config.get_rl_module_spec(spaces={"default_policy": (obs_space, act_space)}).build()
    pipeline = config.build_learner_connector(obs_space, act_space)

    def episode(start: int, n: int, id_: str) -> SingleAgentEpisode:
        stamps = range(start, start + n + 1)
        return SingleAgentEpisode(
            id_=id_,
            observations=[np.array([t, 0.0, 0.0], np.float32) for t in stamps],
            infos=[{TEACHER_ACTION: np.array([t, -t], np.float32)} for t in stamps],
            actions=[act_space.sample() for _ in range(n)],
            rewards=[0.0] * n,
            len_lookback_buffer=0,
            observation_space=obs_space,
            action_space=act_space,
        )

    # one episode sampled twice ("a"), as replay sampling does
    episodes = [episode(0, 1, "a"), episode(10, 1, "b"), episode(20, 1, "a"), episode(30, 2, "c")]
    batch = pipeline(rl_module=module, batch={}, episodes=episodes, explore=False, shared_data={})
    batch = batch.get("default_policy", batch)
    obs = np.asarray(batch["obs"])[:, 0]
    teacher = np.asarray(batch[TEACHER_ACTION])
    assert obs.tolist() == [0.0, 10.0, 20.0, 30.0, 31.0]
    np.testing.assert_array_equal(teacher[:, 0], obs)
    np.testing.assert_array_equal(teacher[:, 1], -obs)


def test_missing_teacher_info_gives_nan_rows() -> None:
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    act_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    ep = SingleAgentEpisode(
        observations=[np.zeros(3, np.float32)] * 2,
        infos=[{}, {}],
        actions=[np.zeros(2, np.float32)],
        rewards=[0.0],
        len_lookback_buffer=0,
        observation_space=gym.spaces.Box(-1.0, 1.0, (3,), np.float32),
        action_space=act_space,
    )
    batch = TeacherActionsToBatch()(rl_module=None, batch={}, episodes=[ep])
    (rows,) = batch[TEACHER_ACTION].values()
    assert np.isnan(np.asarray(rows)).all()


def test_sampling_keeps_infos() -> None:
    calls: list[dict[str, object]] = []

    class Buffer:
        def sample(self, *args: object, **kwargs: object) -> str:
            calls.append(kwargs)
            return "episodes"

    buffer = Buffer()
    keep_infos_in_samples(buffer)
    keep_infos_in_samples(buffer)  # idempotent: wrapped once
    assert buffer.sample(num_items=4) == "episodes"
    assert calls == [{"num_items": 4, "include_infos": True}]


def test_bc_weight_without_the_teacher_is_a_config_error(tmp_path: Path) -> None:
    cfg = load_train_config(_config(tmp_path, teacher=False, bc_weight=1.0))
    with pytest.raises(ConfigError, match=r"env\.config\.teacher: true"):
        build_sac_config(cfg, num_learners=0, num_gpus_per_learner=0.0)


@pytest.mark.slow
@pytest.mark.parametrize("remote", [False, True], ids=["in-driver", "remote-runner-and-learner"])
def test_rllib_sac_trains_with_the_bc_term(tmp_path: Path, remote: bool) -> None:
    """A tiny real run: the BC loss is computed from the teacher's actions and logged.

    Remote: the teacher's actions travel in infos from an env-runner actor to the driver's
    replay buffer, and in sampled episodes to a learner actor, as on a KubeRay cluster.
    """
    config = _config(tmp_path, teacher=True, bc_weight=1.0, remote=remote)
    export = str(tmp_path / "policy")
    proc = subprocess.run(
        [sys.executable, "-m", "jpo.train", "--config", str(config), "--export", export],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [
        json.loads(x) for x in (tmp_path / "store" / "progress.jsonl").read_text().split("\n") if x
    ]
    losses = [r["learner/bc_loss"] for r in rows if "learner/bc_loss" in r]
    assert losses and all(np.isfinite(losses)) and losses[-1] > 0.0
    assert json.loads((tmp_path / "oracles.json").read_text())["oracles"]  # the teacher ran
    source = json.loads((tmp_path / "policy" / "manifest.json").read_text())["source"]
    assert source["bc_weight"] == 1.0 and source["teacher_hold"] == ["learning_rate", "epochs"]
