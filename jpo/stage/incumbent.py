"""The campaign's best known-good run, and the return to it after a step that scored lower.

A policy step can leave validation loss within tolerance and still make the run worse: a
lower objective (:func:`jpo.learning.reward.objective`: utilization, throughput per GPU-hour, cost,
quality) than a configuration the campaign already ran. Without a memory of the best run,
``config.ini`` then stays on the worse values, and a deterministic policy asked again from
them rarely walks back: on the held-out split the bundled policy's last configurations
held 0.38 of the oracle's improvement while the best ones it had run held 0.53
(benchmarks/evaluate/RESULTS.md, round 13). This is the trust-region rule of keeping the
incumbent when a step fails to improve (Nocedal & Wright, *Numerical Optimization*, 2nd
ed., §4.1), applied with the objective every score is judged by.

Every run of the campaign is scored with :func:`jpo.learning.reward.objective_vs_run` against the
campaign's reference run: the run the oldest audit record in the window was based on
(typically the workload's defaults). Candidates are that reference run and each run whose
outcome is known-good (trained, and not marked degraded by feedback). The incumbent is the
candidate with the highest objective. When the latest run is known-good but scored more
than ``margin`` below the incumbent (or, with ``val_loss_tolerance`` below 1, its val loss
drifted that far above the reference run's over several steps each within the rollback
tolerance), the next ``jpo suggest`` moves back to the incumbent's values, one
trust-region step at a time (``configs/suggest.toml`` ``[incumbent]``). The
lower-scoring configuration joins the failed-config memory as ``"worse"`` so the policy
is not sent back to it.

A run is scored with the values it ran (its own ``hp_*`` telemetry, which feedback
records), so a hand edit of ``config.ini`` between suggestion and run is not credited to
the suggestion. Only the newest ``window`` records count, so a long-lived workload
compares runs from similar cluster conditions rather than from months apart. ``jpo log``
names each workload's best known-good run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jpo.telemetry.schema import RunSummary
from jpo.workload.types import Hyperparameters

if TYPE_CHECKING:
    from jpo.workload.constraints import Constraints

__all__ = [
    "IncumbentSettings",
    "ScoredRun",
    "best_run",
    "lower_than_incumbent",
    "scored_runs",
    "step_towards",
    "worse_runs",
]


@dataclass(frozen=True, slots=True)
class IncumbentSettings:
    """Return-to-the-best settings (``configs/suggest.toml`` ``[incumbent]``)."""

    enabled: bool = True
    """Restore the best known-good values after a run that scored lower (else keep going)."""
    margin: float = 0.05
    """Objective units a run must fall below the incumbent to count as lower (noise guard)."""
    window: int = 20
    """Newest audit records considered (the reference is the oldest of them)."""
    remember_worse: bool = True
    """Add configurations that scored below the incumbent to the failed-config memory."""
    val_loss_tolerance: float = 1.0
    """Largest relative val-loss excess over the reference run a candidate may have."""


@dataclass(frozen=True, slots=True)
class ScoredRun:
    """One finished, known-good run of the campaign and its objective."""

    hyperparameters: Hyperparameters
    objective: float
    run_id: str
    val_loss_excess: float = 0.0
    """Relative val-loss change against the reference run (0 for the reference itself)."""

    def holds_quality(self, settings: IncumbentSettings) -> bool:
        """Whether the run's val loss stays within the tolerance of the reference run's."""
        return self.val_loss_excess <= settings.val_loss_tolerance


def scored_runs(records: Sequence[Any], settings: IncumbentSettings) -> list[ScoredRun]:
    """Return the window's reference run and its known-good runs, scored, oldest first.

    Empty when the feature is off, or when the reference run failed or is unknown.
    """
    from jpo.learning.reward import load_reward_weights, objective_vs_run
    from jpo.stage.feedback import (
        outcome_degraded,
        outcome_hyperparameters,
        outcome_summary,
        record_before,
        record_outcome,
        record_run_id,
        record_summary,
        val_loss_change,
    )

    window = list(records[-settings.window :]) if settings.enabled and settings.window > 0 else []
    if not window:
        return []
    reference = record_summary(window[0])
    before = record_before(window[0])
    if reference is None or before is None or reference.failure != "none":
        return []
    weights = load_reward_weights()

    def score(summary: RunSummary) -> float:
        return objective_vs_run(summary, reference, weights)

    out = [ScoredRun(before, score(reference), record_run_id(window[0]))]
    for record in window:
        outcome = record_outcome(record)
        summary = outcome_summary(outcome)
        applied = outcome_hyperparameters(record)  # what ran, also after a hand edit
        if summary is None or applied is None or summary.failure != "none":
            continue
        if outcome_degraded(outcome):
            continue
        run_id = str((outcome or {}).get("run_id") or "")
        excess = val_loss_change(summary, reference)
        out.append(ScoredRun(applied, score(summary), run_id, excess))
    return out


def best_run(runs: Sequence[ScoredRun], settings: IncumbentSettings) -> ScoredRun | None:
    """Return the incumbent: the highest-scoring run that holds the val-loss tolerance."""
    candidates = [r for r in runs if r.holds_quality(settings)]
    return max(candidates, key=lambda r: r.objective) if candidates else None


def lower_than_incumbent(
    runs: Sequence[ScoredRun], latest_run_id: str, settings: IncumbentSettings
) -> tuple[ScoredRun, ScoredRun, str] | None:
    """Return (incumbent, latest, why) when the latest known-good run should not be kept.

    ``runs`` is :func:`scored_runs`' answer, ``latest_run_id`` the run of the newest
    outcome. The latest run is not kept when its val loss drifted beyond the tolerance of
    the reference run's, or when it scored below the incumbent (the best run that holds
    that tolerance) by more than the margin. None when the newest outcome is not among
    ``runs`` (pending, failed or degraded: the rollback rules own those), or when the
    latest run has the incumbent's values.
    """
    if not settings.enabled or len(runs) < 2 or runs[-1].run_id != latest_run_id:
        return None
    latest = runs[-1]
    best = best_run(runs, settings)
    if best is None or best.hyperparameters == latest.hyperparameters:
        return None
    if not latest.holds_quality(settings):
        why = (
            f"val loss {latest.val_loss_excess:+.1%} against the reference run, beyond "
            f"{settings.val_loss_tolerance:.0%}"
        )
        return best, latest, why
    if best.objective - latest.objective > settings.margin:
        why = (
            f"objective {latest.objective:.3f}, below {best.objective:.3f} by more than "
            f"{settings.margin:g}"
        )
        return best, latest, why
    return None


def worse_runs(runs: Sequence[ScoredRun], settings: IncumbentSettings) -> list[ScoredRun]:
    """Return the scored runs that drifted in val loss or scored below the incumbent.

    The reference run's values (the workload's own baseline) are never among them.
    """
    best = best_run(runs, settings)
    if not (settings.enabled and settings.remember_worse) or best is None:
        return []
    return [
        r
        for r in runs[1:]
        if (best.objective - r.objective > settings.margin or not r.holds_quality(settings))
        and r.hyperparameters != runs[0].hyperparameters
    ]


def step_towards(
    constraints: Constraints, current: Hyperparameters, target: Hyperparameters
) -> Hyperparameters:
    """Return ``target`` if one suggestion may reach it, else one trust-region step towards it.

    The return to the incumbent is a suggestion like any other: it never moves a value
    further than the trust region allows (SPEC §3), so an incumbent two steps back is
    reached over two runs.
    """
    import numpy as np

    if not constraints.violations(target, current):
        return target
    action = constraints.action_towards(current, target, learning_rate_follows_batch=0.0)
    return constraints.apply_action(current, np.asarray(action), learning_rate_follows_batch=0.0)
