"""``jpo train``: RLlib SAC training, resume, continuous learning and policy export."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to the root CLI."""
    app.command("train")(train_command)


def train_command(
    config: Annotated[
        Path | None, typer.Option("--config", help="Training YAML (default configs/train.yaml).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Restore the latest checkpoint first.")
    ] = False,
    continuous: Annotated[
        bool,
        typer.Option(
            "--continuous",
            help="Loop: pull history, resume, train a budget, evaluate, promote if not worse.",
        ),
    ] = False,
    stop_iters: Annotated[
        int | None, typer.Option("--stop-iters", min=1, help="Override stop.iterations.")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option("--storage", help="Override storage.path (folder or pyarrow URI)."),
    ] = None,
    export: Annotated[
        str | None, typer.Option("--export", help="Export the trained actor to this folder.")
    ] = None,
    export_only: Annotated[
        bool, typer.Option("--export-only", help="Export the latest checkpoint; do not train.")
    ] = False,
    cycles: Annotated[
        int | None, typer.Option("--cycles", min=1, help="--continuous: stop after N cycles.")
    ] = None,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="Errors only: no progress, warnings or Ray/RLlib logging."
        ),
    ] = False,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override one config key, dotted, value as YAML (repeatable): "
            "--set stop.iterations=2.",
        ),
    ] = None,
) -> None:
    """Train the SAC policy with Ray RLlib (same as `python -m jpo.train`)."""
    from jpo.console import is_quiet, quiet_libraries, set_quiet
    from jpo.train.command import run_cli

    quiet = quiet or is_quiet()
    if quiet:
        set_quiet(True)
        quiet_libraries()
    logging.basicConfig(
        level=logging.ERROR if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    summary = run_cli(
        config,
        resume=resume,
        continuous=continuous,
        stop_iters=stop_iters,
        storage=storage,
        export=export,
        export_only=export_only,
        cycles=cycles,
        overrides=overrides or (),
    )
    typer.echo(json.dumps(summary))
