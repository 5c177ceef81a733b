"""Write hyperparameters back into config.ini: minimal edits, atomic, locked, backed up.

Only the value text of keys whose value changed is replaced; every other byte (comments,
inline comments such as ``; samples per step``, key order and case, blank lines, line
endings, a UTF-8 BOM) is kept, so a write with nothing changed is byte-identical and one
changed value is a one-line diff. (configupdater, the obvious tool, drops a value's inline
comment when the value is set, so the edit is done on the value's text span directly; the
line of each key comes from the same scanner ``jpo check`` uses.)

A write (SPEC §2):

1. takes ``<file>.lock`` (filelock) so concurrent writers queue up;
2. reads and parses the current file (it must be a valid workload file);
3. builds the new text and parses it again: text that does not read back as exactly the
   requested values is never written;
4. copies the previous version to ``<file>.bak`` (atomically);
5. writes a temp file in the same folder, fsyncs it, ``os.replace``-s it over the file and
   fsyncs the folder. A crash at any point leaves either the old or the new file, whole.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock
from filelock import Timeout as LockTimeout

from jpo.config_file import HP_SECTION, WorkloadFile, _scan_lines, parse_workload_text
from jpo.errors import ConfigError, WriteError
from jpo.workload import HYPERPARAMETER_NAMES, Hyperparameters

__all__ = [
    "WriteResult",
    "atomic_write_bytes",
    "format_value",
    "modify_hyperparameters",
    "render_hyperparameters",
    "write_hyperparameters",
]

DEFAULT_LOCK_TIMEOUT_S = 30.0
"""How long a writer waits for ``<file>.lock`` before giving up (WriteError)."""

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


def atomic_write_bytes(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically (temp file in the same folder, fsync, rename).

    Raises:
        WriteError: on any OS error; the original file is untouched and no temp file stays.
    """
    directory = path.parent
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".jpo-tmp", dir=directory)
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
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(directory)
    except OSError as err:
        raise WriteError(
            f"{path}: could not write ({err.strerror or err}); the original file is unchanged "
            "(fix: check free space and folder permissions)"
        ) from err
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _read_text(path: Path) -> tuple[bytes, str, bool]:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from err
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text; run `jpo check {path}`") from err
    bom = text.startswith(_BOM)
    return data, (text[1:] if bom else text), bom


def _write_locked(
    path: Path,
    compute: Callable[[WorkloadFile], Hyperparameters],
    *,
    backup: bool,
    expected: Hyperparameters | None,
) -> WriteResult:
    data, text, bom = _read_text(path)
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
        return WriteResult(path, False, "", None)
    check = parse_workload_text(new_text, str(path))
    if check.hyperparameters != new or check.key != old.key:
        raise WriteError(
            f"{path}: the rewritten text reads back as {check.hyperparameters.as_dict()}, "
            f"not {new.as_dict()}; nothing written (this is a bug: report it)"
        )
    out = ((_BOM if bom else "") + new_text).encode("utf-8")
    mode = os.stat(path).st_mode & 0o7777
    backup_path: Path | None = None
    if backup:
        backup_path = path.with_name(path.name + ".bak")
        atomic_write_bytes(backup_path, data, mode=mode)
    atomic_write_bytes(path, out, mode=mode)
    diff = "".join(
        difflib.unified_diff(
            text.splitlines(keepends=True),
            new_text.splitlines(keepends=True),
            fromfile=f"{path} (before)",
            tofile=f"{path} (after)",
        )
    )
    return WriteResult(path, True, diff, backup_path)


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
    lock = FileLock(str(p) + ".lock", timeout=lock_timeout_s)
    try:
        with lock:
            return _write_locked(p, update, backup=backup, expected=None)
    except LockTimeout as err:
        raise WriteError(
            f"{p}: another writer held {p}.lock for {lock_timeout_s:g}s; nothing written "
            "(fix: retry, or remove a stale lock file if no JPO process runs)"
        ) from err


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
    lock = FileLock(str(p) + ".lock", timeout=lock_timeout_s)
    try:
        with lock:
            return _write_locked(p, lambda _old: new, backup=backup, expected=expected)
    except LockTimeout as err:
        raise WriteError(
            f"{p}: another writer held {p}.lock for {lock_timeout_s:g}s; nothing written "
            "(fix: retry, or remove a stale lock file if no JPO process runs)"
        ) from err
