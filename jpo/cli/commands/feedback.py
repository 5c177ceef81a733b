"""``jpo feedback``: record a finished run's outcome against the suggestion behind it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from jpo.cli.commands.options import (
    AuditLogOption,
    JsonOption,
    MetricCatalogOption,
    WorkloadConfigOption,
)


def register(app: typer.Typer) -> None:
    """Add the ``feedback`` command to the root CLI."""
    app.command("feedback")(feedback_command)


def feedback_command(
    config: WorkloadConfigOption,
    run_id: Annotated[str, typer.Option("--run-id", help="The finished run (pod label run_id).")],
    prometheus: Annotated[
        str | None,
        typer.Option("--prometheus", help="Prometheus URL (default: $JPO_PROMETHEUS_URL)."),
    ] = None,
    log: AuditLogOption = None,
    history: Annotated[
        Path | None,
        typer.Option("--history", help="History store root (default: .jpo/history)."),
    ] = None,
    metrics: MetricCatalogOption = None,
    as_json: JsonOption = False,
) -> int:
    """Fetch a finished run from Prometheus, score it, store it in the history and the log.

    Exit codes as ``jpo suggest``'s for the same faults (docs/user-guide.md, "Exit codes"): any
    telemetry fault 11 (nothing recorded, config.ini unchanged), history or log not
    written 7.
    """
    from jpo.errors import NoTrustworthyTelemetry, TelemetryError
    from jpo.stage.feedback import FeedbackOptions, feedback

    try:
        result = feedback(
            FeedbackOptions(
                config=config,
                run_id=run_id,
                prometheus_url=prometheus,
                log_path=log,
                history_root=history,
                metrics_path=metrics,
            )
        )
    except TelemetryError as err:
        raise NoTrustworthyTelemetry(f"{err}; no outcome recorded, {config} unchanged") from err
    if as_json:
        typer.echo(json.dumps(result.to_json(), sort_keys=True, default=str))
    else:
        typer.echo(result.message)
        if result.degraded:
            typer.echo("the next `jpo suggest` rolls back to the last known-good values")
    return 0
