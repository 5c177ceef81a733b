"""SAC with a behaviour-cloning term towards the oracle teacher (RLlib, new API stack).

docs/design/training.md: plain SAC learns the training distribution's
reward and transfers poorly to unseen workloads. A teacher that steps towards each
training profile's oracle configuration transfers well. SAC whose actor loss also pulls
towards that teacher (TD3+BC, Fujimoto & Gu 2021) keeps the transfer and still learns in
distribution. The actor loss per batch is::

    L_actor = mean(α·log π(a|s) - Q(s, a)) / mean|Q(s, a)|  +  w · mean ||tanh(μ(s)) - a*(s)||²

with ``a ~ π`` resampled, ``μ`` the policy's pre-squash mean, ``a*`` the teacher's action
(:mod:`jpo.sim.teacher`) and ``w`` = ``sac.bc_weight`` (configs/train.yaml). Rows whose
workload has no oracle (``a*`` NaN) are left out of the BC mean. The critic and α losses
are RLlib's.

Two more terms serve fine-tuning a policy that is already served (continuous learning,
:mod:`jpo.train.continuous`):

- **critic warm-up** (``sac.critic_warmup_updates`` = N): the actor's gradients are
  dropped for the learner's first N updates, so fresh critics learn the served actor's
  values before they steer it (critics and α still learn);
- **actor updates** (``sac.actor_updates`` = K): after the warm-up the actor learns for K
  updates only; later updates drop its gradients while critics and α keep learning. It
  bounds how far one training run (a continuous cycle) moves the actor from where it
  started: the forgetting of a cycle grows with that distance (benchmarks/train/RESULTS.md
  §12-§13); None: no bound;
- **anchor** (``sac.anchor_weight`` = w_a, ``sac.anchor_policy``): a distillation term
  ``w_a · mean ||tanh(μ(s)) - a_served(s)||²`` towards the deterministic actions of a frozen
  copy of a policy artifact (the served policy), against forgetting what it knew.

The pieces: the replay env puts ``a*`` into each step's info (``env.config.teacher``);
:func:`keep_infos_in_samples` makes the replay buffer keep infos in the episodes it
samples (RLlib drops them by default); :class:`TeacherActionsToBatch`, a learner-connector
piece, copies ``a*`` from the sampled episodes into the train batch;
:class:`BCSACTorchLearner` adds the term.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import POLICY_LOSS_KEY

from jpo.sim.teacher import TEACHER_ACTION
from jpo.train.sac_fast import BC_WEIGHT_KEY, FastSACTorchLearner

__all__ = [
    "ACTOR_UPDATES_KEY",
    "ANCHOR_POLICY_KEY",
    "ANCHOR_WEIGHT_KEY",
    "BC_WEIGHT_KEY",
    "CRITIC_WARMUP_KEY",
    "TEACHER_ACTION",
    "BCSACTorchLearner",
    "TeacherActionsToBatch",
    "keep_infos_in_samples",
]

CRITIC_WARMUP_KEY = "critic_warmup_updates"
"""Key of the number of updates with a frozen actor (``learner_config_dict``)."""
ACTOR_UPDATES_KEY = "actor_updates"
"""Key of the number of updates the actor learns after the warm-up; absent: no bound."""
ANCHOR_WEIGHT_KEY = "anchor_weight"
"""Key of the anchor term's weight (``learner_config_dict``)."""
ANCHOR_POLICY_KEY = "anchor_policy"
"""Key of the anchor policy's artifact folder (``learner_config_dict``)."""


def keep_infos_in_samples(buffer: Any) -> None:
    """Make RLlib's episode replay buffer keep infos in the episodes it samples.

    SAC samples with ``include_infos=False``, and ``SACConfig.validate`` accepts only
    RLlib's own buffer names, so no subclass can be configured: the instance's ``sample``
    is wrapped instead (at algorithm init, :func:`jpo.train.trainer` callbacks).
    """
    sample = buffer.sample
    if getattr(sample, "_keeps_infos", False):
        return

    def sample_with_infos(*args: Any, **kwargs: Any) -> Any:
        kwargs["include_infos"] = True
        return sample(*args, **kwargs)

    sample_with_infos._keeps_infos = True  # type: ignore[attr-defined]
    buffer.sample = sample_with_infos


class TeacherActionsToBatch(ConnectorV2):
    """Learner-connector piece: each sampled timestep's ``teacher_action`` info as a column."""

    def __call__(
        self,
        *,
        rl_module: Any,
        batch: dict[str, Any],
        episodes: list[Any],
        explore: bool | None = None,
        shared_data: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Add one teacher action per timestep, in the order the observations are added."""
        if TEACHER_ACTION in batch:
            return batch
        for i, episode in enumerate(
            self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False)
        ):
            # Custom pieces run before RLlib's AddObservationsFromEpisodesToBatch, which
            # makes ids unique ("<id>_<i>") when one episode was sampled twice. Doing the
            # same here first keeps both columns under the same keys, row for row.
            if "_" not in episode.id_:
                episode.id_ += "_" + str(i)
            k = int(np.prod(episode.action_space.shape))
            infos = episode.get_infos(slice(0, len(episode)))
            items = [
                np.asarray(info.get(TEACHER_ACTION, np.full(k, np.nan)), dtype=np.float32)
                for info in infos
            ]
            self.add_n_batch_items(
                batch,
                TEACHER_ACTION,
                items_to_add=items,
                num_items=len(episode),
                single_agent_episode=episode,
            )
        return batch


class BCSACTorchLearner(FastSACTorchLearner):
    """RLlib's SAC learner plus BC term, critic warm-up, actor-update bound and anchor term."""

    def build(self) -> None:
        """Build RLlib's SAC learner; count updates from here (the warm-up's and bound's clock).

        The count is not part of the learner's state: a run resumed from a checkpoint (the
        next continuous cycle) counts from 0 again, so both numbers are per run.
        """
        super().build()
        self.jpo_updates = 0
        self._anchor: tuple[torch.nn.Module, torch.nn.Module] | None = None

    def _anchor_nets(self, module_id: Any, config: Any) -> Any:
        """Frozen copies of the actor's encoder and head holding the anchor policy's weights."""
        if self._anchor is None:
            import copy

            from jpo.policy.artifact import LocalPolicy
            from jpo.policy.export import load_actor_weights

            policy = LocalPolicy.load(str(config.learner_config_dict[ANCHOR_POLICY_KEY]))
            with np.load(policy.path / policy.manifest.weights_file) as npz:
                weights = {k: np.asarray(npz[k]) for k in npz.files}
            anchor: Any = copy.deepcopy(self.module[module_id])
            load_actor_weights(anchor, weights)
            for part in (anchor.pi_encoder, anchor.pi):
                part.requires_grad_(False)
            self._anchor = (anchor.pi_encoder, anchor.pi)
        return self._anchor

    def _anchor_loss(self, module_id: Any, config: Any, batch: dict[str, Any], mean: Any) -> Any:
        """Mean squared distance of the actor's squashed mean to the anchor policy's action."""
        from ray.rllib.core.models.base import ENCODER_OUT

        encoder, head = self._anchor_nets(module_id, config)
        with torch.no_grad():
            logits = head(encoder({Columns.OBS: batch[Columns.OBS]})[ENCODER_OUT])
            target = torch.tanh(logits[..., : mean.shape[-1]])
        return ((mean - target) ** 2).sum(dim=-1).mean()

    def _compute_loss_for_module_continuous(
        self,
        *,
        module_id: Any,
        config: Any,
        batch: dict[str, Any],
        fwd_out: dict[str, Any],
    ) -> Any:
        total = super()._compute_loss_for_module_continuous(
            module_id=module_id, config=config, batch=batch, fwd_out=fwd_out
        )
        extra = config.learner_config_dict
        weight = float(extra.get(BC_WEIGHT_KEY, 0.0))
        anchor_weight = float(extra.get(ANCHOR_WEIGHT_KEY, 0.0))
        use_bc = weight > 0.0 and TEACHER_ACTION in batch
        if not use_bc and anchor_weight <= 0.0:
            return total
        sac_actor = self._temp_losses[(module_id, POLICY_LOSS_KEY)]
        q_scale = fwd_out["q_curr"].abs().mean().detach().clamp(min=1e-3)
        space: Any = self.module[module_id].action_space
        k = int(np.prod(space.shape))
        mean = torch.tanh(fwd_out[Columns.ACTION_DIST_INPUTS][..., :k])
        actor = sac_actor / q_scale
        if use_bc:
            target = batch[TEACHER_ACTION]
            known = ~torch.isnan(target).any(dim=-1)
            err = ((mean - torch.nan_to_num(target)) ** 2).sum(dim=-1)
            bc = (err * known).sum() / known.sum().clamp(min=1)
            actor = actor + weight * bc
            self.metrics.log_value((module_id, "bc_loss"), bc, window=1)
        if anchor_weight > 0.0:
            anchor = self._anchor_loss(module_id, config, batch, mean)
            actor = actor + anchor_weight * anchor
            self.metrics.log_value((module_id, "anchor_loss"), anchor, window=1)
        self._temp_losses[(module_id, POLICY_LOSS_KEY)] = actor
        return total - sac_actor + actor

    def actor_learns(self) -> bool:
        """Whether the current update (``jpo_updates``, from 1) may change the actor."""
        extra = self.config.learner_config_dict
        warmup = int(extra.get(CRITIC_WARMUP_KEY, 0))
        limit = extra.get(ACTOR_UPDATES_KEY)
        if self.jpo_updates <= warmup:
            return False
        return limit is None or self.jpo_updates <= warmup + int(limit)

    def compute_gradients(self, loss_per_module: Any, **kwargs: Any) -> Any:
        """RLlib's gradients, without the actor's during the warm-up and after its updates."""
        grads = super().compute_gradients(loss_per_module, **kwargs)
        self.jpo_updates += 1
        if self.actor_learns():
            return grads
        for module_id in self.module.keys():  # noqa: SIM118 (MultiRLModule: no __iter__)
            for name, optim in self.get_optimizers_for_module(module_id):
                if name != "policy":
                    continue
                for pid, param in self.filter_param_dict_for_optimizer(self._params, optim).items():
                    grads.pop(pid, None)
                    param.grad = None  # Adam skips parameters without a gradient
        return grads
