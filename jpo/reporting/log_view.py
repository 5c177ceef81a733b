"""``jpo log``'s compact view of the audit log: one line per suggestion, or one JSON object.

A line holds when the suggestion was made, the workload, the decision
(:func:`jpo.reporting.monitoring.decision_of`), only the values that changed as ``old->new``, the
reward of the run that used them and its verdict (``ok`` / ``degraded`` with the val-loss
change, ``pending`` while the run is not scored). Numbers are shown with a few
significant digits; the text is printed as written (no markup, no emoji codes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jpo.workload.types import HYPERPARAMETER_NAMES

if TYPE_CHECKING:
    from jpo.stage.audit import AuditRecord

__all__ = ["LogRow", "format_rows", "log_rows", "short_number"]

SHORT_NAMES = {"batch_size": "batch", "learning_rate": "lr", "num_layers": "layers"}
"""Column-friendly names of the hyperparameters (others keep their own name)."""
_COLUMNS = ("when (UTC)", "workload", "decision", "changes", "reward", "verdict")


def short_number(v: float) -> str:
    """Return a number with at most 4 significant digits (integers as integers)."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.4g}"


@dataclass(frozen=True)
class LogRow:
    """One suggestion, as ``jpo log`` shows it."""

    when: str
    workload: str
    decision: str
    changes: dict[str, tuple[float, float]]
    reward: float | None
    verdict: str
    val_loss_change: float | None
    reason: str
    suggestion_id: str
    run_id: str

    def changes_text(self) -> str:
        """Return ``batch 128->256, lr 0.01->0.02`` (or ``-`` when nothing changed)."""
        parts = [
            f"{SHORT_NAMES.get(k, k)} {short_number(old)}->{short_number(new)}"
            for k, (old, new) in self.changes.items()
        ]
        return ", ".join(parts) or "-"

    def verdict_text(self) -> str:
        """Return the verdict with the val-loss change when known."""
        if self.val_loss_change is None or self.verdict in ("-", "pending"):
            return self.verdict
        return f"{self.verdict} (val loss {self.val_loss_change:+.1%})"

    def to_json(self) -> dict[str, Any]:
        """Return the row as the JSON object ``jpo log --json`` prints (one per line)."""
        dataset, model, framework = [*self.workload.split(".", 2), "", ""][:3]
        return {
            "time": self.when,
            "workload": self.workload,
            "dataset": dataset,
            "model": model,
            "framework": framework,
            "decision": self.decision,
            "changes": {k: {"old": o, "new": n} for k, (o, n) in self.changes.items()},
            "reward": self.reward,
            "verdict": self.verdict,
            "val_loss_change": self.val_loss_change,
            "reason": self.reason,
            "suggestion_id": self.suggestion_id,
            "run_id": self.run_id,
        }


def _verdict(record: AuditRecord) -> tuple[str, float | None, float | None]:
    """Return (verdict, reward, val-loss change) of the run that used the suggestion."""
    outcome = record.outcome
    if outcome is None:
        return ("pending" if record.changed else "-"), None, None
    reward = outcome.get("reward")
    change = outcome.get("val_loss_change")
    reward_f = float(reward) if isinstance(reward, int | float) else None
    change_f = float(change) if isinstance(change, int | float) and math.isfinite(change) else None
    summary = outcome.get("summary")
    failed = isinstance(summary, dict) and summary.get("failure", "none") != "none"
    if failed:
        verdict = "failed"
    elif "degraded" in outcome:
        verdict = "degraded" if outcome.get("degraded") else "ok"
    else:
        verdict = str(outcome.get("status", "scored"))
    return verdict, reward_f, change_f


def log_rows(records: Sequence[AuditRecord]) -> list[LogRow]:
    """Return one row per suggestion record, in the log's order."""
    from jpo.reporting.monitoring import decision_of

    rows = []
    for r in records:
        changes = {
            k: (float(r.before[k]), float(r.after[k]))
            for k in HYPERPARAMETER_NAMES
            if k in r.before and k in r.after and r.before[k] != r.after[k]
        }
        changes |= {
            k: (float(r.before[k]), float(v))
            for k, v in r.after.items()
            if k not in HYPERPARAMETER_NAMES and k in r.before and r.before[k] != v
        }
        verdict, reward, change = _verdict(r)
        rows.append(
            LogRow(
                when=r.timestamp.strftime("%Y-%m-%d %H:%M"),
                workload=r.key.slug(),
                decision=decision_of(r),
                changes=changes,
                reward=reward,
                verdict=verdict,
                val_loss_change=change,
                reason=r.reason,
                suggestion_id=str(r.suggestion_id),
                run_id=str(r.telemetry.get("run_id") or ""),
            )
        )
    return rows


def format_rows(rows: Sequence[LogRow], *, reasons: bool = False) -> list[str]:
    """Return the table as plain text lines: a header, then one line per suggestion."""
    columns = list(_COLUMNS) + (["reason"] if reasons else [])
    cells = [
        [
            r.when,
            r.workload,
            r.decision,
            r.changes_text(),
            "-" if r.reward is None else f"{r.reward:+.3f}",
            r.verdict_text(),
            *([" ".join(r.reason.split())] if reasons else []),
        ]
        for r in rows
    ]
    from jpo.console import text_table

    return text_table(columns, cells, right=("reward",))
