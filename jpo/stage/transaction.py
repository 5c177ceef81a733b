"""The write protocol of ``jpo suggest`` and ``jpo feedback``: crash-consistent by journal.

This module owns the protocol; :mod:`jpo.stage.safe_write` provides the file primitives and
:mod:`jpo.stage.audit` the log. The files (:mod:`jpo.stage.workspace`, beside config.ini's
real file)::

    config.ini                   the workload file
    .jpo/audit.jsonl             the audit log (or $JPO_AUDIT_LOG / --log)
    .jpo/backup/config.ini.bak   config.ini as it was before the latest write attempt
    .jpo/locks/                  config.ini.lock (this protocol), audit.jsonl.lock (appends)
    .jpo/tmp/                    temp files of atomic writes
    .jpo/quarantine/             unreadable audit lines set aside

**Guarantee.** A crash (kill -9, power loss on a file system that honours fsync) at any
instant leaves config.ini, its backup and the audit log consistent once the next
``jpo suggest`` or ``jpo feedback`` has started: either config.ini is unchanged and the log
holds no applied change for it, or config.ini holds the new values and the log holds their
suggestion record (``before``, ``after``, why). Nothing is lost: the old values are in the
record's ``before`` and, byte for byte, in the backup.

**A change** (:func:`commit_change`), all under ``.jpo/locks/config.ini.lock``; after each
named step the optional ``step`` callable is called with its name (:data:`STEPS`; the
fault-injection tests crash there):

1. ``"intent"``: append an intent line (the full suggestion record, and the sha256 of
   config.ini's bytes before and after) to the log and fsync it;
2. ``"backup"``: write the current bytes to ``.jpo/backup/config.ini.bak`` (temp, fsync,
   rename, fsync the folder);
3. ``"temp"``: write the new bytes to a temp file in ``.jpo/tmp/`` and fsync it;
4. ``"replace"``: rename it over config.ini (a symlink's target) and fsync the folder;
5. ``"record"``: append the suggestion record, which completes the intent.

An error (not a crash) in steps 2-4 leaves config.ini unchanged: an ``abort`` line closes
the intent. An error in step 5 (the log became unwritable) puts config.ini's old bytes
back, byte for byte, before the error is reported (exit 7). If the intent itself cannot be
appended, nothing is touched.

**Reconciliation** (:func:`reconcile`, first thing of every writing command, also under
the lock): temp files of interrupted writes are deleted; unreadable log lines are moved
to ``.jpo/quarantine/`` (:func:`jpo.stage.audit.quarantine_bad_lines`); each open intent for this
config.ini (an intent with neither its record nor an abort line) is settled by config.ini's
bytes: the *after* hash means the rename happened, so the record is appended (the change
is finished); the *before* hash means it did not, so an abort line is appended (rolled
back: there was nothing to undo); any other content (edited since) is kept and the intent
aborted. Each action is reported in one line on stderr. Reconciliation is idempotent: a
crash inside it is settled by the next one. ``--dry-run`` and ``jpo log`` write nothing:
they report open intents and unreadable lines instead.

**Not guaranteed.** Writers that bypass the lock (an editor, ``git checkout``) are not
serialized with JPO: an edit between JPO's read and its rename is caught only by the
``expected`` values check, not by the lock. On NFS and other network file systems the
locks are advisory and rename/fsync semantics are the server's; use one CI job per
workload there. A log shared by several config.ini files through ``$JPO_AUDIT_LOG`` is
reconciled per config.ini; a crash during the rewrite of a quarantined log keeps the bad
lines in both places (never in neither).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from jpo.errors import JpoError, WriteError
from jpo.stage.audit import (
    AuditRecord,
    Intent,
    append_abort,
    append_intent,
    append_record,
    quarantine_bad_lines,
    read_log,
)
from jpo.stage.safe_write import (
    config_lock,
    install_temp,
    os_write_error,
    prepare_write,
    real_path,
    temp_file_patterns,
    write_temp,
)
from jpo.stage.workspace import Workspace
from jpo.workload.types import Hyperparameters, WorkloadKey

__all__ = [
    "STEPS",
    "CommitResult",
    "StepHook",
    "commit_change",
    "describe_pending",
    "reconcile",
]

STEPS: tuple[str, ...] = ("intent", "backup", "temp", "replace", "record")
"""The named steps of a change, in order (the ``step`` callable is called after each)."""

StepHook = Callable[[str], None]
"""Called with a step's name right after the step (tests inject crashes and faults)."""


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What :func:`commit_change` did: whether config.ini changed, its backup, the notes."""

    written: bool
    backup_path: Path | None
    notes: tuple[str, ...] = field(default=())


def sha256(data: bytes) -> str:
    """Return the hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _report(message: str) -> None:
    from jpo.console import print_error

    print_error(message, prefix="warning")


def _belongs(intent: Intent, target: Path, key: WorkloadKey | None) -> bool:
    """Whether an intent is about this config.ini (its path, or its workload when moved)."""
    named = Path(intent.record.config_path) if intent.record.config_path else None
    if named is not None and real_path(named) == target:
        return True
    moved = named is None or not named.exists()  # e.g. a new CI checkout path
    return moved and key is not None and intent.record.key == key


def _settle(log: Path, intent: Intent, target: Path) -> str:
    """Finish or roll back one open intent by config.ini's current bytes; return what."""
    sid = intent.record.suggestion_id
    try:
        now = sha256(target.read_bytes())
    except OSError as err:
        raise os_write_error(target, err, "read config.ini to settle an interrupted write") from err
    if now == intent.after_sha256:
        append_record(log, intent.record)
        return (
            f"{target}: finished an interrupted write: suggestion {sid} had replaced the "
            f"file but not logged it; its record is now in {log}"
        )
    if now == intent.before_sha256:
        append_abort(log, sid, "interrupted before config.ini was replaced; nothing changed")
        return (
            f"{target}: rolled back an interrupted write: suggestion {sid} never replaced "
            f"the file, so nothing changed (closed in {log})"
        )
    append_abort(log, sid, "config.ini was edited after an interrupted write; edit kept")
    return (
        f"{target}: an interrupted write (suggestion {sid}) found config.ini edited since; "
        f"the edit is kept and the suggestion closed as not applied in {log} (the version "
        f"before it is in {Workspace.for_config(target).backup_for(target)})"
    )


def _clean_temps(target: Path) -> str | None:
    removed = []
    for pattern in (*temp_file_patterns(target), *temp_file_patterns(_backup(target))):
        for stale in sorted(pattern.parent.glob(pattern.name)):
            try:
                stale.unlink()
            except FileNotFoundError:
                continue
            except OSError as err:
                raise os_write_error(stale, err, "remove a stale temp file") from err
            removed.append(stale)
    if not removed:
        return None
    return (
        f"{target}: removed {len(removed)} temp file(s) an interrupted write left "
        f"({removed[0]}{', ...' if len(removed) > 1 else ''})"
    )


def _backup(target: Path) -> Path:
    return Workspace.for_config(target).backup_for(target)


def _has_temps(target: Path) -> bool:
    patterns = (*temp_file_patterns(target), *temp_file_patterns(_backup(target)))
    return any(any(p.parent.glob(p.name)) for p in patterns if p.parent.is_dir())


def _reconcile_locked(config: Path, log: Path, key: WorkloadKey | None) -> list[str]:
    target = real_path(config)
    notes = [n for n in (_clean_temps(target), quarantine_bad_lines(log)) if n]
    for intent in read_log(log).pending:
        if _belongs(intent, target, key):
            notes.append(_settle(log, intent, target))
    return notes


def reconcile(
    config: str | os.PathLike[str], log: str | os.PathLike[str], key: WorkloadKey | None
) -> list[str]:
    """Settle what an interrupted command left (see the module docstring); return the notes.

    Writes (and takes the lock) only when there is something to settle, so a command on a
    clean workspace in a read-only folder still runs. Each note is also printed as one
    line on stderr.

    Raises:
        WriteError: something needs settling but cannot be written (exit 7).
    """
    cfg, log_path = Path(config), Path(log)
    target = real_path(cfg)
    state = read_log(log_path)
    open_here = [i for i in state.pending if _belongs(i, target, key)]
    if not (open_here or state.bad or _has_temps(target)):
        return []
    with config_lock(cfg):
        notes = _reconcile_locked(cfg, log_path, key)
    for note in notes:
        _report(note)
    return notes


def describe_pending(
    config: str | os.PathLike[str] | None, log: str | os.PathLike[str], key: WorkloadKey | None
) -> list[str]:
    """Report (stderr, one line each) what the next writing command would settle; write nothing."""
    log_path = Path(log)
    state = read_log(log_path)
    notes = []
    if state.bad:
        notes.append(
            f"{log_path}: {len(state.bad)} unreadable line(s) skipped ({state.bad_summary()}); "
            "the next `jpo suggest` or `jpo feedback` moves them to .jpo/quarantine/"
        )
    target = real_path(config) if config is not None else None
    for intent in state.pending:
        if target is None or _belongs(intent, target, key):
            notes.append(
                f"{intent.record.config_path or log_path}: suggestion "
                f"{intent.record.suggestion_id} was interrupted while writing; the next "
                "`jpo suggest` or `jpo feedback` finishes or rolls it back"
            )
    for note in notes:
        _report(note)
    return notes


def commit_change(
    config: str | os.PathLike[str],
    after: Hyperparameters,
    record: AuditRecord,
    log: str | os.PathLike[str],
    *,
    expected: Hyperparameters,
    step: StepHook | None = None,
) -> CommitResult:
    """Write ``after`` into config.ini together with ``record`` (the protocol above).

    Raises:
        ConfigError: config.ini is no longer a valid workload file (nothing written).
        WriteError: any step failed; config.ini holds its old bytes (exit 7).
    """
    cfg, log_path = Path(config), Path(log)
    hook = step or (lambda _name: None)
    with config_lock(cfg):
        notes = _reconcile_locked(cfg, log_path, record.key)
        for note in notes:
            _report(note)
        prepared = prepare_write(cfg, lambda _old: after, expected=expected)
        if prepared is None:
            append_record(log_path, record.model_copy(update={"changed": False}))
            return CommitResult(False, None, tuple(notes))
        before_sha, after_sha = sha256(prepared.old), sha256(prepared.new)
        append_intent(log_path, record, before_sha256=before_sha, after_sha256=after_sha)
        hook("intent")
        target, backup = prepared.target, _backup(prepared.target)
        try:
            _atomic(backup, prepared.old, prepared.mode)
            hook("backup")
            tmp = _temp(target, prepared.new, prepared.mode)
            hook("temp")
            _install(tmp, target)
            hook("replace")
        except JpoError as err:
            _abort_quietly(log_path, record, f"config.ini not replaced: {err}")
            raise
        try:
            append_record(log_path, record)
        except JpoError as err:
            _put_back(target, prepared.old, prepared.mode, err)
            _abort_quietly(log_path, record, f"audit record not written: {err}")
            raise
        hook("record")
        return CommitResult(True, backup, tuple(notes))


def _atomic(path: Path, data: bytes, mode: int) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        install_temp(write_temp(path, data, mode=mode), path)
    except OSError as err:
        raise os_write_error(path, err, "write the backup") from err


def _temp(target: Path, data: bytes, mode: int) -> Path:
    try:
        return write_temp(target, data, mode=mode)
    except OSError as err:
        raise os_write_error(target, err) from err


def _install(tmp: Path, target: Path) -> None:
    try:
        install_temp(tmp, target)
    except OSError as err:
        raise os_write_error(target, err) from err


def _put_back(target: Path, old: bytes, mode: int, cause: JpoError) -> None:
    """Restore config.ini's old bytes after the record failed (a change without a record)."""
    try:
        install_temp(write_temp(target, old, mode=mode), target)
    except OSError as err:
        raise WriteError(
            f"{target}: the audit record could not be written ({cause}) and the old file "
            f"could not be put back ({err.strerror or err}); the next `jpo suggest` settles "
            "it from the journal (fix: free space / make the folder writable, then rerun)"
        ) from err


def _abort_quietly(log: Path, record: AuditRecord, reason: str) -> None:
    """Close the intent; if even that fails, reconciliation closes it later by the hashes."""
    with contextlib.suppress(JpoError):
        append_abort(log, record.suggestion_id, reason[:300])
