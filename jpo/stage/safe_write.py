"""Write hyperparameters back into config.ini: minimal edits, atomic, locked, backed up.

Only the value text of keys whose value changed is replaced; every other byte (comments,
inline comments such as ``; samples per step``, key order and case, blank lines, line
endings, a UTF-8 BOM) is kept, so a write with nothing changed is byte-identical and one
changed value is a one-line diff. (configupdater, the obvious tool, drops a value's inline
comment when the value is set, so the edit is done on the value's text span directly; the
line of each key comes from the same scanner ``jpo check`` uses.)

This module holds the file primitives; the write protocol that keeps config.ini, its
backup and the audit log consistent across crashes is :mod:`jpo.stage.transaction`. A plain
:func:`write_hyperparameters` (SPEC §2):

1. takes ``.jpo/locks/config.ini.lock`` (filelock) so concurrent writers queue up;
2. reads and parses the current file (it must be a valid workload file);
3. builds the new text and parses it again: text that does not read back as exactly the
   requested values is never written; a read-only file (no write bit) is refused;
4. copies the previous version to ``.jpo/backup/config.ini.bak`` (atomically);
5. writes a temp file in ``.jpo/tmp/`` (config.ini's own folder when ``.jpo/tmp`` is on
   another file system, so the rename stays atomic), fsyncs it, ``os.replace``-s it over
   the file and fsyncs the folder. A crash at any point leaves either the old or the new
   file, whole.

A symlinked config.ini is written through: the link's target is replaced (keeping the
link), and the ``.jpo/`` folder is the one beside the target (:mod:`jpo.stage.workspace`
resolves the path), so two links to one file share one lock. OS failures become a
:class:`~jpo.errors.WriteError` (exit 7) naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock
from filelock import Timeout as LockTimeout

from jpo.errors import ConfigError, WriteError
from jpo.stage.workspace import Workspace
from jpo.workload.config_file import HP_SECTION, WorkloadFile, _scan_lines, parse_workload_text
from jpo.workload.types import HYPERPARAMETER_NAMES, Hyperparameters

__all__ = [
    "PreparedWrite",
    "WriteResult",
    "atomic_write_bytes",
    "config_lock",
    "format_value",
    "modify_hyperparameters",
    "os_write_error",
    "prepare_write",
    "real_path",
    "render_hyperparameters",
    "write_hyperparameters",
]

DEFAULT_LOCK_TIMEOUT_S = 30.0
"""How long a writer waits for ``.jpo/locks/<file>.lock`` before giving up (WriteError)."""

TMP_SUFFIX = ".jpo-tmp"
"""Suffix of JPO's temp files (the next command removes any an interrupted write left)."""

_BOM = "\ufeff"
_VALUE_RE = re.compile(r"(?P<pre>[^=:]*?[=:][ \t]*)(?P<val>.*?)(?P<post>(?:[ \t]+[;#].*)?[ \t]*)")


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a write did: whether the file changed, the unified diff, the backup path."""

    path: Path
    changed: bool
    diff: str
    backup_path: Path | None


def format_value(name: str, value: float) -> str:
    """Format a value for config.ini: ints as digits, floats as the shortest round trip."""
    idx = HYPERPARAMETER_NAMES.index(name)
    if idx in (0, 2, 3):
        return str(int(value))
    v = float(value)
    if not math.isfinite(v):
        raise WriteError(f"{name} = {v!r} is not finite; refusing to write it")
    return repr(v)


def render_hyperparameters(text: str, old: WorkloadFile, new: Hyperparameters, file: str) -> str:
    """Return ``text`` with the changed [hyperparameters] values replaced, nothing else."""
    scan = _scan_lines(text, file)
    lines = text.splitlines(keepends=True)
    for name in HYPERPARAMETER_NAMES:
        before = getattr(old.hyperparameters, name)
        after = getattr(new, name)
        if float(before) == float(after):
            continue
        lineno = scan.lines.get((HP_SECTION, name))
        if lineno is None:
            raise ConfigError(f"{file}: [hyperparameters] has no {name!r} line to update")
        raw = lines[lineno - 1]
        body = raw.rstrip("\r\n")
        ending = raw[len(body) :]
        nxt = lines[lineno] if lineno < len(lines) else ""
        if nxt.strip() and nxt[0] in " \t" and nxt.strip()[0] not in "#;":
            raise ConfigError(
                f"{file}:{lineno}: {name} continues on the next line; JPO writes single-line "
                "values only (fix: put the value on one line)"
            )
        m = _VALUE_RE.fullmatch(body)
        if m is None:
            raise ConfigError(f"{file}:{lineno}: cannot locate the value of {name!r}")
        lines[lineno - 1] = m.group("pre") + format_value(name, after) + m.group("post") + ending
    return "".join(lines)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # some filesystems do not allow opening a directory; best effort
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_FIXES: dict[int, str] = {
    errno.EROFS: "the file system is mounted read-only; fix: run JPO where that folder is "
    "writable (or use --dry-run)",
    errno.EACCES: "permission denied; fix: make that folder writable for this user "
    "(chmod u+w) or run JPO as its owner",
    errno.EPERM: "operation not permitted; fix: make that folder writable for this user "
    "(chmod u+w) or run JPO as its owner",
    errno.ENOSPC: "no space left on the device; fix: free space on that volume and rerun",
    errno.EDQUOT: "disk quota exceeded; fix: free space or raise the quota and rerun",
    errno.EISDIR: "a folder stands where JPO keeps a file; fix: remove that folder",
}


def os_write_error(path: Path, err: OSError, action: str = "write") -> WriteError:
    """Return the one-line WriteError for an OS failure: the path at fault and the fix."""
    at = Path(str(err.filename)) if getattr(err, "filename", None) else path
    if err.errno == errno.ENOTDIR or isinstance(err, NotADirectoryError):
        blocker = next((p for p in at.parents if p.exists() and not p.is_dir()), None)
        where = blocker or at
        why = f"{where} is a file, not a folder; fix: remove or rename {where}"
    else:
        why = _FIXES.get(err.errno or 0) or (
            f"{err.strerror or err}; fix: check that path and its folder"
        )
        why = f"{at}: {why}" if at != path else why
    return WriteError(f"{path}: cannot {action} ({why}); the original file is unchanged")


def _tmp_dir(path: Path) -> Path:
    """Folder for ``path``'s temp files: ``.jpo/tmp/`` beside it, if on the same file system.

    A rename is atomic only within one file system; when ``.jpo/tmp`` is elsewhere (a
    mount), the temp file goes into ``path``'s own folder instead.
    """
    tmp = Workspace.for_file(path).tmp
    tmp.mkdir(parents=True, exist_ok=True)
    if os.stat(tmp).st_dev != os.stat(path.parent).st_dev:
        return path.parent
    return tmp


def temp_file_patterns(path: Path) -> tuple[Path, ...]:
    """Return glob patterns (as paths) of temp files an interrupted write of ``path`` leaves."""
    ws = Workspace.for_file(path)
    return (
        ws.tmp / f"{path.name}.*{TMP_SUFFIX}",
        path.parent / f".{path.name}.*{TMP_SUFFIX}",  # fallback folder, and JPO before .jpo/
    )


def write_temp(path: Path, data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to a fsynced temp file on ``path``'s file system; return its path.

    Raises:
        OSError: the temp file could not be written (none is left behind).
    """
    directory = _tmp_dir(path)
    prefix = f"{path.name}." if directory != path.parent else f".{path.name}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=TMP_SUFFIX, dir=directory)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if mode is not None:
            os.chmod(tmp, mode)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return Path(tmp)


def install_temp(tmp: Path, path: Path) -> None:
    """Rename the temp file over ``path`` and fsync the folder (the atomic step).

    Raises:
        OSError: the rename failed; the temp file is removed and ``path`` is unchanged.
    """
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically (temp file in ``.jpo/tmp``, fsync, rename).

    Raises:
        WriteError: on any OS error; the original file is untouched and no temp file stays.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        install_temp(write_temp(path, data, mode=mode), path)
    except OSError as err:
        raise os_write_error(path, err) from err


def real_path(path: str | os.PathLike[str]) -> Path:
    """Return the file JPO writes for ``path``: a symlink's target (the link is kept)."""
    return Path(os.path.realpath(path))


def refuse_read_only(path: Path) -> None:
    """Raise WriteError if ``path`` is read-only (no write bit, or not writable for us).

    A file without any write bit is read-only by intent, so it is refused even for root
    (who could replace it anyway).
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from err
    if mode & 0o222 == 0 or not os.access(path, os.W_OK):
        raise WriteError(
            f"{path}: the file is read-only (mode {mode & 0o777:04o}); JPO does not replace "
            f"read-only files and nothing was written (fix: `chmod u+w {path}`, or use "
            "--dry-run)"
        )


def _read_text(path: Path) -> tuple[bytes, str, bool]:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from err
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text; run `jpo check --config {path}`") from err
    bom = text.startswith(_BOM)
    return data, (text[1:] if bom else text), bom


@dataclass(frozen=True, slots=True)
class PreparedWrite:
    """A checked rewrite of config.ini, not yet on disk: old and new bytes, the diff."""

    path: Path
    """The file as named by the caller (may be a symlink)."""
    target: Path
    """The file actually replaced (a symlink's target)."""
    old: bytes
    new: bytes
    mode: int
    before: Hyperparameters
    after: Hyperparameters
    diff: str


def prepare_write(
    path: Path,
    compute: Callable[[WorkloadFile], Hyperparameters],
    *,
    expected: Hyperparameters | None = None,
) -> PreparedWrite | None:
    """Read config.ini, compute and verify its new text; None when nothing would change.

    Call it holding :func:`config_lock`. Writes nothing.

    Raises:
        ConfigError: the current file is not a valid workload file.
        WriteError: ``expected`` mismatch, a read-only file, or a rewrite that reads back wrong.
    """
    target = real_path(path)
    data, text, bom = _read_text(target)
    old = parse_workload_text(text, str(path))
    if expected is not None and old.hyperparameters != expected:
        raise WriteError(
            f"{path}: hyperparameters changed since they were read "
            f"(now {old.hyperparameters.as_dict()}, expected {expected.as_dict()}); "
            "nothing written (fix: run again)"
        )
    new = compute(old)
    new_text = render_hyperparameters(text, old, new, str(path))
    if new_text == text:
        return None
    refuse_read_only(target)
    check = parse_workload_text(new_text, str(path))
    if check.hyperparameters != new or check.key != old.key:
        raise WriteError(
            f"{path}: the rewritten text reads back as {check.hyperparameters.as_dict()}, "
            f"not {new.as_dict()}; nothing written (this is a bug: report it)"
        )
    diff = "".join(
        difflib.unified_diff(
            text.splitlines(keepends=True),
            new_text.splitlines(keepends=True),
            fromfile=f"{path} (before)",
            tofile=f"{path} (after)",
        )
    )
    return PreparedWrite(
        path=path,
        target=target,
        old=data,
        new=((_BOM if bom else "") + new_text).encode("utf-8"),
        mode=os.stat(target).st_mode & 0o7777,
        before=old.hyperparameters,
        after=new,
        diff=diff,
    )


@contextlib.contextmanager
def held_lock(lock_path: Path, timeout_s: float, *, owner: Path, what: str) -> Iterator[Path]:
    """Hold the file lock at ``lock_path`` (its folder created); yield its path.

    ``owner`` is the file the lock guards and ``what`` the lock's purpose, both named in
    the error.

    Raises:
        WriteError: the lock timed out or cannot be created (exit 7, path and fix named).
    """
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_path), timeout=timeout_s)
        lock.acquire()
    except LockTimeout as err:
        raise WriteError(
            f"{owner}: another writer held {lock_path} for {timeout_s:g}s; nothing written "
            "(fix: retry, or remove a stale lock file if no JPO process runs)"
        ) from err
    except OSError as err:
        raise os_write_error(owner, err, what) from err
    try:
        yield lock_path
    finally:
        lock.release()


@contextlib.contextmanager
def config_lock(
    path: str | os.PathLike[str], timeout_s: float = DEFAULT_LOCK_TIMEOUT_S
) -> Iterator[Path]:
    """Hold ``.jpo/locks/<name>.lock`` of config.ini's real file; yield the lock's path.

    Raises:
        WriteError: the lock timed out or cannot be created (exit 7, path and fix named).
    """
    target = real_path(path)
    lock_path = Workspace.for_config(target).lock_for(target)
    with held_lock(lock_path, timeout_s, owner=Path(path), what="take the write lock"):
        yield lock_path


def _write_locked(
    path: Path,
    compute: Callable[[WorkloadFile], Hyperparameters],
    *,
    backup: bool,
    expected: Hyperparameters | None,
) -> WriteResult:
    prepared = prepare_write(path, compute, expected=expected)
    if prepared is None:
        return WriteResult(path, False, "", None)
    backup_path: Path | None = None
    if backup:
        backup_path = Workspace.for_config(prepared.target).backup_for(prepared.target)
        atomic_write_bytes(backup_path, prepared.old, mode=prepared.mode)
    atomic_write_bytes(prepared.target, prepared.new, mode=prepared.mode)
    return WriteResult(path, True, prepared.diff, backup_path)


def modify_hyperparameters(
    path: str | os.PathLike[str],
    update: Callable[[WorkloadFile], Hyperparameters],
    *,
    backup: bool = True,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
) -> WriteResult:
    """Read, update and write config.ini under one lock (read-modify-write, no lost updates).

    Raises:
        ConfigError: the current file is not a valid workload file.
        WriteError: the lock timed out or the write failed; the file is unchanged.
    """
    p = Path(path)
    with config_lock(p, lock_timeout_s):
        return _write_locked(p, update, backup=backup, expected=None)


def write_hyperparameters(
    path: str | os.PathLike[str],
    new: Hyperparameters,
    *,
    backup: bool = True,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    expected: Hyperparameters | None = None,
) -> WriteResult:
    """Write ``new`` into config.ini's [hyperparameters], changing only what changed.

    ``expected``, when given, must equal the values currently in the file (guards against
    an edit between reading the file and writing the suggestion).

    Raises:
        ConfigError: the current file is not a valid workload file.
        WriteError: lock timeout, OS error, ``expected`` mismatch; the file is unchanged.
    """
    p = Path(path)
    with config_lock(p, lock_timeout_s):
        return _write_locked(p, lambda _old: new, backup=backup, expected=expected)
