"""Adaptive step size: scale the policy's action up after steps that paid off, down after misses.

The policy's action is a relative change inside the trust region (``configs/constraints.toml``
``[trust_region]``): ±1 is the largest step one suggestion may take. A trust-region method
widens its region after a step that delivered and narrows it after one that did not
(Nocedal & Wright, *Numerical Optimization*, 2nd ed., §4.1). The CI stage can do the same with
the policy's action. From the workload's audit log it replays each earlier policy change and
its outcome. It starts a scale ``s`` at ``initial`` and multiplies it by ``expand`` when the run
a change produced scored higher than the run the change was based on, and by ``shrink`` when
it scored lower, failed or was marked degraded; ``s`` stays in ``[min_scale, max_scale]``. The
action sent to the constraints is ``clip(s · a, -1, 1)``. The direction stays the policy's,
the step grows along a path that keeps paying off, and the trust region still bounds every
step.

"Scored" is :func:`jpo.learning.reward.objective` with the campaign's first run as the
reference (its
validation loss, per-GPU throughput and GPU-hours), the objective the replay env, the oracle
and ``jpo evaluate`` use. Rollbacks and kept rounds are not policy steps and do not count.
The scale is recomputed from the log on every call, so the audit log is the only state.

Off by default (every factor 1.0, ``configs/suggest.toml`` ``[step]``): measured in
``benchmarks/evaluate/RESULTS.md`` (round 6), it raised in-distribution scores and lowered the
bundled policy's held-out score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["StepSettings", "StepState", "step_state"]


@dataclass(frozen=True, slots=True)
class StepSettings:
    """Step adaptation factors (``configs/suggest.toml`` ``[step]``; all 1.0 = off)."""

    initial: float = 1.0
    """Scale of the first policy step of a campaign."""
    expand: float = 1.0
    """Factor applied after a policy step whose run scored higher than its base run."""
    shrink: float = 1.0
    """Factor applied after a policy step whose run scored lower, failed or degraded."""
    min_scale: float = 1.0
    """Lower bound of the scale."""
    max_scale: float = 1.0
    """Upper bound of the scale (a scaled action is clipped to [-1, 1] regardless)."""

    @property
    def active(self) -> bool:
        """Return whether the scale can differ from 1."""
        return not (self.initial == self.expand == self.shrink == 1.0)


@dataclass(frozen=True, slots=True)
class StepState:
    """What the audit log says about the policy's earlier steps on one workload."""

    scale: float = 1.0
    hits: int = 0
    misses: int = 0

    def apply(self, action: Sequence[float]) -> list[float]:
        """Return ``clip(scale · a, -1, 1)`` for each action entry."""
        return [min(1.0, max(-1.0, self.scale * float(a))) for a in action]


def step_state(records: Sequence[Any], settings: StepSettings) -> StepState:
    """Return the step scale earned by a workload's audit records (oldest first)."""
    from jpo.learning.reward import load_reward_weights, objective_vs_run
    from jpo.stage.feedback import outcome_degraded, outcome_summary, record_outcome, record_summary

    if not settings.active:
        return StepState()
    scale = min(max(settings.initial, settings.min_scale), settings.max_scale)
    reference = record_summary(records[0]) if records else None
    if reference is None or reference.failure != "none":
        return StepState(scale)
    weights = load_reward_weights()

    def score(summary: Any) -> float:
        return objective_vs_run(summary, reference, weights)

    hits = misses = 0
    for record in records:
        if not record.changed or record.reason != "policy":
            continue  # rollbacks and kept rounds are not policy steps
        outcome = record_outcome(record)
        base = record_summary(record)
        after = outcome_summary(outcome)
        if outcome is None or base is None or after is None:
            continue  # the run is still pending
        hit = (
            after.failure == "none"
            and not outcome_degraded(outcome)
            and (base.failure != "none" or score(after) > score(base))
        )
        if hit:
            hits += 1
            scale *= settings.expand
        else:
            misses += 1
            scale *= settings.shrink
        scale = min(max(scale, settings.min_scale), settings.max_scale)
    return StepState(scale, hits, misses)
