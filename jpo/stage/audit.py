"""Append-only JSON-lines audit log: one record per suggested change, outcomes appended later.

Every line is one JSON object with a ``kind``:

* ``"suggestion"``: an :class:`AuditRecord` (what changed, why, on which telemetry, by which
  policy version);
* ``"outcome"``: ``{"kind": "outcome", "suggestion_id", "timestamp", "outcome"}``, written by
  ``jpo feedback`` after the training run;
* ``"intent"`` and ``"abort"``: the write protocol's journal (:mod:`jpo.stage.transaction`): an
  intent carries the suggestion record about to be applied; the record itself (or an
  abort line) completes it.

Records are appended, never edited: :func:`update_outcome` appends an outcome line, and
:func:`read_records` folds the latest outcome of each suggestion into its record. Each
append is one ``O_APPEND`` write, fsynced, done while holding the log's lock
(``.jpo/locks/audit.jsonl.lock``, :meth:`jpo.stage.workspace.Workspace.for_file`), so concurrent
appenders (CI jobs sharing a log) never interleave or lose a line; an append that fails
half-way (a full disk) is cut back to the old length.

Unreadable lines (a torn tail, garbage, non-objects, nesting deeper than
:data:`MAX_DEPTH`, numbers that overflow a float) never stop a command: :func:`read_log`
skips and reports them, and :func:`quarantine_bad_lines` (run by the commands that write)
moves them into ``.jpo/quarantine/`` and rewrites the log without them, the only rewrite
the log ever gets. :func:`read_records` stays strict (it raises ConfigError naming the
line). Parsing raises nothing but :class:`~jpo.errors.JpoError` subclasses. The default
path is ``$JPO_AUDIT_LOG`` or ``.jpo/audit.jsonl`` beside config.ini.
"""

from __future__ import annotations

import errno
import json
import math
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jpo.errors import ConfigError, WriteError
from jpo.stage.workspace import Workspace
from jpo.workload.types import Hyperparameters, WorkloadKey

__all__ = [
    "AuditLog",
    "AuditRecord",
    "BadLine",
    "Intent",
    "append_abort",
    "append_intent",
    "append_record",
    "default_audit_path",
    "log_lock",
    "quarantine_bad_lines",
    "read_log",
    "read_records",
    "update_outcome",
]

AUDIT_ENV = "JPO_AUDIT_LOG"
LOCK_TIMEOUT_S = 30.0
"""How long an appender waits for the log's lock before giving up (WriteError)."""
MAX_DEPTH = 16
"""Deepest JSON nesting an audit line may have; JPO's own lines are 4 levels deep."""
_MAX_INT = 2**63


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


@contextmanager
def log_lock(path: Path) -> Iterator[None]:
    """Hold the audit log's lock (``.jpo/locks/<log>.lock``), creating its folder.

    Raises:
        WriteError: the lock timed out or cannot be created.
    """
    from jpo.stage.safe_write import held_lock

    lock_path = Workspace.for_file(path).lock_for(path)
    with held_lock(lock_path, LOCK_TIMEOUT_S, owner=path, what="lock the audit log"):
        yield


def _dump(path: Path, payload: dict[str, Any]) -> bytes:
    try:
        line = json.dumps(_finite(payload), separators=(",", ":"), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as err:
        raise WriteError(f"{path}: audit record is not JSON-serializable: {err}") from err
    return (line + "\n").encode("utf-8")


def _append_locked(path: Path, data: bytes) -> None:
    """Append ``data`` in full or not at all (a failed write is cut back), then fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            # A previous writer killed mid-write may have left a torn last line; start on
            # a fresh line so that at most that one line is damaged.
            with path.open("rb") as fh:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    data = b"\n" + data
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                if n <= 0:
                    raise OSError(errno.ENOSPC, f"short write ({len(data) - len(view)} bytes)")
                view = view[n:]
            os.fsync(fd)
        except OSError:
            try:  # no torn line from us: back to the old length
                os.ftruncate(fd, size)
                os.fsync(fd)
            except OSError:
                pass  # the torn tail stays; the next writer quarantines it
            raise
    finally:
        os.close(fd)
    if size == 0:
        from jpo.stage.safe_write import _fsync_dir

        _fsync_dir(path.parent)  # a new log's directory entry is durable too


def _append_line(path: Path, payload: dict[str, Any]) -> None:
    from jpo.stage.safe_write import os_write_error

    data = _dump(path, payload)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise os_write_error(path, err, "append to the audit log") from err
    with log_lock(path):
        try:
            _append_locked(path, data)
        except OSError as err:
            raise os_write_error(path, err, "append to the audit log") from err


def append_record(path: str | os.PathLike[str], record: AuditRecord) -> None:
    """Append one record as one JSON line (atomic with respect to other appenders).

    Raises:
        WriteError: the log cannot be written.
    """
    _append_line(Path(path), _payload(path, record))


def _payload(path: str | os.PathLike[str], record: AuditRecord) -> dict[str, Any]:
    try:
        return record.model_dump(mode="json")
    except ValueError as err:
        raise WriteError(f"{path}: audit record cannot be serialized: {err}") from err


def append_intent(
    path: str | os.PathLike[str], record: AuditRecord, *, before_sha256: str, after_sha256: str
) -> None:
    """Append the journal line announcing that ``record``'s change is about to be written.

    Raises:
        WriteError: the log cannot be written.
    """
    payload = {
        "kind": "intent",
        "suggestion_id": str(record.suggestion_id),
        "timestamp": _now().isoformat(),
        "config_path": record.config_path,
        "before_sha256": before_sha256,
        "after_sha256": after_sha256,
        "record": _payload(path, record),
    }
    _append_line(Path(path), payload)


def append_abort(path: str | os.PathLike[str], suggestion_id: uuid.UUID, reason: str) -> None:
    """Append the journal line closing an intent whose change was not (or no longer) made.

    Raises:
        WriteError: the log cannot be written.
    """
    payload = {
        "kind": "abort",
        "suggestion_id": str(suggestion_id),
        "timestamp": _now().isoformat(),
        "reason": reason,
    }
    _append_line(Path(path), payload)


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class BadLine:
    """An audit-log line that cannot be read: its number, its bytes, why."""

    lineno: int
    raw: bytes
    why: str


@dataclass(frozen=True, slots=True)
class Intent:
    """A journal intent: the record of a change to config.ini, and the file's two hashes."""

    record: AuditRecord
    before_sha256: str
    after_sha256: str
    lineno: int


@dataclass(frozen=True, slots=True)
class AuditLog:
    """What :func:`read_log` found: records, intents still open, unreadable lines."""

    path: Path
    records: list[AuditRecord]
    pending: list[Intent]
    bad: tuple[BadLine, ...]

    def bad_summary(self) -> str:
        """Return the unreadable lines in a few words (``line 7: not valid JSON; ...``)."""
        shown = "; ".join(f"line {b.lineno}: {b.why}" for b in self.bad[:3])
        more = f"; {len(self.bad) - 3} more" if len(self.bad) > 3 else ""
        return shown + more


class _Bad(Exception):
    """One line cannot be read (internal; becomes a BadLine or a ConfigError)."""


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} overflows a float")
    return value


def _bounded_int(text: str) -> int:
    value = int(text)
    if abs(value) > _MAX_INT:
        raise ValueError(f"integer {text[:20]}... is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _depth(obj: Any) -> int:
    """Return the nesting depth of parsed JSON, stopping once beyond MAX_DEPTH."""
    deepest, stack = 0, [(obj, 1)]
    while stack and deepest <= MAX_DEPTH:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return deepest


def _parse_line(line: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(
            line,
            parse_float=_finite_float,
            parse_int=_bounded_int,
            parse_constant=_no_constant,
        )
    except RecursionError as err:
        raise _Bad(f"nested deeper than {MAX_DEPTH} levels") from err
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        why = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise _Bad(f"not valid JSON ({why})") from err
    if not isinstance(obj, dict):
        raise _Bad(f"not a JSON object (a {type(obj).__name__})")
    if _depth(obj) > MAX_DEPTH:
        raise _Bad(f"nested deeper than {MAX_DEPTH} levels")
    return obj


@dataclass
class _Fold:
    records: dict[uuid.UUID, AuditRecord]
    intents: dict[uuid.UUID, Intent]
    closed: set[uuid.UUID]


def _apply(fold: _Fold, obj: dict[str, Any], no: int) -> None:
    """Fold one parsed line into the log's state; raise _Bad if it is not a valid line."""
    kind = obj.get("kind", "suggestion")
    try:
        if kind == "suggestion":
            rec = AuditRecord.model_validate(obj)
            fold.records[rec.suggestion_id] = rec
            fold.closed.add(rec.suggestion_id)
        elif kind == "outcome":
            sid = uuid.UUID(str(obj["suggestion_id"]))
            outcome = obj["outcome"]
            if not isinstance(outcome, dict):
                raise ValueError("outcome must be an object")
            if sid in fold.records:
                fold.records[sid] = fold.records[sid].model_copy(update={"outcome": outcome})
        elif kind == "intent":
            rec = AuditRecord.model_validate(obj["record"])
            hashes = (str(obj["before_sha256"]), str(obj["after_sha256"]))
            fold.intents[rec.suggestion_id] = Intent(rec, *hashes, no)
        elif kind == "abort":
            fold.closed.add(uuid.UUID(str(obj["suggestion_id"])))
        else:
            raise ValueError(f"unknown kind {kind!r}")
    except (ValidationError, ValueError, KeyError, TypeError, OverflowError) as err:
        msg = str(err).splitlines()[0] if str(err) else repr(err)
        raise _Bad(f"invalid audit record ({msg[:160]})") from err
    except RecursionError as err:
        raise _Bad(f"nested deeper than {MAX_DEPTH} levels") from err


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return b""
    except OSError as err:
        raise ConfigError(
            f"{path}: cannot read the audit log ({err.strerror or err}); fix: check that path "
            "and its permissions"
        ) from err


def _scan(path: Path, raw: bytes, *, strict: bool) -> tuple[_Fold, list[BadLine]]:
    fold = _Fold({}, {}, set())
    bad: list[BadLine] = []
    for no, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            _apply(fold, _parse_line(line), no)
        except _Bad as err:
            if strict:
                raise ConfigError(
                    f"{path}:{no}: audit log line: {err}; fix: delete or repair that line"
                ) from err
            bad.append(BadLine(no, line, str(err)))
    return fold, bad


def read_log(path: str | os.PathLike[str]) -> AuditLog:
    """Read the log tolerantly: every readable record, open intents, and the bad lines.

    A missing file is an empty log. Never raises for the log's contents.

    Raises:
        ConfigError: the file exists but cannot be read at all.
    """
    p = Path(path)
    fold, bad = _scan(p, _read_bytes(p), strict=False)
    pending = [i for sid, i in fold.intents.items() if sid not in fold.closed]
    return AuditLog(p, list(fold.records.values()), pending, tuple(bad))


def read_records(path: str | os.PathLike[str]) -> list[AuditRecord]:
    """Return all suggestion records in file order, each with its latest outcome folded in.

    A missing file is an empty log. Strict: the commands use :func:`read_log`.

    Raises:
        ConfigError: a line is corrupt (the message names the line).
    """
    p = Path(path)
    fold, _ = _scan(p, _read_bytes(p), strict=True)
    return list(fold.records.values())


def quarantine_bad_lines(path: str | os.PathLike[str]) -> str | None:
    """Move the log's unreadable lines into ``.jpo/quarantine/``; return what was done.

    Under the log's lock: the bad lines are written (byte for byte, one per line) to
    ``.jpo/quarantine/<log>.<UTC time>.lines`` and fsynced *before* the log is atomically
    replaced by its readable lines, so a crash in between keeps them twice, never zero
    times. Returns None when every line is readable.

    Raises:
        WriteError: the quarantine or the log cannot be written (the log is unchanged).
    """
    from jpo.stage.safe_write import atomic_write_bytes, os_write_error, temp_file_patterns

    p = Path(path)
    if not read_log(p).bad:
        return None
    with log_lock(p):
        for pattern in temp_file_patterns(p):  # temps of an interrupted rewrite
            for stale in pattern.parent.glob(pattern.name):
                try:
                    stale.unlink(missing_ok=True)
                except OSError as err:
                    raise os_write_error(stale, err, "remove a stale temp file") from err
        raw = _read_bytes(p)
        _, bad = _scan(p, raw, strict=False)
        if not bad:
            return None
        drop = {b.lineno for b in bad}
        keep = [ln for no, ln in enumerate(raw.split(b"\n"), 1) if no not in drop and ln.strip()]
        stamp = _now().strftime("%Y%m%dT%H%M%S%fZ")
        target = Workspace.for_file(p).quarantine / f"{p.name}.{stamp}.lines"
        try:
            mode = os.stat(p).st_mode & 0o7777
        except OSError as err:
            raise os_write_error(p, err, "quarantine unreadable audit lines") from err
        atomic_write_bytes(target, b"".join(b.raw + b"\n" for b in bad))
        atomic_write_bytes(p, b"".join(ln + b"\n" for ln in keep), mode=mode)
    where = ", ".join(str(b.lineno) for b in bad[:5]) + (" ..." if len(bad) > 5 else "")
    return (
        f"{p}: {len(bad)} unreadable line(s) (line {where}: {bad[0].why}) moved to {target}; "
        "every readable record is kept (fix: inspect that file; nothing else to do)"
    )


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
    if not any(r.suggestion_id == sid for r in read_log(p).records):
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
