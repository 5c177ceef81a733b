"""Append-only JSON-lines audit log: one record per suggested change, outcomes appended later.

Every line is one JSON object with a ``kind``:

* ``"suggestion"``: an :class:`AuditRecord` (what changed, why, on which telemetry, by which
  policy version);
* ``"outcome"``: ``{"kind": "outcome", "suggestion_id", "timestamp", "outcome"}``, written by
  ``jpo feedback`` after the training run.

The file is never rewritten: :func:`update_outcome` appends an outcome line, and
:func:`read_records` folds the latest outcome of each suggestion into its record. Each
append is a single ``write(2)`` on an ``O_APPEND`` descriptor, done while holding
``<log>.lock``, so concurrent appenders (CI jobs sharing a log) never interleave or lose a
line. The default path is ``$JPO_AUDIT_LOG`` or ``.jpo/audit.jsonl`` beside config.ini.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock
from filelock import Timeout as LockTimeout
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jpo.errors import ConfigError, WriteError
from jpo.workload import Hyperparameters, WorkloadKey

__all__ = [
    "AuditRecord",
    "append_record",
    "default_audit_path",
    "read_records",
    "update_outcome",
]

AUDIT_ENV = "JPO_AUDIT_LOG"
LOCK_TIMEOUT_S = 30.0
"""How long an appender waits for ``<log>.lock`` before giving up (WriteError)."""


def _now() -> datetime:
    return datetime.now(UTC)


class AuditRecord(BaseModel):
    """One suggested change of a workload's hyperparameters, and later its outcome."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["suggestion"] = "suggestion"
    suggestion_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    """Unique id; ``jpo feedback`` refers to it."""
    timestamp: datetime = Field(default_factory=_now)
    """When the suggestion was made (UTC)."""
    dataset: str
    model: str
    framework: str
    before: dict[str, float]
    """Hyperparameters read from config.ini."""
    after: dict[str, float]
    """Hyperparameters written (equal to ``before`` when nothing changed)."""
    reason: str
    """Why: policy action, rollback, hysteresis, no data, ..."""
    telemetry: dict[str, Any] = Field(default_factory=dict)
    """Snapshot of the run summary the decision was based on."""
    features: list[float] = Field(default_factory=list)
    """The observation vector given to the policy."""
    policy_version: str = ""
    """Policy artifact version or checksum."""
    source: str = ""
    """Where the decision came from: local artifact path, Serve URL, baseline name."""
    config_path: str = ""
    """The config.ini that was (or would have been) written."""
    changed: bool = False
    """Whether config.ini was written."""
    outcome: dict[str, Any] | None = None
    """Filled in by ``jpo feedback`` (folded in from outcome lines by :func:`read_records`)."""

    @property
    def key(self) -> WorkloadKey:
        """Return the workload key."""
        return WorkloadKey(self.dataset, self.model, self.framework)

    @classmethod
    def for_change(
        cls,
        key: WorkloadKey,
        before: Hyperparameters,
        after: Hyperparameters,
        reason: str,
        **fields: Any,
    ) -> AuditRecord:
        """Build a record from typed values (the usual way to make one)."""
        return cls(
            dataset=key.dataset,
            model=key.model,
            framework=key.framework,
            before={k: float(v) for k, v in before.as_dict().items()},
            after={k: float(v) for k, v in after.as_dict().items()},
            reason=reason,
            **fields,
        )


def default_audit_path(config_path: str | os.PathLike[str] | None = None) -> Path:
    """Return ``$JPO_AUDIT_LOG``, else ``.jpo/audit.jsonl`` beside config.ini (or the cwd)."""
    env = os.environ.get(AUDIT_ENV)
    if env:
        return Path(env)
    base = Path(config_path).resolve().parent if config_path is not None else Path.cwd()
    return base / ".jpo" / "audit.jsonl"


def _finite(obj: Any) -> Any:
    """Replace NaN/Inf floats by None (JSON has no such numbers; missing data stays visible)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _append_line(path: Path, payload: dict[str, Any]) -> None:
    try:
        line = json.dumps(_finite(payload), separators=(",", ":"), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise WriteError(f"{path}: audit record is not JSON-serializable: {err}") from err
    data = (line + "\n").encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S):
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                # A previous writer killed mid-write may have left a torn last line; start on
                # a fresh line so that at most that one line is damaged.
                size = os.fstat(fd).st_size
                if size:
                    with path.open("rb") as fh:
                        fh.seek(size - 1)
                        if fh.read(1) != b"\n":
                            data = b"\n" + data
                n = os.write(fd, data)
                if n != len(data):
                    raise OSError(f"short write ({n} of {len(data)} bytes)")
                os.fsync(fd)
            finally:
                os.close(fd)
    except LockTimeout as err:
        raise WriteError(
            f"{path}: audit log lock {path}.lock busy for {LOCK_TIMEOUT_S:g}s "
            "(fix: retry; remove a stale lock if no JPO process runs)"
        ) from err
    except OSError as err:
        parent = next((p for p in path.parents if p.exists()), None)
        why = (
            f"{parent} is a file, not a folder"
            if parent is not None and not parent.is_dir()
            else str(err)
        )
        raise WriteError(
            f"{path}: cannot append to the audit log ({why}); pass a writable --log path or"
            f" set {AUDIT_ENV}"
        ) from err


def append_record(path: str | os.PathLike[str], record: AuditRecord) -> None:
    """Append one record as one JSON line (atomic with respect to other appenders).

    Raises:
        WriteError: the log cannot be written.
    """
    try:
        payload = record.model_dump(mode="json")
    except ValueError as err:
        raise WriteError(f"{path}: audit record cannot be serialized: {err}") from err
    _append_line(Path(path), payload)


def _read_lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the audit log ({err})") from err
    out: list[tuple[int, dict[str, Any]]] = []
    for no, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(
                f"{path}:{no}: audit log line is not valid JSON ({err}); "
                "fix: delete or repair that line"
            ) from err
        if not isinstance(obj, dict):
            raise ConfigError(f"{path}:{no}: audit log line is not a JSON object; fix that line")
        out.append((no, obj))
    return out


def read_records(path: str | os.PathLike[str]) -> list[AuditRecord]:
    """Return all suggestion records in file order, each with its latest outcome folded in.

    A missing file is an empty log.

    Raises:
        ConfigError: a line is corrupt (the message names the line).
    """
    p = Path(path)
    records: dict[uuid.UUID, AuditRecord] = {}
    for no, obj in _read_lines(p):
        kind = obj.get("kind", "suggestion")
        try:
            if kind == "suggestion":
                rec = AuditRecord.model_validate(obj)
                records[rec.suggestion_id] = rec
            elif kind == "outcome":
                sid = uuid.UUID(str(obj["suggestion_id"]))
                outcome = obj["outcome"]
                if not isinstance(outcome, dict):
                    raise ValueError("outcome must be an object")
                if sid in records:
                    records[sid] = records[sid].model_copy(update={"outcome": outcome})
            else:
                raise ValueError(f"unknown kind {kind!r}")
        except (ValidationError, ValueError, KeyError) as err:
            msg = str(err).splitlines()[0] if str(err) else repr(err)
            raise ConfigError(
                f"{p}:{no}: invalid audit record ({msg}); fix: delete or repair that line"
            ) from err
    return list(records.values())


def update_outcome(
    path: str | os.PathLike[str], suggestion_id: uuid.UUID | str, outcome: dict[str, Any]
) -> None:
    """Record the outcome of a suggestion by appending an outcome line (never rewrites).

    Raises:
        ConfigError: no suggestion with that id is in the log.
        WriteError: the log cannot be written.
    """
    p = Path(path)
    try:
        sid = uuid.UUID(str(suggestion_id))
    except ValueError as err:
        raise ConfigError(f"{suggestion_id!r} is not a suggestion id (a UUID)") from err
    if not any(r.suggestion_id == sid for r in read_records(p)):
        raise ConfigError(
            f"{p}: no suggestion {sid} in the audit log; fix: pass an id from `jpo log`"
        )
    payload = {
        "kind": "outcome",
        "suggestion_id": str(sid),
        "timestamp": _now().isoformat(),
        "outcome": outcome,
    }
    _append_line(p, payload)
