"""``jpo history pull`` and ``jpo history show``: the Parquet telemetry history.

``pull`` fetches every workload's canonical metrics from Prometheus (one batched range
query per metric, chunked under the points-per-series limit) and appends them to the
store; re-pulling an overlapping range adds no duplicate rows. ``show`` summarizes what
the store holds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from jpo.cli.commands.options import MetricCatalogOption

DEFAULT_STORE = Path(".jpo/history")
"""Where the history store lives by default (same as jpo suggest / jpo.train.continuous)."""


def register(app: typer.Typer) -> None:
    """Add the ``history`` command group to the root CLI."""
    group = typer.Typer(
        help="Pull telemetry history from Prometheus into Parquet, and show what is stored.",
        no_args_is_help=True,
    )
    group.command("pull")(pull_command)
    group.command("show")(show_command)
    app.add_typer(group, name="history")


def pull_command(
    prometheus: Annotated[
        str,
        typer.Option(
            "--prometheus",
            envvar="JPO_PROMETHEUS_URL",
            help="Prometheus base URL, e.g. http://localhost:9090 (or $JPO_PROMETHEUS_URL).",
        ),
    ],
    since: Annotated[str, typer.Option("--since", help="How far back, e.g. 24h, 7d.")] = "24h",
    step: Annotated[str, typer.Option("--step", help="Sample step, e.g. 15s.")] = "15s",
    history: Annotated[
        Path | None,
        typer.Option("--history", help=f"History store folder (default {DEFAULT_STORE})."),
    ] = None,
    old_out: Annotated[
        Path | None, typer.Option("--out", hidden=True, help="Old name of --history.")
    ] = None,
    catalog: MetricCatalogOption = None,
    drop_nonfinite: Annotated[
        bool,
        typer.Option(
            "--drop-nonfinite", help="Skip NaN/Inf samples instead of failing on the first one."
        ),
    ] = False,
) -> None:
    """Fetch all workloads' metrics for the last --since at --step; append them to --history.

    Exits 4 (telemetry) when nothing matched, saying which labels it looked for and how
    many pods carried them.
    """
    from jpo.cli.commands.options import deprecated_alias
    from jpo.telemetry.history import append_history

    out = deprecated_alias(history, old_out, new="--history", old="--out") or DEFAULT_STORE
    from jpo.telemetry.promql import load_catalog, parse_duration_s
    from jpo.telemetry.sources import PrometheusSource

    since_s = parse_duration_s(since)
    step_s = parse_duration_s(step)
    if step_s <= 0 or since_s <= 0:
        from jpo.errors import ConfigError

        raise ConfigError(f"--since {since} and --step {step} must both be positive durations")
    source = PrometheusSource.from_url(
        prometheus,
        load_catalog(catalog),
        bearer_token=os.environ.get("JPO_PROMETHEUS_TOKEN") or None,
    )
    end = time.time()
    table = source.history(end - since_s, end, step_s, drop_nonfinite=drop_nonfinite)
    if table.num_rows == 0:
        from jpo.telemetry.prometheus import EmptyResult

        # exit 4 (telemetry), not 0 with 0 samples: a pipeline must notice an empty pull
        raise EmptyResult(
            f"no samples matched in the last {since}; nothing appended to {out}."
            f" {source.explain_no_runs(end - since_s, end)}"
        )
    added = append_history(out, table)
    workloads = table.group_by(["dataset", "model", "framework"]).aggregate([]).num_rows
    typer.echo(
        f"pulled {table.num_rows} samples of {workloads} workload(s) from {prometheus};"
        f" {added} new rows appended to {out}"
    )


def show_command(
    history: Annotated[
        Path | None,
        typer.Option("--history", help=f"History store folder to read (default {DEFAULT_STORE})."),
    ] = None,
    old_out: Annotated[
        Path | None, typer.Option("--out", hidden=True, help="Old name of --history.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Summarize the history store: per workload its runs, rows, metrics and time span."""
    import json

    from rich.table import Column, Table

    from jpo.cli.commands.options import deprecated_alias
    from jpo.console import out_console
    from jpo.telemetry.history import summarize_store

    out = deprecated_alias(history, old_out, new="--history", old="--out") or DEFAULT_STORE
    summary = summarize_store(out)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "root": str(summary.root),
                    "files": summary.files,
                    "bytes": summary.bytes,
                    "rows": summary.rows,
                    "workloads": [
                        {
                            "workload": w.key.slug(),
                            "runs": w.runs,
                            "rows": w.rows,
                            "metrics": list(w.metrics),
                            "first": w.first.isoformat(),
                            "last": w.last.isoformat(),
                        }
                        for w in summary.workloads
                    ],
                }
            )
        )
        return
    typer.echo(
        f"{summary.root}: {summary.rows} rows in {summary.files} file(s),"
        f" {summary.bytes / 1e6:.1f} MB, {len(summary.workloads)} workload(s)"
    )
    if not summary.workloads:
        return
    table = Table("runs", "rows", "metrics", "first", "last")
    table.columns.insert(0, Column("workload", overflow="fold"))
    for w in summary.workloads:
        table.add_row(
            w.key.slug(),
            str(w.runs),
            str(w.rows),
            str(len(w.metrics)),
            w.first.strftime("%Y-%m-%d %H:%M:%S"),
            w.last.strftime("%Y-%m-%d %H:%M:%S"),
        )
    out_console().print(table)
