"""jpo/train/sac_fast.py computes what RLlib's own SAC steps compute, step by step."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

from jpo.train.sac_bc import TEACHER_ACTION, TeacherActionsToBatch
from jpo.train.sac_fast import (
    FAST_PATH_KEYS,
    FastSAC,
    FastSACTorchLearner,
    _matching_tensors,
    gather_transitions,
    polyak_update,
)
from jpo.train.trainer import build_sac_config, load_train_config

DEFAULT_POLICY = "default_policy"
OBS = gym.spaces.Box(-100.0, 100.0, (3,), np.float32)
ACT = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def _episode(  # type: ignore[no-untyped-def]
    id_: str,
    start: int,
    n: int,
    *,
    done: bool,
    terminated: bool,
    rng: np.random.Generator,
    t_started: int = 0,
):
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    stamps = range(start, start + n + 1)
    infos: list[dict[str, object]] = [
        {TEACHER_ACTION: np.array([t, -t], np.float32)} if t % 3 else {} for t in stamps
    ]
    return SingleAgentEpisode(
        id_=id_,
        observations=[np.array([t, t * 0.5, -t], np.float32) for t in stamps],
        infos=infos,
        actions=[rng.uniform(-1, 1, 2).astype(np.float32) for _ in range(n)],
        rewards=[float(rng.normal()) for _ in range(n)],
        terminated=done and terminated,
        truncated=done and not terminated,
        len_lookback_buffer=0,
        t_started=t_started,
        observation_space=OBS,
        action_space=ACT,
    )


def _filled_buffer(capacity: int = 1000):  # type: ignore[no-untyped-def]
    """A uniform buffer with finished (terminated/truncated) episodes and one still running."""
    from ray.rllib.utils.replay_buffers.episode_replay_buffer import EpisodeReplayBuffer

    rng = np.random.default_rng(0)
    buffer = EpisodeReplayBuffer(capacity=capacity)
    for i in range(12):
        buffer.add(_episode(f"e{i}", 10 * i, 4, done=True, terminated=i % 2 == 0, rng=rng))
    buffer.add(_episode("run", 500, 2, done=False, terminated=False, rng=rng))
    return buffer


def _rllib_batch(buffer, num_items: int, teacher: bool) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """RLlib's own path: EpisodeReplayBuffer.sample, then SAC's learner connector."""
    from ray.rllib.algorithms.sac import SACConfig

    config = SACConfig().environment(observation_space=OBS, action_space=ACT)
    if teacher:
        config = config.learners(learner_connector=lambda _o, _a: TeacherActionsToBatch())
    module = config.get_rl_module_spec(spaces={"default_policy": (OBS, ACT)}).build()
    pipeline = config.build_learner_connector(OBS, ACT)
    episodes = buffer.sample(
        num_items=num_items,
        n_step=1,
        batch_length_T=0,
        lookback=0,
        min_batch_length_T=0,
        gamma=0.9,
        beta=None,
        include_infos=teacher,
        sample_episodes=True,
    )
    batch = pipeline(rl_module=module, batch={}, episodes=episodes, shared_data={})
    return {k: np.asarray(v) for k, v in batch.get("default_policy", batch).items()}


@pytest.mark.parametrize("teacher", [False, True])
def test_gathered_batch_is_rllibs_batch(teacher: bool) -> None:
    """Same generator state: the same transitions, columns, dtypes and shapes as RLlib's."""
    buffer = _filled_buffer()
    state = copy.deepcopy(buffer.rng.bit_generator.state)
    expected = _rllib_batch(buffer, 200, teacher)
    after_rllib = copy.deepcopy(buffer.rng.bit_generator.state)
    buffer.rng.bit_generator.state = state
    got = gather_transitions(buffer, 200, with_teacher=teacher)
    assert buffer.rng.bit_generator.state == after_rllib  # one draw per item, as RLlib
    assert sorted(got) == sorted(expected)
    for key, want in expected.items():
        assert got[key].dtype == want.dtype, key
        np.testing.assert_array_equal(got[key], want, err_msg=key)
    # the sample covers what the check is about: both flags, the running episode, no teacher
    assert got["terminateds"].any() and got["truncateds"].any()
    assert (got["obs"][:, 0] >= 500).any()
    if teacher:
        assert np.isnan(got[TEACHER_ACTION]).any() and not np.isnan(got[TEACHER_ACTION]).all()


def test_gather_follows_growing_and_evicted_episodes() -> None:
    """The per-episode cache sees an episode grow and old episodes leave the buffer."""
    buffer = _filled_buffer(capacity=30)  # 12 x 4 + 2 steps: the oldest were evicted
    rng = np.random.default_rng(1)
    gather_transitions(buffer, 64)
    running = _episode("run", 502, 3, done=True, terminated=True, rng=rng, t_started=2)
    buffer.add(running)  # concatenated onto the running episode, which now ends
    state = copy.deepcopy(buffer.rng.bit_generator.state)
    expected = _rllib_batch(buffer, 300, False)
    buffer.rng.bit_generator.state = state
    got = gather_transitions(buffer, 300)
    for key, want in expected.items():
        np.testing.assert_array_equal(got[key], want, err_msg=key)
    assert got["obs"][:, 0].min() >= 10 * 5  # evicted episodes are never drawn


def test_polyak_update_is_rllibs_bit_for_bit() -> None:
    from ray.rllib.utils.torch_utils import update_target_network

    torch.manual_seed(0)
    main = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    target_a = copy.deepcopy(main)
    for p in main.parameters():
        p.data += torch.randn_like(p)
    target_b = copy.deepcopy(target_a)
    for _ in range(5):
        update_target_network(main_net=main, target_net=target_a, tau=0.005)
        polyak_update(main, target_b, 0.005)
    for a, b in zip(target_a.state_dict().values(), target_b.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def _tiny_config(tmp_path: Path, fast: bool):  # type: ignore[no-untyped-def]
    import yaml

    path = tmp_path / "fast.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "seed": 3,
                "env": {
                    "id": "jpo/PrometheusReplay-v0",
                    "register_module": "jpo.sim",
                    "config": {
                        "workloads": ["cifar10-resnet18", "mnist-lenet"],
                        "episode_length": 4,
                        "step_info": False,
                    },
                },
                "model": {"fcnet_hiddens": [16, 16]},
                "sac": {
                    "train_batch_size_per_learner": 16,
                    "num_steps_sampled_before_learning_starts": 20,
                    "replay_buffer": {"type": "EpisodeReplayBuffer", "capacity": 1000},
                    "fast_paths": fast,
                },
                "resources": {"ray_num_cpus": 1, "object_store_memory_mb": 100, "torch_threads": 1},
                "reporting": {"min_sample_timesteps_per_iteration": 40, "progress_bar": False},
            }
        )
    )
    return load_train_config(path)


def test_fast_paths_key_switches_every_path(tmp_path: Path) -> None:
    for fast in (True, False):
        config = build_sac_config(
            _tiny_config(tmp_path, fast), num_learners=0, num_gpus_per_learner=0.0
        )
        assert config.algo_class is FastSAC
        assert issubclass(config.learner_class, FastSACTorchLearner)
        assert {k: config.learner_config_dict[k] for k in FAST_PATH_KEYS} == dict.fromkeys(
            FAST_PATH_KEYS, fast
        )


def _learner(fast: bool) -> Any:
    """A driver-local SAC learner (jpo's) for the toy spaces, no Ray needed."""
    from ray.rllib.algorithms.sac import SACConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    torch.manual_seed(0)
    config = (
        SACConfig()
        .environment(observation_space=OBS, action_space=ACT)
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[16, 16]))
        .training(train_batch_size_per_learner=16, gamma=0.9, tau=0.05)
        .learners(
            learner_class=FastSACTorchLearner,
            learner_config_dict=dict.fromkeys(FAST_PATH_KEYS, fast),
        )
    )
    return config.build_learner(spaces={DEFAULT_POLICY: (OBS, ACT)})


def _module_state(learner: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in learner.module[DEFAULT_POLICY].state_dict().items()}


def test_fast_and_rllib_paths_make_the_same_updates() -> None:
    """Same start and buffer: RLlib's sample + connector + learner, and the fast ones, agree.

    (Whole RLlib runs cannot be compared: its replay buffer draws from an unseeded
    generator.) Five updates each, Polyak averaging and Adam included.
    """
    buffer = _filled_buffer()
    rng_state = copy.deepcopy(buffer.rng.bit_generator.state)
    timesteps = {"num_env_steps_sampled_lifetime": 10_000}
    states = []
    for fast in (False, True):
        learner = _learner(fast)
        start = _module_state(learner)
        buffer.rng.bit_generator.state = copy.deepcopy(rng_state)
        for _ in range(5):
            if fast:
                batch = MultiAgentBatch(
                    {DEFAULT_POLICY: SampleBatch(gather_transitions(buffer, 16))}, 16
                )
                learner.update(batch=batch, timesteps=timesteps)
            else:
                episodes = buffer.sample(
                    num_items=16,
                    n_step=1,
                    batch_length_T=0,
                    lookback=0,
                    min_batch_length_T=0,
                    gamma=0.9,
                    beta=None,
                    sample_episodes=True,
                )
                learner.update(episodes=episodes, timesteps=timesteps)
        states.append(_module_state(learner))
        if fast:  # the learner used the fast paths, and they moved every kind of weight
            assert all(g["foreach"] for o in learner._optimizer_parameters for g in o.param_groups)
            assert any(not torch.equal(states[1][k], start[k]) for k in start if "target" in k)
    assert states[0].keys() == states[1].keys()
    for key, want in states[0].items():  # Adam's foreach kernel may round differently
        torch.testing.assert_close(states[1][key], want, rtol=1e-5, atol=1e-6, msg=key)


def test_weight_copy_gives_the_env_runner_the_learners_actor() -> None:
    """_matching_tensors pairs every tensor of the inference-only module with the learner's."""
    learner = _learner(True)
    runner_module = learner.config.get_rl_module_spec(
        spaces={DEFAULT_POLICY: (OBS, ACT)}, inference_only=True
    ).build()
    pairs = _matching_tensors(runner_module, learner.module[DEFAULT_POLICY])
    assert pairs is not None
    targets, sources = pairs
    assert len(targets) == len(runner_module.state_dict())
    with torch.no_grad():
        torch._foreach_copy_(targets, sources)
    actor = _module_state(learner)
    for key, value in runner_module.state_dict().items():
        assert torch.equal(value, actor[key]), key
