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

The helpers ``record_*`` read audit records (:class:`jpo.stage.audit.AuditRecord`) in one place.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jpo.errors import ConfigError, TelemetryError
from jpo.stage.guards import FailedConfig
from jpo.telemetry.schema import RunSummary
from jpo.workload.types import Hyperparameters, WorkloadKey

if TYPE_CHECKING:
    import pyarrow as pa

    from jpo.stage.audit import AuditRecord
    from jpo.stage.suggest import SuggestSettings
    from jpo.telemetry.sources import MetricSource
    from jpo.workload.constraints import Constraints

__all__ = [
    "FeedbackResult",
    "failed_configs",
    "feedback",
    "last_known_good",
    "outcome_hyperparameters",
    "pending_feedback",
    "run_outcome_is_bad",
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
        from dataclasses import asdict

        return {
            "suggestion_id": self.suggestion_id,
            "run_id": self.run_id,
            "summary": asdict(self.summary),
            "reward": self.reward,
            "val_loss_change": self.val_loss_change,
            "degraded": self.degraded,
            "message": self.message,
        }


# --------------------------------------------------------------------------- record access
#
# What jpo suggest stores in AuditRecord.telemetry: {"run_id": the base run, "summary": its
# RunSummary fields, "action", "action_names", "predicted_gain", "notes"}. What feedback
# stores as the outcome: {"run_id", "summary", "reward", "reward_components",
# "val_loss_change", "degraded"}.


def _as_summary(value: Any) -> RunSummary | None:
    if not isinstance(value, dict):
        return None
    fields = RunSummary.__dataclass_fields__
    try:
        values = {k: v for k, v in value.items() if k in fields}
        for name, v in values.items():
            if v is None and name != "failure":
                values[name] = math.inf if name == "final_val_loss" else 0.0
        return RunSummary(**values)
    except TypeError:
        return None


def summary_dict(summary: RunSummary) -> dict[str, Any]:
    """Return a run summary as a JSON-ready dict (non-finite losses become None)."""
    from dataclasses import asdict

    return asdict(summary)


def record_key(record: AuditRecord) -> WorkloadKey:
    """Return the workload a record is about."""
    return record.key


def record_id(record: AuditRecord) -> str:
    """Return a record's suggestion id."""
    return str(record.suggestion_id)


def _hp(values: dict[str, float]) -> Hyperparameters | None:
    try:
        return Hyperparameters.from_mapping(values)
    except (KeyError, TypeError, ValueError):
        return None


def record_before(record: AuditRecord) -> Hyperparameters | None:
    """Return the values in place before the suggestion."""
    return _hp(record.before)


def record_after(record: AuditRecord) -> Hyperparameters | None:
    """Return the values the suggestion proposed."""
    return _hp(record.after)


def record_applied(record: AuditRecord) -> Hyperparameters | None:
    """Return the values in the file after the decision (``after`` if written, else ``before``)."""
    return record_after(record) if record.changed else record_before(record)


def outcome_hyperparameters(record: AuditRecord) -> Hyperparameters | None:
    """Return the values the outcome's run used, else those the suggestion left in the file.

    The run's own ``hp_*`` telemetry, when feedback recorded it, wins: the two differ when
    someone edited ``config.ini`` between the suggestion and the run.
    """
    outcome = record_outcome(record) or {}
    ran = outcome.get("hyperparameters")
    own = _hp(ran) if isinstance(ran, dict) else None
    return own if own is not None else record_applied(record)


def record_summary(record: AuditRecord) -> RunSummary | None:
    """Return the summary of the run the suggestion was based on."""
    return _as_summary(record.telemetry.get("summary"))


def record_run_id(record: AuditRecord) -> str:
    """Return the id of the run the suggestion was based on."""
    return str(record.telemetry.get("run_id") or "")


def record_outcome(record: AuditRecord) -> dict[str, Any] | None:
    """Return the record's outcome (None while the run is pending)."""
    return record.outcome


def outcome_summary(outcome: dict[str, Any] | None) -> RunSummary | None:
    """Return the outcome's run summary."""
    return None if outcome is None else _as_summary(outcome.get("summary"))


def outcome_degraded(outcome: dict[str, Any] | None) -> bool:
    """Return whether the outcome was marked degraded."""
    return bool(outcome and outcome.get("degraded"))


# --------------------------------------------------------------------------- decisions


def run_outcome_is_bad(record: Any, settings: SuggestSettings) -> str | None:
    """Return why a record's outcome calls for rollback (failed or degraded), else None."""
    outcome = record_outcome(record)
    if outcome is None:
        return None
    summary = outcome_summary(outcome)
    run = outcome.get("run_id") or "?"
    if summary is not None and summary.failure != "none":
        return f"run {run} with these values failed ({summary.failure})"
    if outcome_degraded(outcome):
        change = outcome.get("val_loss_change")
        how = f" by {float(change):.1%}" if isinstance(change, int | float) else ""
        return (
            f"run {run} worsened validation loss{how} (tolerance "
            f"{settings.val_loss_tolerance:.0%}, configs/suggest.toml [rollback])"
        )
    return None


def _is_good(record: Any) -> bool:
    outcome = record_outcome(record)
    if outcome is None:
        return False
    summary = outcome_summary(outcome)
    return not outcome_degraded(outcome) and (summary is None or summary.failure == "none")


def last_known_good(records: Sequence[Any]) -> Hyperparameters | None:
    """Return the newest values known to be good for a workload's records (oldest first).

    The ``after`` of the newest record whose outcome was good; failing that, the
    ``before`` of the newest record (the values in place before the bad change), unless
    those values failed too (their run, or any remembered run): then None, since rolling
    back to them would only repeat the failure.
    """
    for record in reversed(records):
        if _is_good(record):
            return record_applied(record)
    if not records:
        return None
    before = record_before(records[-1])
    base = record_summary(records[-1])
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


def failed_configs(
    records: Sequence[Any],
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
        outcome = record_outcome(record)
        applied = outcome_hyperparameters(record)
        got = outcome_summary(outcome)
        if applied is None or not outcome or got is None:
            continue
        run = str(outcome.get("run_id") or "")
        if got.failure != "none":
            out.append(FailedConfig(applied, got.failure, run))
        elif include_degraded and outcome_degraded(outcome):
            out.append(FailedConfig(applied, "degraded", run))
    if table is not None and summary is not None and summary.failure != "none":
        from jpo.learning.features import run_hyperparameters
        from jpo.telemetry.prometheus import EmptyResult

        with contextlib.suppress(EmptyResult):
            out.append(FailedConfig(run_hyperparameters(table), summary.failure, run_id))
    return tuple(out)


def _run_finished(table: pa.Table) -> bool:
    """Whether the run's latest ``run_status`` sample says it is over (not 0, running).

    Without a (finite) ``run_status`` sample it is not called running: summarize_run then
    names the missing or non-finite metric.
    """
    from jpo.telemetry.sources import RUNNING, run_status_of

    return run_status_of(table) != RUNNING


def _best_val_loss(records: Sequence[Any]) -> float:
    losses: list[float] = []
    for record in records:
        for s in (record_summary(record), outcome_summary(record_outcome(record))):
            if s is not None and s.failure == "none" and math.isfinite(s.final_val_loss):
                losses.append(s.final_val_loss)
    return min(losses) if losses else math.inf


def val_loss_change(summary: RunSummary, base: RunSummary | None) -> float:
    """Return the run's relative val-loss change vs its base run (the rollback's measure).

    0 without a usable base loss; inf for a failed run whose loss is not finite.
    """
    if base is not None and base.final_val_loss > 0 and math.isfinite(summary.final_val_loss):
        return (summary.final_val_loss - base.final_val_loss) / base.final_val_loss
    return 0.0 if summary.failure == "none" else math.inf


def score_run(
    record: Any,
    records: Sequence[Any],
    table: pa.Table,
    summary: RunSummary,
    run_id: str,
    settings: SuggestSettings,
) -> tuple[Any, FeedbackResult]:
    """Score a finished run against its suggestion; return (audit outcome, result)."""
    from jpo.learning.reward import compute_reward, load_reward_weights

    base = record_summary(record)
    best = _best_val_loss(records)
    reward = compute_reward(summary, base, best, load_reward_weights())
    change = val_loss_change(summary, base)
    degraded = summary.failure != "none" or change > settings.val_loss_tolerance
    from dataclasses import asdict

    outcome: dict[str, Any] = {
        "run_id": run_id,
        "summary": summary_dict(summary),
        "reward": reward.total,
        "reward_components": asdict(reward),
        "val_loss_change": change if math.isfinite(change) else None,
        "degraded": degraded,
    }
    from jpo.learning.features import run_hyperparameters

    with contextlib.suppress(TelemetryError):
        outcome["hyperparameters"] = run_hyperparameters(table).as_dict()
    sid = record_id(record)
    verdict = "degraded" if degraded else "ok"
    message = (
        f"feedback: run {run_id} of suggestion {sid[:12]}: reward {reward.total:+.3f}, "
        f"val loss {summary.final_val_loss:.4g} ({change:+.1%} vs. base run), {verdict}"
    )
    result = FeedbackResult(sid, run_id, summary, reward.total, change, degraded, message)
    return outcome, result


def pending_feedback(
    records: Sequence[Any],
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
    if record_outcome(record) is not None or record_run_id(record) == run_id:
        return None
    if not _run_finished(table):
        return None
    outcome, result = score_run(record, records, table, summary, run_id, settings)
    if history_root is not None:
        from jpo.telemetry.history import append_history

        append_history(history_root, table)
    audit.update_outcome(log_path, record_id(record), outcome)
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
    from jpo.stage.suggest import (
        load_suggest_settings,
        prometheus_source,
        resolve_under,
        run_summary,
    )
    from jpo.workload.config_file import read_workload

    settings = settings or load_suggest_settings(options.settings_path)
    workload = read_workload(options.config)
    key = workload.key
    log_path = options.log_path or audit.default_audit_path(options.config)
    from jpo.stage.transaction import reconcile

    reconcile(options.config, log_path, key)  # an interrupted earlier command (says so)
    if metric_source is None:
        metric_source = prometheus_source(options.prometheus_url, options.metrics_path, settings)
    table = metric_source.run_table(key, options.run_id)
    if not _run_finished(table):
        from jpo.telemetry.prometheus import RunStillRunning

        raise RunStillRunning(
            f"run {options.run_id!r} of {key.slug()} is still running (its latest run_status"
            f" is 0): rerun `jpo feedback --run-id {options.run_id}` after the run finishes"
        )
    summary, gpus, gpu_note = run_summary(
        metric_source, key, options.run_id, table, workload.jpo.device
    )
    records = [r for r in audit.read_log(log_path).records if record_key(r) == key]
    pending = [r for r in records if record_outcome(r) is None]
    if not pending:
        raise ConfigError(
            f"{log_path}: no suggestion of {key.slug()} is waiting for an outcome; run "
            f"`jpo suggest --config {options.config}` first (or pass --log)"
        )
    record = pending[-1]
    outcome, result = score_run(record, records, table, summary, options.run_id, settings)
    outcome["gpus"] = gpus
    if gpu_note:
        outcome["notes"] = [gpu_note]
    if workload.jpo.device == "gpu":  # the replay env trains on GPU workloads only
        from jpo.telemetry.history import append_history

        root = options.history_root or resolve_under(options.config, settings.history_root)
        append_history(root, table)
    audit.update_outcome(log_path, record_id(record), outcome)
    return result
