"""Rollback: the one owner of every move the CI stage makes without asking the policy.

After the latest run, :func:`decide` answers, in this order:

1. **rollback** — the run with the values in the file failed (OOM, divergence, crash) or
   worsened validation loss beyond ``[rollback] val_loss_tolerance`` against the run the
   suggestion was based on: restore the last known-good values;
2. **return to the best** — it trained but scored below the campaign's best known-good
   run by more than ``[incumbent] margin`` (:func:`jpo.stage.incumbent.lower_than_incumbent`):
   move back to that run's values, one trust-region step at a time;
3. **wait** — the newest suggestion wrote values and the latest run predates them: keep
   the file until the workload runs with them;
4. **recovery** — the run failed and no known-good values exist to roll back to (e.g. the
   workload's own defaults ran out of memory): step down what the failure points at
   (``[rollback] recover_failures``).

None of these: the policy is asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from jpo.stage.failure_memory import failed_configs
from jpo.stage.incumbent import ScoredRun, lower_than_incumbent
from jpo.stage.record import SuggestionRecord
from jpo.stage.settings import SuggestSettings
from jpo.telemetry.schema import RunSummary
from jpo.workload.constraints import Constraints
from jpo.workload.types import Hyperparameters

__all__ = [
    "RECOVERY_STEPS",
    "Move",
    "MoveKind",
    "decide",
    "last_known_good",
    "recovery_step",
    "run_outcome_is_bad",
    "step_towards",
]


class MoveKind(StrEnum):
    """Which rule decided the move (module docstring)."""

    ROLLBACK = "rollback"
    RETURN_TO_BEST = "return_to_best"
    WAIT = "wait"
    RECOVERY = "recovery"


@dataclass(frozen=True, slots=True)
class Move:
    """A move decided without the policy: the values, and why (recorded as the reason)."""

    kind: MoveKind
    after: Hyperparameters
    why: str
    """The audit record's reason and the note (empty for WAIT, which records nothing)."""
    detail: str
    """What the console message adds after the file's name."""


def run_outcome_is_bad(record: SuggestionRecord, settings: SuggestSettings) -> str | None:
    """Return why a record's outcome calls for rollback (failed or degraded), else None."""
    outcome = record.outcome
    if outcome is None:
        return None
    run = outcome.run_id or "?"
    if outcome.summary is not None and outcome.failed:
        return f"run {run} with these values failed ({outcome.summary.failure})"
    if outcome.degraded:
        change = outcome.val_loss_change
        how = f" by {change:.1%}" if change is not None else ""
        return (
            f"run {run} worsened validation loss{how} (tolerance "
            f"{settings.rollback.val_loss_tolerance:.0%}, configs/suggest.toml [rollback])"
        )
    return None


def last_known_good(records: Sequence[SuggestionRecord]) -> Hyperparameters | None:
    """Return the newest values known to be good for a workload's records (oldest first).

    The ``after`` of the newest record whose outcome was good; failing that, the
    ``before`` of the newest record (the values in place before the bad change), unless
    those values failed too (their run, or any remembered run): then None, since rolling
    back to them would only repeat the failure.
    """
    for record in reversed(records):
        if record.outcome is not None and record.outcome.good:
            return record.applied
    if not records:
        return None
    before = records[-1].before
    base = records[-1].basis.summary
    if base is not None and base.failure != "none":
        return None
    failed = {f.hyperparameters for f in failed_configs(records, None, None, "")}
    return None if before in failed else before


RECOVERY_STEPS: dict[str, tuple[str, ...]] = {
    "oom": ("batch_size", "num_layers"),
    "diverged": ("learning_rate",),
}
"""Per failure, the hyperparameters a recovery step may lower, the first tunable one wins:
a smaller batch (then a shallower model) needs less memory; a lower learning rate is the
standard cure for divergence."""


def recovery_step(
    constraints: Constraints, current: Hyperparameters, failure: str
) -> tuple[Hyperparameters, str] | None:
    """Return values one trust-region step down from failing ``current``, and what moved.

    For a run that failed (``oom`` or ``diverged``) when no known-good values exist to roll
    back to; None for other failures or when no candidate parameter can move down.
    """
    for name in RECOVERY_STEPS.get(failure, ()):
        if name not in constraints.tunable:
            continue
        action = np.zeros(len(constraints.tunable))
        action[constraints.tunable.index(name)] = -1.0
        # the learning rate follows a smaller batch as the limits' coupling says (linear
        # scaling rule by default), so the step does not raise the noise scale lr/B
        after = constraints.apply_action(current, action)
        if after != current:
            return after, name
    return None


def step_towards(
    constraints: Constraints, current: Hyperparameters, target: Hyperparameters
) -> Hyperparameters:
    """Return ``target`` if one suggestion may reach it, else one trust-region step towards it.

    The return to the incumbent is a suggestion like any other: it never moves a value
    further than the trust region allows (SPEC §3), so an incumbent two steps back is
    reached over two runs.
    """
    if not constraints.violations(target, current):
        return target
    action = constraints.action_towards(current, target, learning_rate_follows_batch=0.0)
    return constraints.apply_action(current, np.asarray(action), learning_rate_follows_batch=0.0)


def _roll_back(
    records: Sequence[SuggestionRecord],
    current: Hyperparameters,
    constraints: Constraints,
    settings: SuggestSettings,
) -> Move | None:
    """Rule 1: the latest outcome with the file's values failed or degraded."""
    bad = run_outcome_is_bad(records[-1], settings)
    good = last_known_good(records) if bad is not None else None
    if bad is None or good is None or good == current:
        return None
    constraints.validate(good)
    detail = f"to the last known-good values ({bad})"
    return Move(MoveKind.ROLLBACK, good, f"rollback: {bad}", detail)


def _return_to_best(
    latest: SuggestionRecord,
    current: Hyperparameters,
    constraints: Constraints,
    scored: Sequence[ScoredRun],
    settings: SuggestSettings,
) -> Move | None:
    """Rule 2: the latest run scored below the campaign's best known-good run."""
    newest = latest.outcome.run_id if latest.outcome is not None else ""
    lower = lower_than_incumbent(scored, newest, settings.incumbent)
    if lower is None:
        return None
    best, run, how = lower
    back = step_towards(constraints, current, best.hyperparameters)
    constraints.validate(back, previous=current)
    reach = "back to" if back == best.hyperparameters else "one trust-region step towards"
    why = (
        f"run {run.run_id} ({how}) is not kept; {reach} the best known-good run "
        f"{best.run_id} (configs/suggest.toml [incumbent])"
    )
    return Move(MoveKind.RETURN_TO_BEST, back, f"rollback: {why}", f"({why})")


def _recover(
    current: Hyperparameters,
    summary: RunSummary,
    run_id: str,
    constraints: Constraints,
    settings: SuggestSettings,
) -> Move | None:
    """Rule 4: a failed run with nothing known-good to roll back to."""
    if not settings.rollback.recover_failures or summary.failure not in RECOVERY_STEPS:
        return None
    # The run with the current values failed and nothing known-good is left to roll
    # back to (the defaults failed too): step down what the failure points at, rather
    # than ask a policy that was never shown this case.
    recovery = recovery_step(constraints, current, summary.failure)
    if recovery is None:
        return None
    after, moved = recovery
    constraints.validate(after, previous=current)
    why = (
        f"recovery: run {run_id} failed ({summary.failure}) and there are no "
        f"known-good values to roll back to; {moved} one trust-region step down"
    )
    return Move(MoveKind.RECOVERY, after, why, f"after failed run {run_id} ({why})")


def decide(
    records: Sequence[SuggestionRecord],
    current: Hyperparameters,
    summary: RunSummary,
    run_id: str,
    constraints: Constraints,
    scored: Sequence[ScoredRun],
    settings: SuggestSettings,
) -> Move | None:
    """Return the move the latest run calls for without the policy (module docstring)."""
    last = records[-1] if records else None
    if last is not None and last.applied == current:
        move = _roll_back(records, current, constraints, settings) or _return_to_best(
            last, current, constraints, scored, settings
        )
        if move is not None:
            return move
    if last is not None and last.changed and last.basis.run_id == run_id:
        detail = (
            f"the latest run {run_id} predates the values written by suggestion "
            f"{last.suggestion_id}; run the workload with them before suggesting again"
        )
        return Move(MoveKind.WAIT, current, "", detail)
    return _recover(current, summary, run_id, constraints, settings)
