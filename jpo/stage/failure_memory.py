"""The failed-config memory: every configuration the CI stage must not suggest again.

Read from the workload's audit records (each outcome's run, with the values it ran) and
the latest run: configurations whose run failed (OOM, divergence, crash), with
``[failed_configs] remember_degraded`` those whose run degraded validation loss and was
rolled back, and with ``[incumbent] remember_worse`` those that scored below the
campaign's best run (:func:`jpo.stage.incumbent.worse_runs`). The guard that refuses them
is :func:`jpo.stage.guards.check_failed_configs`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from jpo.stage.guards import FailedConfig
from jpo.stage.incumbent import ScoredRun, worse_runs
from jpo.stage.record import SuggestionRecord
from jpo.stage.settings import SuggestSettings
from jpo.telemetry.schema import RunSummary

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["failed_configs", "remembered_failures"]


def failed_configs(
    records: Sequence[SuggestionRecord],
    table: pa.Table | None,
    summary: RunSummary | None,
    run_id: str,
    *,
    include_degraded: bool = False,
) -> tuple[FailedConfig, ...]:
    """Return every configuration that failed for the workload (audit log + latest run).

    With ``include_degraded``, configurations whose run was marked degraded (validation
    loss worse than the rollback tolerance) count too, as failure ``"degraded"``.
    """
    out: list[FailedConfig] = []
    for record in records:
        outcome = record.outcome
        if record.ran is None or outcome is None or outcome.summary is None:
            continue
        if outcome.failed:
            out.append(FailedConfig(record.ran, outcome.summary.failure, outcome.run_id))
        elif include_degraded and outcome.degraded:
            out.append(FailedConfig(record.ran, "degraded", outcome.run_id))
    if table is not None and summary is not None and summary.failure != "none":
        from jpo.learning.features import run_hyperparameters
        from jpo.telemetry.prometheus import EmptyResult

        with contextlib.suppress(EmptyResult):
            out.append(FailedConfig(run_hyperparameters(table), summary.failure, run_id))
    return tuple(out)


def remembered_failures(
    records: Sequence[SuggestionRecord],
    table: pa.Table,
    summary: RunSummary,
    run_id: str,
    scored: Sequence[ScoredRun],
    settings: SuggestSettings,
    kept_worse: Sequence[ScoredRun] = (),
) -> tuple[FailedConfig, ...]:
    """Return the whole memory the guards check: failed, degraded, and worse runs.

    ``kept_worse`` are the worse runs from before a cluster shift's restart that
    ``[incumbent] shift_keeps_worse`` keeps (:class:`jpo.stage.incumbent.CampaignScores`).
    """
    failures = failed_configs(
        records, table, summary, run_id, include_degraded=settings.failed_configs.remember_degraded
    )
    worse = [*kept_worse, *worse_runs(scored, settings.incumbent)]
    return failures + tuple(FailedConfig(r.hyperparameters, "worse", r.run_id) for r in worse)
