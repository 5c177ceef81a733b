"""What one ``jpo suggest`` is asked (:class:`SuggestOptions`) and did (:class:`SuggestResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from jpo.errors import ExitCode
from jpo.workload.types import HYPERPARAMETER_NAMES, Hyperparameters, WorkloadKey

__all__ = ["SuggestOptions", "SuggestResult", "SuggestStatus"]


class SuggestStatus(StrEnum):
    """What ``jpo suggest`` decided; each maps to one documented exit code."""

    CHANGED = "changed"
    ROLLED_BACK = "rolled_back"
    DRY_RUN = "dry_run"
    UNCHANGED = "unchanged"
    NO_DATA = "no_data"
    NEEDS_APPROVAL = "needs_approval"
    POLICY_UNAVAILABLE = "policy_unavailable"


_EXIT: dict[SuggestStatus, ExitCode] = {
    SuggestStatus.CHANGED: ExitCode.OK,
    SuggestStatus.ROLLED_BACK: ExitCode.OK,
    SuggestStatus.DRY_RUN: ExitCode.OK,
    SuggestStatus.UNCHANGED: ExitCode.UNCHANGED_BY_CHOICE,
    SuggestStatus.NO_DATA: ExitCode.UNCHANGED_NO_DATA,
    SuggestStatus.NEEDS_APPROVAL: ExitCode.NEEDS_APPROVAL,
    SuggestStatus.POLICY_UNAVAILABLE: ExitCode.POLICY,
}


@dataclass(frozen=True, slots=True)
class SuggestOptions:
    """Inputs of one ``jpo suggest`` (the command-line flags)."""

    config: Path
    prometheus_url: str | None = None
    endpoint: str | None = None
    policy_path: Path | None = None
    fallback_local: bool | None = None
    dry_run: bool = False
    approve: bool = False
    log_path: Path | None = None
    settings_path: Path | None = None
    constraints_path: Path | None = None
    metrics_path: Path | None = None


@dataclass(frozen=True, slots=True)
class SuggestResult:
    """What ``jpo suggest`` did, for the console, ``--json`` and tests."""

    status: SuggestStatus
    config: Path
    message: str
    workload: WorkloadKey | None = None
    before: Hyperparameters | None = None
    after: Hyperparameters | None = None
    proposed: Hyperparameters | None = None
    action: tuple[float, ...] = ()
    policy_version: str = ""
    policy_source: str = ""
    predicted_gain: float | None = None
    run_id: str = ""
    suggestion_id: str = ""
    notes: tuple[str, ...] = field(default=())
    written: bool = False

    @property
    def exit_code(self) -> ExitCode:
        """The documented exit code of this outcome."""
        return _EXIT[self.status]

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict (``jpo suggest --json``)."""

        def hp(value: Hyperparameters | None) -> dict[str, Any] | None:
            return None if value is None else value.as_dict()

        return {
            "status": self.status.value,
            "exit_code": int(self.exit_code),
            "config": str(self.config),
            "message": self.message,
            "workload": None if self.workload is None else self.workload.slug(),
            "before": hp(self.before),
            "after": hp(self.after),
            "proposed": hp(self.proposed),
            "action": list(self.action),
            "policy_version": self.policy_version,
            "policy_source": self.policy_source,
            "predicted_gain": self.predicted_gain,
            "run_id": self.run_id,
            "suggestion_id": self.suggestion_id,
            "notes": list(self.notes),
            "written": self.written,
        }

    def diff(self) -> list[tuple[str, Any, Any]]:
        """Return (name, before, after) for every parameter that changes."""
        if self.before is None or self.after is None:
            return []
        old, new = self.before.as_dict(), self.after.as_dict()
        return [(n, old[n], new[n]) for n in HYPERPARAMETER_NAMES if old[n] != new[n]]
