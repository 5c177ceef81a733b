"""The CI stage's last step: write config.ini (when the decision changes it) and the audit record.

:class:`DecisionWriter` ends every suggestion that reached a decision: it builds the
audit record (its :class:`~jpo.stage.record.Basis`: the run, its summary, the policy's
action, the notes), writes file and record crash-consistently
(:func:`jpo.stage.transaction.commit_change`) for CHANGED and ROLLED_BACK, appends the
record alone otherwise, and returns the :class:`~jpo.stage.result.SuggestResult`.
``--dry-run`` writes neither (and reports DRY_RUN for what would have been written).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jpo.stage import audit
from jpo.stage.record import Basis
from jpo.stage.result import SuggestOptions, SuggestResult, SuggestStatus
from jpo.workload.types import Hyperparameters, WorkloadKey

if TYPE_CHECKING:
    from jpo.policy.source import PolicyAnswer
    from jpo.stage.transaction import StepHook
    from jpo.telemetry.schema import RunSummary

__all__ = ["DecisionWriter"]


@dataclass
class DecisionWriter:
    """Ends a suggestion: writes the file (CHANGED/ROLLED_BACK) and the audit record."""

    options: SuggestOptions
    key: WorkloadKey
    current: Hyperparameters
    summary: RunSummary
    run_id: str
    notes: list[str]
    log_path: Path
    step_hook: StepHook | None = None
    answer: PolicyAnswer | None = None
    observation: Any = None
    proposed: Hyperparameters | None = None
    predicted_gain: float | None = field(default=None)

    def _basis(self) -> Basis:
        answer = self.answer
        return Basis(
            run_id=self.run_id,
            summary=self.summary,
            action=None if answer is None else list(answer.action),
            action_names=None
            if answer is None or answer.action_names is None
            else list(answer.action_names),
            predicted_gain=self.predicted_gain,
            notes=list(self.notes),
        )

    def __call__(
        self, status: SuggestStatus, message: str, *, after: Hyperparameters, reason: str
    ) -> SuggestResult:
        """Write what ``status`` calls for and return the result."""
        from jpo.stage.transaction import commit_change

        path = self.options.config
        answer = self.answer
        write = status in (SuggestStatus.CHANGED, SuggestStatus.ROLLED_BACK)
        if self.options.dry_run:
            if write:
                status, message = SuggestStatus.DRY_RUN, f"dry run: {path} not written"
            write = False
        record = audit.AuditRecord.for_change(
            self.key,
            self.current,
            after,
            reason,
            telemetry=self._basis().to_json(),
            features=[] if self.observation is None else [float(x) for x in self.observation],
            policy_version="" if answer is None else str(answer.version),
            source="" if answer is None else answer.source,
            config_path=str(path.resolve()),
            changed=write,
        )
        if write:  # config.ini and its record, crash-consistently (jpo.stage.transaction)
            done = commit_change(
                path, after, record, self.log_path, expected=self.current, step=self.step_hook
            )
            write = done.written
            self.notes.extend(done.notes)
        elif not self.options.dry_run:
            audit.append_record(self.log_path, record)
        return SuggestResult(
            status=status,
            config=path,
            message=message,
            workload=self.key,
            before=self.current,
            after=after,
            proposed=self.proposed,
            action=() if answer is None else answer.action,
            policy_version="" if answer is None else str(answer.version),
            policy_source="" if answer is None else answer.source,
            predicted_gain=self.predicted_gain,
            run_id=self.run_id,
            suggestion_id="" if self.options.dry_run else str(record.suggestion_id),
            notes=tuple(self.notes),
            written=write,
        )
