"""The retry rule: a refused repeat of a degraded step is tried once more with more epochs.

When the failed-config memory refuses the policy's step because that step degraded
validation loss before, the step is retried once with the epochs one trust-region step up
(more training is the standard remedy for a loss that has not converged, e.g. after a
depth cut; SPEC appendix, Kaplan et al. 2020), if that longer step is not remembered
either (``[failed_configs] retry_more_epochs``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jpo.stage.guards import FailedConfig, GuardResult, check_failed_configs
from jpo.stage.settings import FailedConfigSettings
from jpo.workload.constraints import Constraints
from jpo.workload.types import Hyperparameters

__all__ = ["retry_with_more_epochs"]

RETRY_NOTE = "failed-config memory: the degraded step retried with more epochs"


def _refused_as_degraded(
    current: Hyperparameters,
    proposed: Hyperparameters,
    failures: Sequence[FailedConfig],
    near: float,
) -> bool:
    """Whether the memory of degraded steps alone refuses ``proposed``."""
    degraded = [f for f in failures if f.failure == "degraded"]
    return check_failed_configs(current, proposed, degraded, near=near).hyperparameters == current


def retry_with_more_epochs(
    constraints: Constraints,
    current: Hyperparameters,
    proposed: Hyperparameters,
    action: Sequence[float],
    learning_rate_follows_batch: float | None,
    guard: GuardResult,
    failures: Sequence[FailedConfig],
    settings: FailedConfigSettings,
) -> GuardResult:
    """Return the failed-config guard's answer, retried with more epochs where the rule says.

    ``guard`` is :func:`~jpo.stage.guards.check_failed_configs` on ``proposed`` (the
    constraints' mapping of the policy's ``action``); it is returned unchanged unless it
    refused a repeat of a degraded step and the longer step passes the memory.
    """
    near = settings.repeat_tolerance
    if not (
        settings.retry_more_epochs
        and guard.hyperparameters == current != proposed
        and "epochs" in constraints.tunable
        and _refused_as_degraded(current, proposed, failures, near)
    ):
        return guard
    longer = list(action)
    longer[constraints.tunable.index("epochs")] = 1.0
    retry = constraints.apply_action(
        current,
        np.asarray(longer, dtype=np.float64),
        learning_rate_follows_batch=learning_rate_follows_batch,
    )
    retried = check_failed_configs(current, retry, failures, near=near)
    if retried.hyperparameters == current:
        return guard
    return GuardResult(retried.hyperparameters, (*guard.notes, *retried.notes, RETRY_NOTE))
