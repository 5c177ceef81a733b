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
    "BC_WEIGHT_KEY",
    "TEACHER_ACTION",
    "BCSACTorchLearner",
    "TeacherActionsToBatch",
    "keep_infos_in_samples",
]


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
    """RLlib's SAC learner (jpo.train.sac_fast's) with the teacher's BC term in the actor loss."""

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
        weight = float(config.learner_config_dict.get(BC_WEIGHT_KEY, 0.0))
        if weight <= 0.0 or TEACHER_ACTION not in batch:
            return total
        sac_actor = self._temp_losses[(module_id, POLICY_LOSS_KEY)]
        q_scale = fwd_out["q_curr"].abs().mean().detach().clamp(min=1e-3)
        target = batch[TEACHER_ACTION]
        k = target.shape[-1]
        mean = torch.tanh(fwd_out[Columns.ACTION_DIST_INPUTS][..., :k])
        known = ~torch.isnan(target).any(dim=-1)
        err = ((mean - torch.nan_to_num(target)) ** 2).sum(dim=-1)
        bc = (err * known).sum() / known.sum().clamp(min=1)
        actor = sac_actor / q_scale + weight * bc
        self._temp_losses[(module_id, POLICY_LOSS_KEY)] = actor
        self.metrics.log_value((module_id, "bc_loss"), bc, window=1)
        return total - sac_actor + actor
