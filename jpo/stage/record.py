"""The CI stage's typed audit record: what a suggestion was based on, and what came of it.

:class:`jpo.stage.audit.AuditRecord` is the storage format (one JSON line, any JSON
objects in ``telemetry`` and ``outcome``). This module is the schema the CI stage writes
into those two objects and reads back from them:

* :class:`Basis` (stored as ``telemetry``): the run the suggestion was based on, its
  summary, the policy's action, the predicted gain, the notes;
* :class:`Outcome` (stored as ``outcome``, appended by feedback): the run that used the
  suggestion's values, its summary, reward, val-loss change, whether it degraded, the
  values it ran, its GPU count.

Every line any version of JPO wrote stays readable: a key whose value does not fit its
type reads as absent, and keys this schema does not name are kept (so a record read and
written again keeps them). :class:`SuggestionRecord` is one audit record read this way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError, field_serializer, field_validator

from jpo.stage.audit import AuditRecord, read_log
from jpo.telemetry.schema import RunSummary
from jpo.workload.types import Hyperparameters, WorkloadKey

__all__ = [
    "Basis",
    "Outcome",
    "SuggestionRecord",
    "read_suggestions",
    "suggestion_records",
    "val_loss_change",
]


def _summary(value: Any) -> RunSummary | None:
    """Read a stored run summary (JSON null for a non-finite number); None if unusable."""
    if isinstance(value, RunSummary) or value is None:
        return value
    if not isinstance(value, dict):
        return None
    fields = RunSummary.__dataclass_fields__
    values = {k: v for k, v in value.items() if k in fields}
    for name, v in values.items():
        if v is None and name != "failure":
            values[name] = math.inf if name == "final_val_loss" else 0.0
    try:
        return RunSummary(**values)
    except TypeError:
        return None


def _hyperparameters(values: dict[str, int | float] | None) -> Hyperparameters | None:
    if values is None:
        return None
    try:
        return Hyperparameters.from_mapping(values)
    except (KeyError, TypeError, ValueError):
        return None


class _Stored(BaseModel):
    """A JSON object of the audit record: typed keys, others kept, misfits read as absent."""

    model_config = ConfigDict(frozen=True, extra="allow", coerce_numbers_to_str=True)

    @field_validator("summary", mode="before", check_fields=False)
    @classmethod
    def _read_summary(cls, value: Any) -> RunSummary | None:
        return _summary(value)

    @field_serializer("summary", check_fields=False)
    def _dump_summary(self, value: RunSummary | None) -> dict[str, Any] | None:
        return None if value is None else asdict(value)

    @classmethod
    def read(cls, raw: Any) -> Self:
        """Read a stored object; a key whose value does not fit its type is dropped."""
        if not isinstance(raw, dict):
            return cls()
        try:
            return cls.model_validate(raw)
        except ValidationError as err:
            bad = {e["loc"][0] for e in err.errors() if e["loc"]}
            return cls.model_validate({k: v for k, v in raw.items() if k not in bad})

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object to store: the keys set when made (or read), no others."""
        return self.model_dump(mode="json", exclude_unset=True)


class Basis(_Stored):
    """What a suggestion was based on (the record's ``telemetry``)."""

    run_id: str = ""
    """The finished run the decision read."""
    summary: RunSummary | None = None
    """That run, condensed (:func:`jpo.learning.features.summarize_run`)."""
    action: list[int | float] | None = None
    """The policy's raw action (None when the policy was not asked)."""
    action_names: list[str] | None = None
    """The names of the action's entries (manifest ``action.names``)."""
    predicted_gain: int | float | None = None
    """Predicted throughput gain of the written values (GPU workloads)."""
    notes: list[str] = []
    """The decision's notes, in order."""


class Outcome(_Stored):
    """What the run that used a suggestion's values achieved (the record's ``outcome``)."""

    run_id: str = ""
    """The run scored."""
    summary: RunSummary | None = None
    """That run, condensed."""
    reward: int | float | None = None
    """:func:`jpo.learning.reward.compute_reward` against the base run."""
    reward_components: dict[str, int | float | None] | None = None
    """The reward's terms."""
    val_loss_change: int | float | None = None
    """Relative final val-loss change against the base run (None: not finite)."""
    degraded: bool = False
    """Failed, or val loss worse than ``[rollback] val_loss_tolerance``."""
    hyperparameters: dict[str, int | float] | None = None
    """The values the run used (its own ``hp_*`` telemetry), when it exported them."""
    gpus: int | None = None
    """The run's GPU count (``jpo feedback``)."""
    notes: list[str] | None = None
    """Notes of the scoring (e.g. an assumed GPU count)."""

    @field_validator("degraded", mode="before")
    @classmethod
    def _read_degraded(cls, value: Any) -> bool:
        return bool(value)  # as every earlier reader did: any truthy value marks it

    @property
    def failed(self) -> bool:
        """Whether the run failed (OOM, divergence, crash)."""
        return self.summary is not None and self.summary.failure != "none"

    @property
    def good(self) -> bool:
        """Whether the run is known-good: it trained and was not marked degraded."""
        return not self.degraded and not self.failed


@dataclass(frozen=True, slots=True)
class SuggestionRecord:
    """One audit record of a suggestion, read through the typed schema."""

    record: AuditRecord
    key: WorkloadKey
    suggestion_id: str
    reason: str
    changed: bool
    before: Hyperparameters | None
    """The values in config.ini before the suggestion."""
    applied: Hyperparameters | None
    """The values in the file after it (``after`` if written, else ``before``)."""
    ran: Hyperparameters | None
    """The values the outcome's run used (its own telemetry), else ``applied``."""
    basis: Basis
    outcome: Outcome | None
    """None while the run is pending."""

    @classmethod
    def of(cls, record: AuditRecord) -> SuggestionRecord:
        """Read one audit record."""
        before = _hyperparameters(record.before)
        applied = _hyperparameters(record.after) if record.changed else before
        outcome = None if record.outcome is None else Outcome.read(record.outcome)
        own = _hyperparameters(outcome.hyperparameters) if outcome is not None else None
        return cls(
            record=record,
            key=record.key,
            suggestion_id=str(record.suggestion_id),
            reason=record.reason,
            changed=record.changed,
            before=before,
            applied=applied,
            ran=own if own is not None else applied,
            basis=Basis.read(record.telemetry),
            outcome=outcome,
        )


def read_suggestions(log_path: Path, key: WorkloadKey) -> list[SuggestionRecord]:
    """Return a workload's records in the audit log, oldest first (unreadable lines skipped)."""
    return [SuggestionRecord.of(r) for r in read_log(log_path).records if r.key == key]


def suggestion_records(records: Sequence[AuditRecord]) -> list[SuggestionRecord]:
    """Read audit records through the typed schema."""
    return [SuggestionRecord.of(r) for r in records]


def val_loss_change(summary: RunSummary, base: RunSummary | None) -> float:
    """Return the run's relative val-loss change vs its base run (the rollback's measure).

    0 without a usable base loss; inf for a failed run whose loss is not finite.
    """
    if base is not None and base.final_val_loss > 0 and math.isfinite(summary.final_val_loss):
        return (summary.final_val_loss - base.final_val_loss) / base.final_val_loss
    return 0.0 if summary.failure == "none" else math.inf
