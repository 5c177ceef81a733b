"""Where JPO keeps its own files beside a workload's ``config.ini``: one ``.jpo/`` folder.

Layout (the folder holding ``config.ini`` is ``<dir>``)::

    <dir>/config.ini              the workload file (in git)
    <dir>/.jpo/audit.jsonl        JPO's memory: suggestions, outcomes, rollbacks (in git:
                                  a pipeline commits it together with config.ini)
    <dir>/.jpo/backup/            the previous version of each file JPO rewrote (not in git)
    <dir>/.jpo/locks/             lock files of concurrent writers (not in git)
    <dir>/.jpo/quarantine/        torn or garbled audit-log tails set aside (not in git)
    <dir>/.jpo/tmp/               temp files of atomic writes, cleaned by the next command

Only ``config.ini`` and ``.jpo/audit.jsonl`` must survive between pipeline runs;
:data:`GITIGNORE_LINES` keeps the rest out of git.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STATE_DIR_NAME = ".jpo"
"""Name of JPO's folder beside config.ini."""

AUDIT_LOG_NAME = "audit.jsonl"
"""File name of the audit log inside the state folder."""

GITIGNORE_LINES: tuple[str, ...] = (
    f"{STATE_DIR_NAME}/*",
    f"!{STATE_DIR_NAME}/{AUDIT_LOG_NAME}",
)
"""Lines a repository's ``.gitignore`` needs: ignore JPO's scratch files, keep its memory."""


@dataclass(frozen=True)
class Workspace:
    """JPO's state folder for the ``config.ini`` in ``config_dir``."""

    config_dir: Path

    @classmethod
    def for_config(cls, config_path: str | os.PathLike[str]) -> Workspace:
        """Return the workspace beside ``config_path`` (the file's folder, resolved)."""
        return cls(Path(config_path).resolve().parent)

    @classmethod
    def for_file(cls, path: str | os.PathLike[str]) -> Workspace:
        """Return the workspace serving ``path``: its folder's, or the one it lives in.

        A file in a ``.jpo/`` folder or one of its subfolders (the default audit log, a
        backup) belongs to the
        workspace of that folder's parent; any other file (config.ini, a log given by
        ``$JPO_AUDIT_LOG`` or ``--log``) to its own folder's. Every writer of one file so
        finds the same lock and temp folder, whichever config.ini it works on.
        """
        folder = Path(path).resolve().parent
        for above in (folder, folder.parent):  # .jpo/audit.jsonl, .jpo/backup/config.ini.bak
            if above.name == STATE_DIR_NAME:
                return cls(above.parent)
        return cls(folder)

    @property
    def root(self) -> Path:
        """The ``.jpo/`` folder."""
        return self.config_dir / STATE_DIR_NAME

    @property
    def audit_log(self) -> Path:
        """The audit log (kept between pipeline runs)."""
        return self.root / AUDIT_LOG_NAME

    @property
    def backups(self) -> Path:
        """Folder of previous versions of rewritten files."""
        return self.root / "backup"

    @property
    def locks(self) -> Path:
        """Folder of lock files."""
        return self.root / "locks"

    @property
    def quarantine(self) -> Path:
        """Folder where torn or garbled audit-log tails are set aside."""
        return self.root / "quarantine"

    @property
    def tmp(self) -> Path:
        """Folder of temp files of atomic writes."""
        return self.root / "tmp"

    def backup_for(self, path: str | os.PathLike[str]) -> Path:
        """Return the backup path of ``path`` (``.jpo/backup/<name>.bak``)."""
        return self.backups / f"{Path(path).name}.bak"

    def lock_for(self, path: str | os.PathLike[str]) -> Path:
        """Return the lock-file path guarding ``path`` (``.jpo/locks/<name>.lock``)."""
        return self.locks / f"{Path(path).name}.lock"
