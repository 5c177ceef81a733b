"""``jpo metrics``: JPO's own Prometheus metrics from audit logs (jpo/reporting/monitoring.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``metrics`` command to the root CLI."""
    app.command("metrics")(metrics_command)


def metrics_command(
    logs: Annotated[
        list[Path] | None,
        typer.Option(
            "--log",
            help="Audit log to export (repeatable; default: $JPO_AUDIT_LOG or .jpo/audit.jsonl).",
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=1, max=65535, help="Serve /metrics on this port until Ctrl-C."),
    ] = None,
    addr: Annotated[str, typer.Option("--addr", help="Address to listen on with --port.")] = (
        "0.0.0.0"
    ),
    textfile: Annotated[
        Path | None,
        typer.Option(
            "--textfile",
            help="Write the metrics atomically to this .prom file (node-exporter textfile "
            "collector) and exit.",
        ),
    ] = None,
) -> None:
    """Export suggestions, rollbacks, rewards and policy version as Prometheus metrics.

    Without --port or --textfile, print the metrics once on stdout.
    """
    from jpo.errors import ConfigError
    from jpo.reporting.monitoring import render_metrics, serve_metrics, write_textfile
    from jpo.stage.audit import default_audit_path

    paths = list(logs) if logs else [default_audit_path(None)]
    if port is not None and textfile is not None:
        raise ConfigError("jpo metrics: give --port or --textfile, not both")
    if textfile is not None:
        if not textfile.parent.is_dir():
            raise ConfigError(
                f"{textfile}: folder {textfile.parent} does not exist; fix: create it or "
                "point --textfile at node-exporter's --collector.textfile.directory"
            )
        write_textfile(textfile, paths)
        typer.echo(f"wrote {textfile}")
        return
    if port is None:
        typer.echo(render_metrics(paths), nl=False)
        return
    try:
        server, _thread = serve_metrics(paths, port=port, addr=addr)
    except OSError as err:
        raise ConfigError(
            f"jpo metrics: cannot listen on {addr}:{port} ({err}); fix: pick a free --port"
        ) from err
    typer.echo(f"serving JPO metrics on http://{addr}:{port}/metrics (Ctrl-C stops)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()  # type: ignore[attr-defined]
