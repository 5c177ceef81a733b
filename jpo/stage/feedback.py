"""Feedback: what a finished run achieved, scored against the suggestion that produced it.

``jpo feedback --config PATH --run-id ID`` (and ``jpo suggest`` automatically, when the
previous suggestion has no outcome yet) fetches the run from Prometheus, condenses it with
:func:`jpo.learning.features.summarize_run` (the same code as training), scores it with
:func:`jpo.learning.reward.compute_reward` against the run the suggestion was based on, appends the
run to the Parquet history and stores the outcome on the suggestion's audit record.
It first settles what an interrupted earlier command left (:func:`jpo.stage.transaction.reconcile`).
Its writes are crash-safe one by one: the history append skips rows already stored, and
the outcome is one appended line, so a crash in between is repaired by running the same
``jpo feedback`` again (a torn outcome line is quarantined, the suggestion stays pending).

An outcome is *bad* — and the next ``jpo suggest`` rolls back to the last known-good
values — when the run failed (OOM, divergence, crash) or its final validation loss is
worse than the base run's by more than ``[rollback] val_loss_tolerance``
(``configs/suggest.toml``).

The outcome is a typed :class:`jpo.stage.record.Outcome`; what it calls for next is
:mod:`jpo.stage.rollback`'s decision.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jpo.errors import ConfigError, TelemetryError
from jpo.stage import run_telemetry
from jpo.stage.failure_memory import failed_configs
from jpo.stage.record import Outcome, SuggestionRecord, read_suggestions, val_loss_change
from jpo.stage.settings import SuggestSettings, load_suggest_settings
from jpo.telemetry.schema import RunSummary

if TYPE_CHECKING:
    import pyarrow as pa

    from jpo.telemetry.sources import MetricSource

__all__ = [
    "FeedbackOptions",
    "FeedbackResult",
    "failed_configs",
    "feedback",
    "pending_feedback",
    "score_run",
    "val_loss_change",
]


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    """What one feedback did: the run, its reward, whether it degraded, the record."""

    suggestion_id: str
    run_id: str
    summary: RunSummary
    reward: float
    val_loss_change: float
    degraded: bool
    message: str

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict (``jpo feedback --json``)."""
        return {
            "suggestion_id": self.suggestion_id,
            "run_id": self.run_id,
            "summary": asdict(self.summary),
            "reward": self.reward,
            "val_loss_change": self.val_loss_change,
            "degraded": self.degraded,
            "message": self.message,
        }


def _best_val_loss(records: Sequence[SuggestionRecord]) -> float:
    losses: list[float] = []
    for record in records:
        outcome = record.outcome.summary if record.outcome is not None else None
        for s in (record.basis.summary, outcome):
            if s is not None and s.failure == "none" and math.isfinite(s.final_val_loss):
                losses.append(s.final_val_loss)
    return min(losses) if losses else math.inf


def score_run(
    record: SuggestionRecord,
    records: Sequence[SuggestionRecord],
    table: pa.Table,
    summary: RunSummary,
    run_id: str,
    settings: SuggestSettings,
) -> tuple[Outcome, FeedbackResult]:
    """Score a finished run against its suggestion; return (audit outcome, result)."""
    from jpo.learning.features import run_hyperparameters
    from jpo.learning.reward import compute_reward, load_reward_weights

    base = record.basis.summary
    reward = compute_reward(summary, base, _best_val_loss(records), load_reward_weights())
    change = val_loss_change(summary, base)
    degraded = summary.failure != "none" or change > settings.rollback.val_loss_tolerance
    ran: dict[str, Any] = {}
    with contextlib.suppress(TelemetryError):
        ran["hyperparameters"] = run_hyperparameters(table).as_dict()
    outcome = Outcome(
        run_id=run_id,
        summary=summary,
        reward=reward.total,
        reward_components=asdict(reward),
        val_loss_change=change if math.isfinite(change) else None,
        degraded=degraded,
        **ran,
    )
    sid = record.suggestion_id
    verdict = "degraded" if degraded else "ok"
    message = (
        f"feedback: run {run_id} of suggestion {sid[:12]}: reward {reward.total:+.3f}, "
        f"val loss {summary.final_val_loss:.4g} ({change:+.1%} vs. base run), {verdict}"
    )
    result = FeedbackResult(sid, run_id, summary, reward.total, change, degraded, message)
    return outcome, result


def pending_feedback(
    records: Sequence[SuggestionRecord],
    table: pa.Table,
    summary: RunSummary,
    run_id: str,
    *,
    log_path: Path,
    history_root: Path | None,
    settings: SuggestSettings,
) -> FeedbackResult | None:
    """Record the latest run as the outcome of the newest suggestion still without one.

    Does nothing when there is no pending suggestion, when the latest run is the one the
    suggestion was based on (the workload has not run since), or when it is still running.
    """
    from jpo.stage import audit

    if not records:
        return None
    record = records[-1]
    if record.outcome is not None or record.basis.run_id == run_id:
        return None
    if not run_telemetry.run_finished(table):
        return None
    outcome, result = score_run(record, records, table, summary, run_id, settings)
    if history_root is not None:
        from jpo.telemetry.history import append_history

        append_history(history_root, table)
    audit.update_outcome(log_path, record.suggestion_id, outcome.to_json())
    return result


# --------------------------------------------------------------------------- command


@dataclass(frozen=True, slots=True)
class FeedbackOptions:
    """Inputs of ``jpo feedback``."""

    config: Path
    run_id: str
    prometheus_url: str | None = None
    log_path: Path | None = None
    history_root: Path | None = None
    settings_path: Path | None = None
    metrics_path: Path | None = None


def feedback(
    options: FeedbackOptions,
    *,
    metric_source: MetricSource | None = None,
    settings: SuggestSettings | None = None,
) -> FeedbackResult:
    """Record a finished run's outcome on its suggestion and in the history store.

    The suggestion is the newest audit record of the workload without an outcome (the one
    whose values the run used). Raises TelemetryError when the run cannot be read and
    ConfigError when there is no suggestion to attach it to.
    """
    from jpo.stage import audit
    from jpo.stage.transaction import reconcile
    from jpo.workload.config_file import read_workload

    settings = settings or load_suggest_settings(options.settings_path)
    workload = read_workload(options.config)
    key = workload.key
    log_path = options.log_path or audit.default_audit_path(options.config)
    reconcile(options.config, log_path, key)  # an interrupted earlier command (says so)
    if metric_source is None:
        metric_source = run_telemetry.prometheus_source(
            options.prometheus_url, options.metrics_path, settings
        )
    table = metric_source.run_table(key, options.run_id)
    if not run_telemetry.run_finished(table):
        from jpo.telemetry.prometheus import RunStillRunning

        raise RunStillRunning(
            f"run {options.run_id!r} of {key.slug()} is still running (its latest run_status"
            f" is 0): rerun `jpo feedback --run-id {options.run_id}` after the run finishes"
        )
    summary, gpus, gpu_note = run_telemetry.run_summary(
        metric_source, key, options.run_id, table, workload.jpo.device
    )
    records = read_suggestions(log_path, key)
    pending = [r for r in records if r.outcome is None]
    if not pending:
        raise ConfigError(
            f"{log_path}: no suggestion of {key.slug()} is waiting for an outcome; run "
            f"`jpo suggest --config {options.config}` first (or pass --log)"
        )
    record = pending[-1]
    outcome, result = score_run(record, records, table, summary, options.run_id, settings)
    scored: dict[str, Any] = {"gpus": gpus, **({"notes": [gpu_note]} if gpu_note else {})}
    outcome = outcome.model_copy(update=scored)
    if workload.jpo.device == "gpu":  # the replay env trains on GPU workloads only
        from jpo.telemetry.history import append_history

        root = options.history_root or run_telemetry.history_root(options.config, settings)
        append_history(root, table)
    audit.update_outcome(log_path, record.suggestion_id, outcome.to_json())
    return result
