"""RLlib SAC with its per-transition and per-tensor Python work done in bulk.

RLlib's SAC (new API stack) spends most of an update on Python bookkeeping, not on the
tensor math (benchmarks/train/RESULTS.md §7 and §11). This module keeps RLlib's buffer,
losses, learner, metrics and checkpoints and replaces five steps by ones that compute the
same thing faster; each is one key of the algorithm config's ``learner_config_dict``
(:data:`FAST_PATH_KEYS`, all on with ``sac.fast_paths: true`` in configs/train.yaml):

- ``direct_sampling`` (:class:`FastSAC`): RLlib samples the replayed batch as one new
  ``SingleAgentEpisode`` per transition and its learner connector turns them back into
  columns. :func:`gather_transitions` draws the buffer's indices with the buffer's own
  generator, call for call as ``EpisodeReplayBuffer.sample`` does, and reads the columns
  from arrays cached per episode: the same transitions, the same columns.
- ``fast_weight_sync`` (:class:`FastSAC`): with the env runner and the learner in one
  process, RLlib copies the actor's weights through a state dict and ``ray.put`` after
  every update; here they are copied tensor to tensor (``torch._foreach_copy_``).
- ``fast_target_update`` (:class:`FastSACTorchLearner`): Polyak averaging of the target
  critics with ``torch._foreach_*`` instead of building and loading state dicts
  (``tau * main + (1 - tau) * target``, the same float operations).
- ``fast_finite_check``: one finiteness test over all gradients per update instead of
  one per tensor; if any gradient is not finite, RLlib's own per-tensor handling runs.
- ``foreach_adam``: the Adam optimizers step all their tensors at once (``foreach``),
  the same update rule as RLlib's per-tensor loop.

The batch path applies to the uniform ``EpisodeReplayBuffer`` with an integer ``n_step``
of 1 and a stateless single-agent module (configs/train.yaml's recipe); anything else
runs RLlib's own ``training_step``. tests/train/test_sac_fast.py checks each step against
RLlib's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.dqn.dqn_learner import DQNLearner
from ray.rllib.algorithms.sac import SAC
from ray.rllib.algorithms.sac.torch.sac_torch_learner import SACTorchLearner
from ray.rllib.core import ALL_MODULES, DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import TargetNetworkAPI
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LAST_TARGET_UPDATE_TS,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_AGENT_STEPS_SAMPLED_LIFETIME,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_TARGET_UPDATES,
    REPLAY_BUFFER_ADD_DATA_TIMER,
    REPLAY_BUFFER_RESULTS,
    REPLAY_BUFFER_SAMPLE_TIMER,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TD_ERROR_KEY,
    TIMERS,
)
from ray.rllib.utils.replay_buffers.episode_replay_buffer import EpisodeReplayBuffer

from jpo.sim.teacher import TEACHER_ACTION

__all__ = [
    "BC_WEIGHT_KEY",
    "FAST_PATH_KEYS",
    "FastSAC",
    "FastSACTorchLearner",
    "direct_sampling_applies",
    "gather_transitions",
]

FAST_PATH_KEYS = (
    "direct_sampling",
    "fast_weight_sync",
    "fast_target_update",
    "fast_finite_check",
    "foreach_adam",
)
"""Keys of the switches in the algorithm config's ``learner_config_dict``."""
BC_WEIGHT_KEY = "bc_weight"
"""Key of the BC weight (jpo.train.sac_bc) in the config's ``learner_config_dict``."""


@dataclass(frozen=True)
class _EpisodeArrays:
    """One stored episode's columns as arrays, valid while its length and done flag hold."""

    episode: Any
    length: int
    done: bool
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    teacher: np.ndarray | None


def _episode_arrays(episode: Any, with_teacher: bool) -> _EpisodeArrays:
    """Read an episode's observations, actions, rewards (and teacher actions) once."""
    n = len(episode)
    teacher = None
    if with_teacher:
        k = int(np.prod(episode.action_space.shape))
        missing = np.full(k, np.nan, dtype=np.float32)
        teacher = np.stack(
            [
                np.asarray(info.get(TEACHER_ACTION, missing), dtype=np.float32)
                for info in episode.get_infos(slice(0, n))
            ]
        )
    return _EpisodeArrays(
        episode=episode,
        length=n,
        done=bool(episode.is_done),
        observations=np.asarray(episode.get_observations(slice(0, n + 1))),
        actions=np.asarray(episode.get_actions(slice(0, n))),
        rewards=np.asarray(episode.get_rewards(slice(0, n)), dtype=np.float64),
        teacher=teacher,
    )


class _ArrayCache:
    """Per-episode arrays of a buffer, rebuilt when an episode grows or is replaced."""

    def __init__(self) -> None:
        self._by_index: dict[int, _EpisodeArrays] = {}

    def get(self, index: int, episode: Any, with_teacher: bool) -> _EpisodeArrays:
        """The arrays of ``episode`` (global buffer index ``index``)."""
        hit = self._by_index.get(index)
        if (
            hit is None
            or hit.episode is not episode
            or hit.length != len(episode)
            or hit.done != episode.is_done
            or (with_teacher and hit.teacher is None)
        ):
            hit = _episode_arrays(episode, with_teacher)
            self._by_index[index] = hit
        return hit

    def prune(self, first_kept: int, kept: int) -> None:
        """Forget evicted episodes (indices below ``first_kept``) once they pile up."""
        if len(self._by_index) > 2 * kept + 64:
            self._by_index = {i: a for i, a in self._by_index.items() if i >= first_kept}


def gather_transitions(
    buffer: EpisodeReplayBuffer,
    num_items: int,
    *,
    with_teacher: bool = False,
    cache: _ArrayCache | None = None,
) -> dict[str, np.ndarray]:
    """Draw ``num_items`` transitions uniformly (with replacement) and return their columns.

    The draws are ``EpisodeReplayBuffer._sample_episodes``'s with ``n_step=1``: one
    ``buffer.rng.integers(len(buffer._indices))`` per item, in order, so for the same
    generator state the same transitions come out, as arrays instead of episodes.
    """
    cache = cache if cache is not None else _ArrayCache()
    indices = buffer._indices
    evicted = buffer._num_episodes_evicted
    rng = buffer.rng
    n = len(indices)
    obs, next_obs, actions, rewards, terminated, truncated, teacher = ([] for _ in range(7))
    for _ in range(num_items):
        eps_index, ts = indices[rng.integers(n)]
        episode = buffer.episodes[eps_index - evicted]
        arrays = cache.get(eps_index, episode, with_teacher)
        last = ts + 1 == arrays.length
        obs.append(arrays.observations[ts])
        next_obs.append(arrays.observations[ts + 1])
        actions.append(arrays.actions[ts])
        rewards.append(arrays.rewards[ts])
        terminated.append(last and bool(episode.is_terminated))
        truncated.append(last and bool(episode.is_truncated))
        if arrays.teacher is not None:
            teacher.append(arrays.teacher[ts])
    buffer.sampled_timesteps += num_items
    cache.prune(evicted, buffer.get_num_episodes())
    columns = {
        Columns.OBS: np.stack(obs),
        Columns.NEXT_OBS: np.stack(next_obs),
        Columns.ACTIONS: np.stack(actions),
        Columns.REWARDS: np.asarray(rewards, dtype=np.float32),
        Columns.TERMINATEDS: np.asarray(terminated, dtype=bool),
        Columns.TRUNCATEDS: np.asarray(truncated, dtype=bool),
        "n_step": np.ones(num_items, dtype=np.int64),
        "weights": np.ones(num_items, dtype=np.float32),
    }
    if with_teacher:
        columns[TEACHER_ACTION] = np.stack(teacher)
    return columns


def direct_sampling_applies(config: Any, module_is_stateful: bool) -> bool:
    """Whether :class:`FastSAC`'s batch path reproduces RLlib's for this config."""
    return bool(
        config.learner_config_dict.get("direct_sampling", False)
        and config.replay_buffer_config.get("type") == "EpisodeReplayBuffer"
        and not isinstance(config.n_step, tuple | list)
        and config.n_step == 1
        and not module_is_stateful
        and not config.is_multi_agent
    )


class FastSAC(SAC):
    """RLlib's SAC; its train batches come from :func:`gather_transitions` when it applies."""

    _direct_cache: _ArrayCache | None = None
    _weight_pairs: tuple[Any, list[torch.Tensor], list[torch.Tensor]] | None = None

    def training_step(self) -> None:
        """One env sample, one buffer add, n updates and a weight sync, as RLlib's SAC."""
        algo: Any = self  # RLlib types its parts Optional
        if not direct_sampling_applies(algo.config, bool(algo._module_is_stateful)):
            return super().training_step()
        from ray.rllib.algorithms.dqn.dqn import calculate_rr_weights

        store_weight, train_weight = (int(w) for w in calculate_rr_weights(algo.config))
        for _ in range(store_weight):
            algo._sample_and_store()
        current = algo.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)
        if current < algo.config.num_steps_sampled_before_learning_starts:
            return None
        if algo._direct_cache is None:
            algo._direct_cache = _ArrayCache()
        with_teacher = float(algo.config.learner_config_dict.get(BC_WEIGHT_KEY, 0.0)) > 0
        learner_results: list[dict[str, Any]] = []
        for _ in range(train_weight):
            with algo.metrics.log_time((TIMERS, REPLAY_BUFFER_SAMPLE_TIMER)):
                columns = gather_transitions(
                    algo.local_replay_buffer,
                    algo.config.total_train_batch_size,
                    with_teacher=with_teacher,
                    cache=algo._direct_cache,
                )
                algo.metrics.aggregate(
                    [algo.local_replay_buffer.get_metrics()], key=REPLAY_BUFFER_RESULTS
                )
            with algo.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
                learner_results = algo._update(columns)
        with algo.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            if not algo._copy_weights_locally():
                algo.env_runner_group.sync_weights(
                    from_worker_or_learner_group=algo.learner_group,
                    policies=set(learner_results[0].keys()) - {ALL_MODULES},
                    global_vars=None,
                    inference_only=True,
                )
        return None

    def _copy_weights_locally(self) -> bool:
        """Copy the learner's actor weights into the local env runner's module, in place.

        Applies only with no remote env runners and a learner in this process (the
        shipped 2-core setup); returns False otherwise, and RLlib's sync runs instead.
        """
        algo: Any = self  # RLlib types its parts Optional
        if not algo.config.learner_config_dict.get("fast_weight_sync", False):
            return False
        group, learners = algo.env_runner_group, algo.learner_group
        if group is None or group.num_remote_env_runners() > 0 or not learners.is_local:
            return False
        runner = group.local_env_runner
        learner = learners._learner
        if runner is None or learner is None:
            return False
        if algo._weight_pairs is None or algo._weight_pairs[0] is not runner.module:
            pairs = _matching_tensors(runner.module, learner.module[DEFAULT_MODULE_ID])
            if pairs is None:
                return False
            algo._weight_pairs = (runner.module, *pairs)
        _, targets, sources = algo._weight_pairs
        with torch.no_grad():
            torch._foreach_copy_(targets, sources)
        runner._weights_seq_no = learner._weights_seq_no
        return True

    def _sample_and_store(self) -> None:
        """Sample the env runners once and add the episodes to the buffer (RLlib's step)."""
        algo: Any = self  # RLlib types its parts Optional
        with algo.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            episodes, env_runner_results = synchronous_parallel_sample(  # type: ignore[misc]
                worker_set=algo.env_runner_group,
                concat=True,
                sample_timeout_s=algo.config.sample_timeout_s,
                _uses_new_env_runners=True,
                _return_metrics=True,
            )
        algo.metrics.aggregate(env_runner_results, key=ENV_RUNNER_RESULTS)
        with algo.metrics.log_time((TIMERS, REPLAY_BUFFER_ADD_DATA_TIMER)):
            algo.local_replay_buffer.add(episodes)

    def _update(self, columns: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        """One learner update on the gathered columns; TD errors are dropped (uniform replay)."""
        algo: Any = self  # RLlib types its parts Optional
        count = len(columns[Columns.OBS])
        batch = MultiAgentBatch(
            {DEFAULT_MODULE_ID: SampleBatch(columns)},  # type: ignore[no-untyped-call]
            env_steps=count,
        )
        results: list[dict[str, Any]] = algo.learner_group.update(
            batch=batch,
            timesteps={
                NUM_ENV_STEPS_SAMPLED_LIFETIME: algo.metrics.peek(
                    (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME)
                ),
                NUM_AGENT_STEPS_SAMPLED_LIFETIME: algo.metrics.peek(
                    (ENV_RUNNER_RESULTS, NUM_AGENT_STEPS_SAMPLED_LIFETIME)
                ),
            },
        )
        for res in results:
            for module_results in res.values():
                if isinstance(module_results, dict) and TD_ERROR_KEY in module_results:
                    module_results.pop(TD_ERROR_KEY)
        algo.metrics.aggregate(results, key=LEARNER_RESULTS)
        return results


def _matching_tensors(
    runner_module: Any, learner_module: Any
) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
    """Pair each tensor of the env runner's (inference-only) module with the learner's."""
    runner_state = runner_module.state_dict(keep_vars=True)
    learner_state = learner_module.state_dict(keep_vars=True)
    if not runner_state or any(
        k not in learner_state or learner_state[k].shape != v.shape for k, v in runner_state.items()
    ):
        return None
    keys = list(runner_state)
    return [runner_state[k].data for k in keys], [learner_state[k].data for k in keys]


def polyak_update(main_net: torch.nn.Module, target_net: torch.nn.Module, tau: float) -> None:
    """``target = tau * main + (1 - tau) * target`` for every tensor, as RLlib computes it."""
    main_state = main_net.state_dict(keep_vars=True)
    target_state = target_net.state_dict(keep_vars=True)
    targets = [v.data for v in target_state.values()]
    mains = [main_state[k].data for k in target_state]
    with torch.no_grad():
        scaled = torch._foreach_mul(mains, tau)
        torch._foreach_mul_(targets, 1 - tau)
        torch._foreach_add_(targets, scaled)


class FastSACTorchLearner(SACTorchLearner):
    """RLlib's SAC learner with Polyak averaging, the gradient check and Adam in bulk."""

    def configure_optimizers_for_module(self, module_id: Any, config: Any = None) -> None:
        """RLlib's optimizers; with ``foreach_adam`` they step all tensors at once."""
        super().configure_optimizers_for_module(module_id, config)
        if not self.config.learner_config_dict.get("foreach_adam", False):
            return
        for name in self._module_optimizers.get(module_id, []):
            for group in self.get_optimizer(module_id, name).param_groups:
                group["foreach"] = True

    def apply_gradients(self, gradients_dict: dict[Any, torch.Tensor]) -> None:
        """Step every optimizer; RLlib's own per-tensor path when a gradient is not finite."""
        if (
            not self.config.learner_config_dict.get("fast_finite_check", False)
            or self.config.torch_skip_nan_gradients
            or self._grad_scalers is not None
            or self._lr_scheduler_classes is not None
        ):
            return super().apply_gradients(gradients_dict)
        grads = list(gradients_dict.values())
        if grads and not bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()):
            return super().apply_gradients(gradients_dict)  # zeroes them and warns
        for pid, grad in gradients_dict.items():
            self._params[pid].grad = grad
        for module_id, names in self._module_optimizers.items():
            for name in names:
                self.get_optimizer(module_id, name).step()
        return None

    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        """RLlib's target-network update (DQNLearner's), with :func:`polyak_update`."""
        if not self.config.learner_config_dict.get("fast_target_update", False):
            return super().after_gradient_based_update(timesteps=timesteps)
        super(DQNLearner, self).after_gradient_based_update(timesteps=timesteps)
        timestep = timesteps.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0)
        for module_id, module in self.module._rl_modules.items():
            config: Any = self.config.get_config_for_module(module_id)
            unwrapped = module.unwrapped()
            if timestep - self.last_update_ts_by_mid[
                module_id
            ] < config.target_network_update_freq or not isinstance(unwrapped, TargetNetworkAPI):
                continue
            for main_net, target_net in unwrapped.get_target_network_pairs():
                polyak_update(main_net, target_net, config.tau)
            self.metrics.log_value((module_id, NUM_TARGET_UPDATES), 1, reduce="lifetime_sum")
            self.last_update_ts_by_mid[module_id] = timestep
            self.metrics.log_value((module_id, LAST_TARGET_UPDATE_TS), timestep, reduce="max")
        return None
