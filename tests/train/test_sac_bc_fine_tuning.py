"""Fine-tuning terms of jpo/train/sac_bc.py's learner: critic warm-up and the anchor term.

The learner is built in this process (``AlgorithmConfig.build_learner``, no Ray) and fed
small hand-made episodes, as RLlib's replay buffer would hand them over.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from jpo.errors import ConfigError
from jpo.train.sac_bc import (
    ANCHOR_POLICY_KEY,
    ANCHOR_WEIGHT_KEY,
    CRITIC_WARMUP_KEY,
    BCSACTorchLearner,
)

BUNDLED = Path(__file__).resolve().parents[2] / "jpo" / "data" / "policy"


def _learner(obs_dim: int, act_dim: int, hiddens: list[int], extra: dict[str, Any]) -> Any:
    from ray.rllib.algorithms.sac import SACConfig

    obs_space = gym.spaces.Box(-10.0, 10.0, (obs_dim,), np.float32)
    act_space = gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)
    config = (
        SACConfig()
        .environment(observation_space=obs_space, action_space=act_space)
        .learners(learner_class=BCSACTorchLearner, learner_config_dict=extra)
        .rl_module(model_config={"fcnet_hiddens": hiddens})
        .training(train_batch_size_per_learner=8)
        .debugging(seed=0)
    )
    spaces = {"__env__": (obs_space, act_space), "default_policy": (obs_space, act_space)}
    return config.build_learner(env=None, spaces=spaces)


def _episode(rng: np.random.Generator, learner: Any, n: int = 5) -> Any:
    """One finished episode with the columns RLlib's replay buffer adds when sampling."""
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    module = learner.module["default_policy"]
    obs_space, act_space = module.observation_space, module.action_space
    return SingleAgentEpisode(
        observations=[rng.normal(size=obs_space.shape).astype(np.float32) for _ in range(n + 1)],
        actions=[rng.uniform(-1, 1, act_space.shape).astype(np.float32) for _ in range(n)],
        rewards=list(rng.normal(size=n)),
        infos=[{}] * (n + 1),
        extra_model_outputs={
            "n_step": [np.array(1)] * n,
            "weights": [np.array(1.0, np.float32)] * n,
        },
        terminated=True,
        len_lookback_buffer=0,
        observation_space=obs_space,
        action_space=act_space,
    )


def _weights(part: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in part.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_critic_warmup_freezes_the_actor_for_n_updates_only() -> None:
    learner = _learner(3, 2, [8], {CRITIC_WARMUP_KEY: 3})
    module = learner.module["default_policy"]
    rng = np.random.default_rng(0)
    actor0 = _weights(module.pi) + _weights(module.pi_encoder)
    critic0 = _weights(module.qf)
    for update in range(1, 6):
        learner.update(episodes=[_episode(rng, learner), _episode(rng, learner)])
        actor = _weights(module.pi) + _weights(module.pi_encoder)
        assert learner.jpo_updates == update
        # the critics learn from the first update on; the actor only after the warm-up
        assert not _same(critic0, _weights(module.qf))
        assert _same(actor0, actor) == (update <= 3), update


def test_anchor_pulls_towards_the_served_policys_actions() -> None:
    """The anchor's targets are the artifact's squashed means: zero loss for that actor.

    (The artifact's ``act`` post-processes that mean, e.g. the learning rate following the
    batch size, the same way for candidate and served policy.)
    """
    from jpo.policy.artifact import LocalPolicy
    from jpo.policy.export import load_actor_weights

    served = LocalPolicy.load(BUNDLED)
    with np.load(served.path / served.manifest.weights_file) as npz:
        weights = {k: np.asarray(npz[k]) for k in npz.files}
    hiddens = [int(weights[f"l{i}.bias"].shape[0]) for i in range(len(weights) // 2 - 1)]
    learner = _learner(
        len(served.observation_names),
        len(served.action_names),
        hiddens,
        {ANCHOR_WEIGHT_KEY: 1.0, ANCHOR_POLICY_KEY: str(BUNDLED)},
    )
    module = learner.module["default_policy"]
    config = learner.config.get_config_for_module("default_policy")
    n_obs = len(served.observation_names)
    obs = torch.from_numpy(np.random.default_rng(1).normal(size=(16, n_obs)).astype(np.float32))

    def loss() -> float:
        from ray.rllib.core.columns import Columns
        from ray.rllib.core.models.base import ENCODER_OUT

        logits = module.pi(module.pi_encoder({Columns.OBS: obs})[ENCODER_OUT])
        mean = torch.tanh(logits[..., : len(served.action_names)])
        return float(
            learner._anchor_loss("default_policy", config, {Columns.OBS: obs}, mean).detach()
        )

    assert loss() > 1e-3  # a freshly initialized actor acts otherwise
    load_actor_weights(module, weights)
    assert loss() == pytest.approx(0.0, abs=1e-10)


def test_anchor_weight_needs_a_policy(tmp_path: Path) -> None:
    from jpo.train.trainer import TrainConfig, build_sac_config

    cfg = TrainConfig(sac={"anchor_weight": 1.0})
    with pytest.raises(ConfigError, match=r"sac\.anchor_policy"):
        build_sac_config(cfg, num_learners=0, num_gpus_per_learner=0.0)


def test_a_cycle_warms_up_fresh_critics_only_and_anchors_on_the_served_policy() -> None:
    from jpo.policy.artifact import LocalPolicy
    from jpo.train.continuous import ContinuousConfig, _fine_tuning
    from jpo.train.trainer import TrainConfig

    conf = ContinuousConfig(critic_warmup_updates=5, actor_lr=1e-5, anchor_weight=2.0)
    served = LocalPolicy.load(BUNDLED)
    first = _fine_tuning(TrainConfig(), conf, served, fresh=True).sac
    assert (first.critic_warmup_updates, first.actor_lr, first.anchor_weight) == (5, 1e-5, 2.0)
    assert first.anchor_policy == str(served.path)
    resumed = _fine_tuning(TrainConfig(), conf, served, fresh=False).sac
    assert resumed.critic_warmup_updates == 0  # the critics come from the last checkpoint
    nothing_served = _fine_tuning(TrainConfig(), conf, None, fresh=True).sac
    assert nothing_served.anchor_weight == 0.0 and nothing_served.anchor_policy is None
    default = _fine_tuning(TrainConfig(), ContinuousConfig(), served, fresh=True).sac
    assert default.actor_lr == TrainConfig().sac.actor_lr  # actor_lr null: the recipe's


def _actor(module: Any) -> list[torch.Tensor]:
    return _weights(module.pi) + _weights(module.pi_encoder)


@pytest.mark.parametrize("fast_paths", [False, True])
def test_actor_updates_bound_the_actor_after_the_warmup_and_count_per_run(fast_paths: bool) -> None:
    """Warm-up 2, 3 actor updates: the actor moves in updates 3-5 only; critics always.

    A second learner holding the first one's state (a resumed run: the next continuous
    cycle) counts from 0 again: its actor moves in its first 3 updates and then stays.
    """
    from jpo.train.sac_bc import ACTOR_UPDATES_KEY
    from jpo.train.sac_fast import FAST_PATH_KEYS

    extra: dict[str, Any] = {CRITIC_WARMUP_KEY: 2, ACTOR_UPDATES_KEY: 3}
    extra.update(dict.fromkeys(FAST_PATH_KEYS, fast_paths))
    learner = _learner(3, 2, [8], extra)
    module = learner.module["default_policy"]
    rng = np.random.default_rng(0)
    moved = []
    for update in range(1, 9):
        actor, critic = _actor(module), _weights(module.qf)
        learner.update(episodes=[_episode(rng, learner), _episode(rng, learner)])
        assert learner.jpo_updates == update
        assert not _same(critic, _weights(module.qf)), update  # the critics always learn
        moved.append(not _same(actor, _actor(module)))
    assert moved == [False, False, True, True, True, False, False, False]

    resumed = _learner(3, 2, [8], {**extra, CRITIC_WARMUP_KEY: 0})  # later cycles: no warm-up
    resumed.set_state(learner.get_state())
    module2 = resumed.module["default_policy"]
    assert _same(_actor(module), _actor(module2))
    moved = []
    for _ in range(5):
        actor = _actor(module2)
        resumed.update(episodes=[_episode(rng, resumed), _episode(rng, resumed)])
        moved.append(not _same(actor, _actor(module2)))
    assert moved == [True, True, True, False, False]


def test_no_actor_update_bound_is_the_default_and_a_bound_uses_the_jpo_learner() -> None:
    from jpo.train.sac_bc import ACTOR_UPDATES_KEY
    from jpo.train.trainer import SacSection, TrainConfig, build_sac_config

    assert TrainConfig().sac.actor_updates is None
    plain = build_sac_config(TrainConfig(), num_learners=0, num_gpus_per_learner=0.0)
    assert ACTOR_UPDATES_KEY not in plain.learner_config_dict
    cfg = TrainConfig(sac=SacSection(actor_updates=10))
    bounded = build_sac_config(cfg, num_learners=0, num_gpus_per_learner=0.0)
    assert bounded.learner_class is BCSACTorchLearner
    assert bounded.learner_config_dict[ACTOR_UPDATES_KEY] == 10
    with pytest.raises(ValueError, match="actor_updates"):
        SacSection(actor_updates=0)


def test_every_cycle_bounds_its_actor_updates() -> None:
    from jpo.policy.artifact import LocalPolicy
    from jpo.train.continuous import ContinuousConfig, _fine_tuning
    from jpo.train.trainer import TrainConfig

    served = LocalPolicy.load(BUNDLED)
    conf = ContinuousConfig(critic_warmup_updates=300, actor_updates=1)
    first = _fine_tuning(TrainConfig(), conf, served, fresh=True).sac
    resumed = _fine_tuning(TrainConfig(), conf, served, fresh=False).sac
    assert (first.critic_warmup_updates, first.actor_updates) == (300, 1)
    assert (resumed.critic_warmup_updates, resumed.actor_updates) == (0, 1)
    default = _fine_tuning(TrainConfig(), ContinuousConfig(), served, fresh=False).sac
    assert default.actor_updates is None
    with pytest.raises(ValueError, match="actor_updates"):
        ContinuousConfig(actor_updates=0)


def test_the_shipped_cycles_are_bounded_as_section_13_chose() -> None:
    """configs/train.yaml: 100 actor updates per cycle at 5e-5, no warm-up (RESULTS.md §13)."""
    from jpo.policy.artifact import LocalPolicy
    from jpo.train.continuous import _fine_tuning, load_continuous_config
    from jpo.train.trainer import load_train_config

    cfg = load_train_config()
    conf = load_continuous_config(cfg)
    served = LocalPolicy.load(BUNDLED)
    for fresh in (True, False):
        sac = _fine_tuning(cfg, conf, served, fresh=fresh).sac
        assert (sac.critic_warmup_updates, sac.actor_updates, sac.actor_lr) == (0, 100, 5e-5)
        assert sac.anchor_weight == 0.0
