"""``jpo init``: prepare a workload's folder for JPO in git (the ``.gitignore`` lines).

JPO keeps its own files in ``.jpo/`` beside ``config.ini`` (:mod:`jpo.stage.workspace`). A
pipeline must keep two files between runs, committed together after each ``jpo suggest``
/ ``jpo feedback``: ``config.ini`` and ``.jpo/audit.jsonl`` (JPO's memory: rollbacks and
the return to the best run read it). Everything else in ``.jpo/`` (backups, locks,
quarantined log tails, temp files) is scratch and belongs in ``.gitignore``.

``jpo init`` appends :data:`jpo.stage.workspace.GITIGNORE_LINES` to the ``.gitignore`` in the
config's folder (git anchors ``.jpo/*`` to the folder of the ``.gitignore`` holding it),
only the lines that are missing, so running it again changes nothing. It creates no
other file and no folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["ensure_gitignore", "init_command", "register"]

HEADER = "# JPO (jpo init): keep config.ini and .jpo/audit.jsonl in git, ignore JPO's scratch files"


def register(app: typer.Typer) -> None:
    """Add the ``init`` command to the root CLI."""
    app.command("init")(init_command)


def ensure_gitignore(folder: Path) -> tuple[Path, list[str]]:
    """Append the missing JPO lines to ``folder/.gitignore``; return (file, lines added).

    Raises:
        ConfigError: the folder does not exist or the file cannot be read or written.
    """
    from jpo.errors import ConfigError
    from jpo.stage.workspace import GITIGNORE_LINES

    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder; fix: pass --config path/to/config.ini")
    path = folder / ".gitignore"
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read it ({err}); fix it by hand") from err
    present = {line.strip() for line in text.splitlines()}
    missing = [line for line in GITIGNORE_LINES if line not in present]
    if not missing:
        return path, []
    block = ([HEADER] if HEADER not in present else []) + missing
    prefix = "" if not text or text.endswith("\n") else "\n"
    try:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(prefix + "\n".join(block) + "\n")
    except OSError as err:
        raise ConfigError(f"{path}: cannot write it ({err}); fix the permissions") from err
    return path, missing


def init_command(
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            help="The workload's config.ini; its folder gets the .gitignore lines.",
        ),
    ] = Path("config.ini"),
) -> None:
    """Add JPO's lines to .gitignore beside config.ini (idempotent) and say what to commit."""
    from jpo.errors import ConfigError
    from jpo.stage.workspace import Workspace

    if not config.is_file():
        raise ConfigError(
            f"{config}: no such file; fix: run `jpo init --config path/to/config.ini` "
            "(or run it in the config's folder)"
        )
    ws = Workspace.for_config(config)
    path, added = ensure_gitignore(ws.config_dir)
    if added:
        typer.echo(f"added to {path}: {' '.join(added)}")
    else:
        typer.echo(f"{path} already has JPO's lines; nothing changed")
    typer.echo(
        f"commit after each pipeline run: {config.name} and "
        f"{ws.audit_log.relative_to(ws.config_dir)} (JPO's memory); the rest of "
        f"{ws.root.name}/ is ignored"
    )
