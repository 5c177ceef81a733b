"""The campaign's best known-good run, and the return to it after a step that scored lower.

A policy step can leave validation loss within tolerance and still make the run worse: a
lower objective (:func:`jpo.learning.reward.objective`: utilization, throughput per GPU-hour, cost,
quality) than a configuration the campaign already ran. Without a memory of the best run,
``config.ini`` then stays on the worse values, and a deterministic policy asked again from
them rarely walks back: on the held-out split the bundled policy's last configurations
held 0.38 of the oracle's improvement while the best ones it had run held 0.53
(docs/design/ci-stage.md). This is the trust-region rule of keeping the
incumbent when a step fails to improve (Nocedal & Wright, *Numerical Optimization*, 2nd
ed., §4.1), applied with the objective every score is judged by.

Every run of the campaign is scored with :func:`jpo.learning.reward.objective_vs_run` against the
campaign's reference run: the run the oldest audit record in the window was based on
(typically the workload's defaults). Candidates are that reference run and each run whose
outcome is known-good (trained, and not marked degraded by feedback). The incumbent is the
candidate with the highest objective. When the latest run is known-good but scored more
than ``margin`` below the incumbent, the next ``jpo suggest`` moves back to the
incumbent's values, one trust-region step at a time (``configs/suggest.toml``
``[incumbent]``; the move itself is :mod:`jpo.stage.rollback`'s). The
lower-scoring configuration joins the failed-config memory as ``"worse"`` so the policy
is not sent back to it.

A run is scored with the values it ran (its own ``hp_*`` telemetry, which feedback
records), so a hand edit of ``config.ini`` between suggestion and run is not credited to
the suggestion. Only the newest ``window`` records count, so a long-lived workload
compares runs from similar cluster conditions rather than from months apart. ``jpo log``
names each workload's best known-good run.

**A shift in the cluster may restart the window** (``[incumbent] restart_on_shift``, off by
default). A cluster's capacity drifts: co-tenants arrive, nodes are swapped. After a drop,
every new run scores below a best the cluster can no longer deliver, and the return to the
best chases that ghost: it rolls back good runs and refuses good steps as "worse" (a live
campaign whose contention rose from 0.15 to 0.6 rolled back 7 of 16 decisions,
benchmarks/train/RESULTS.md §10). The evidence of a shift is the incumbent's own values run
again and scoring more than ``shift_margin`` below their record: the values did not change,
so the cluster did. That run then becomes the window's reference (older runs stop counting,
their "worse" entries included) and the policy is asked again; failed and degraded
configurations stay remembered (:mod:`jpo.stage.failure_memory` reads every record, not the
window). The restart needs no audit field: it is recomputed from the records, so old logs
read unchanged. It ships OFF: on the training split and the validation set it removed few
rollbacks after a shift and cost objective and harmful runs, since the forgotten "worse"
entries let the policy retry steps that are worse under either contention
(research/evaluate/RESULTS.md, SELECTION-shift.md).

Three refinements, each off by default, answer the causes found: ``shift_reruns`` (that many
reruns below the record before a shift: one lucky record no longer restarts),
``shift_keeps_worse`` (the restart keeps the "worse" entries judged before the best's last
measurement that matched its record; later ones may have been judged against the ghost)
and ``shift_rejudges`` (those later runs are judged again against the rerun that showed
the shift, and stay "worse" if they lost to it too). With them the restart still did not
pay on the validation set (SELECTION-shift2.md, SELECTION-shift3.md): after a restart the
reference is one post-shift run, and steps a little worse than it, within ``margin``, are
kept one after another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from jpo.stage.record import SuggestionRecord
from jpo.stage.settings import IncumbentSettings
from jpo.telemetry.schema import RunSummary
from jpo.workload.types import Hyperparameters

__all__ = [
    "CampaignScores",
    "ClusterShift",
    "IncumbentSettings",
    "ScoredRun",
    "best_run",
    "campaign_scores",
    "lower_than_incumbent",
    "scored_runs",
    "worse_runs",
]


@dataclass(frozen=True, slots=True)
class ScoredRun:
    """One finished, known-good run of the campaign and its objective."""

    hyperparameters: Hyperparameters
    objective: float
    run_id: str


@dataclass(frozen=True, slots=True)
class ClusterShift:
    """The incumbent's values run again and scored below their record: the cluster changed."""

    run_id: str
    """The rerun that showed it; the reference of the restarted window."""
    record_run_id: str
    """The incumbent's run whose record it fell below."""
    record: float
    measured: float
    """The rerun's objective against the old reference (the record's yardstick)."""
    reruns: int = 1
    """How many reruns of the record's values scored below it (``shift_reruns``)."""

    def note(self) -> str:
        """Say what was detected and what the stage does about it (notes, audit)."""
        times = f" (rerun {self.reruns} below it)" if self.reruns > 1 else ""
        return (
            f"cluster shift: run {self.run_id} ran the best run {self.record_run_id}'s values "
            f"and scored {self.measured:.3f} against its {self.record:.3f}{times}; runs before "
            "it are no longer the reference (configs/suggest.toml [incumbent] shift_margin)"
        )


@dataclass(frozen=True, slots=True)
class CampaignScores:
    """The scored runs of the (possibly restarted) window, and the newest shift, if any."""

    runs: tuple[ScoredRun, ...]
    shift: ClusterShift | None = None
    kept_worse: tuple[ScoredRun, ...] = ()
    """With ``shift_keeps_worse``: the runs that scored below the best before a restart
    (judged against the reference of their time); they stay in the failed-config memory."""


@dataclass(slots=True)
class _Reruns:
    """The reruns of the incumbent's values that scored below its record, so far."""

    record_run_id: str = ""
    count: int = 0

    def below(self, runs: Sequence[ScoredRun], run: ScoredRun, settings: IncumbentSettings) -> int:
        """Count ``run`` if it reran the incumbent's values below the record; return the count.

        A rerun within the margin, or a new incumbent, starts the count again.
        """
        best = best_run(runs)
        if best is None or best.hyperparameters != run.hyperparameters:
            return self.count
        if best.run_id != self.record_run_id:
            self.record_run_id, self.count = best.run_id, 0
        low = best.objective - run.objective > settings.shift_margin
        self.count = self.count + 1 if low else 0
        return self.count


def _shift(
    runs: Sequence[ScoredRun], run: ScoredRun, settings: IncumbentSettings, reruns: _Reruns
) -> ClusterShift | None:
    """Return the shift ``run`` shows: the ``shift_reruns``-th low rerun of the best's values."""
    if not settings.restart_on_shift:
        return None
    count = reruns.below(runs, run, settings)
    best = best_run(runs)
    if best is None or count < settings.shift_reruns:
        return None
    return ClusterShift(run.run_id, best.run_id, best.objective, run.objective, count)


def _kept_on_restart(
    runs: Sequence[ScoredRun], settings: IncumbentSettings, rerun: ScoredRun
) -> tuple[ScoredRun, ...]:
    """Return the window's "worse" runs a restart keeps (none unless ``shift_keeps_worse``).

    Runs older than the incumbent's newest measurement that still matched its record (the
    record itself, or a rerun within ``shift_margin``) are kept: they were judged by a
    yardstick the cluster still delivered. Runs after it may have run on the changed
    cluster and been judged against its ghost: they are forgotten, or, with
    ``shift_rejudges``, kept only if they also scored more than ``margin`` below ``rerun``
    (the rerun that showed the shift: the best's values on the changed cluster). The
    incumbent's own values never count (its low reruns are the shift's evidence).
    """
    best = best_run(runs)
    if not settings.shift_keeps_worse or best is None:
        return ()
    matched = max(
        i
        for i, r in enumerate(runs)
        if r.hyperparameters == best.hyperparameters
        and best.objective - r.objective <= settings.shift_margin
    )
    older = {r.run_id for r in runs[:matched]}

    def kept(r: ScoredRun) -> bool:
        if r.hyperparameters == best.hyperparameters:
            return False
        if r.run_id in older:
            return True
        return settings.shift_rejudges and rerun.objective - r.objective > settings.margin

    return tuple(r for r in worse_runs(runs, settings) if kept(r))


def campaign_scores(
    records: Sequence[SuggestionRecord], settings: IncumbentSettings
) -> CampaignScores:
    """Return the window's reference run and its known-good runs, scored, oldest first.

    ``shift_reruns`` reruns of the incumbent's values that scored more than
    ``shift_margin`` below their record restart the window there (module docstring).
    Empty when the feature is off, or when the reference run failed or is unknown.
    """
    from jpo.learning.reward import load_reward_weights, objective_vs_run

    window = list(records[-settings.window :]) if settings.enabled and settings.window > 0 else []
    if not window:
        return CampaignScores(())
    reference = window[0].basis.summary
    before = window[0].before
    if reference is None or before is None or reference.failure != "none":
        return CampaignScores(())
    weights = load_reward_weights()

    def score(summary: RunSummary, against: RunSummary) -> float:
        return objective_vs_run(summary, against, weights)

    out = [ScoredRun(before, score(reference, reference), window[0].basis.run_id)]
    shift: ClusterShift | None = None
    kept: tuple[ScoredRun, ...] = ()
    reruns = _Reruns()
    for record in window:
        outcome = record.outcome
        if outcome is None or outcome.summary is None or record.ran is None:
            continue
        if not outcome.good:
            continue
        # what ran, also after a hand edit
        run = ScoredRun(record.ran, score(outcome.summary, reference), outcome.run_id)
        found = _shift(out, run, settings, reruns)
        if found is not None:  # the window restarts at this run, scored against itself
            kept += _kept_on_restart(out, settings, run)
            shift, reference, out, reruns = found, outcome.summary, [], _Reruns()
            run = ScoredRun(run.hyperparameters, score(reference, reference), run.run_id)
        out.append(run)
    return CampaignScores(tuple(out), shift, kept)


def scored_runs(
    records: Sequence[SuggestionRecord], settings: IncumbentSettings
) -> list[ScoredRun]:
    """Return :func:`campaign_scores`' runs: the window's reference and known-good runs."""
    return list(campaign_scores(records, settings).runs)


def best_run(runs: Sequence[ScoredRun]) -> ScoredRun | None:
    """Return the incumbent: the highest-scoring run."""
    return max(runs, key=lambda r: r.objective) if runs else None


def lower_than_incumbent(
    runs: Sequence[ScoredRun], latest_run_id: str, settings: IncumbentSettings
) -> tuple[ScoredRun, ScoredRun, str] | None:
    """Return (incumbent, latest, why) when the latest known-good run should not be kept.

    ``runs`` is :func:`scored_runs`' answer, ``latest_run_id`` the run of the newest
    outcome. The latest run is not kept when it scored below the incumbent by more than
    the margin. None when the newest outcome is not among ``runs`` (pending, failed or
    degraded: the rollback rules own those), or when the latest run has the incumbent's
    values.
    """
    if not settings.enabled or len(runs) < 2 or runs[-1].run_id != latest_run_id:
        return None
    latest = runs[-1]
    best = best_run(runs)
    if best is None or best.hyperparameters == latest.hyperparameters:
        return None
    if best.objective - latest.objective > settings.margin:
        why = (
            f"objective {latest.objective:.3f}, below {best.objective:.3f} by more than "
            f"{settings.margin:g}"
        )
        return best, latest, why
    return None


def worse_runs(runs: Sequence[ScoredRun], settings: IncumbentSettings) -> list[ScoredRun]:
    """Return the scored runs that scored below the incumbent by more than the margin.

    The reference run's values (the workload's own baseline) are never among them.
    """
    best = best_run(runs)
    if not (settings.enabled and settings.remember_worse) or best is None:
        return []
    return [
        r
        for r in runs[1:]
        if best.objective - r.objective > settings.margin
        and r.hyperparameters != runs[0].hyperparameters
    ]
