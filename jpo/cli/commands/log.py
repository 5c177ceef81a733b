"""``jpo log``: the audit log of suggested changes as a compact table, JSON lines or a chart."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from jpo.cli.commands.options import deprecated_alias

if TYPE_CHECKING:
    from jpo.stage.audit import AuditRecord
    from jpo.workload.types import WorkloadKey


def register(app: typer.Typer) -> None:
    """Add the ``log`` command to the root CLI."""
    app.command("log")(log_command)


def log_command(
    log: Annotated[
        str | None,
        typer.Option(
            "--log",
            help="Audit log (default: $JPO_AUDIT_LOG, else .jpo/audit.jsonl beside --config).",
        ),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option("--config", help="A workload's config.ini: use the log beside it."),
    ] = None,
    workload: Annotated[
        str | None,
        typer.Option(
            "--workload",
            help="Only this workload: dataset.model.framework, or a dataset or model name.",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show the newest N records.")] = 20,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print JSON Lines: one object per suggestion (time, workload, dataset, "
            "model, framework, decision, changes {name: {old, new}}, reward, verdict, "
            "val_loss_change, reason, suggestion_id, run_id).",
        ),
    ] = False,
    reasons: Annotated[
        bool, typer.Option("--reasons", help="Add a column with each suggestion's full reason.")
    ] = False,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="Draw the workload's campaign as a PNG here (objective, GPU utilization, "
            "throughput, val loss and each hyperparameter per run; rollbacks marked). "
            "Needs --workload when the log holds several workloads.",
        ),
    ] = None,
    old_path: Annotated[
        str | None, typer.Option("--path", hidden=True, help="Old name of --log.")
    ] = None,
) -> None:
    """Show suggested changes, one line each: when, decision, changed values, reward, verdict.

    The numbers are rounded for reading; `--json` and the audit log itself keep every digit.
    """
    from jpo.console import out_console, print_note
    from jpo.errors import ConfigError
    from jpo.reporting.log_view import format_rows, log_rows
    from jpo.stage.audit import AUDIT_ENV, default_audit_path, read_log
    from jpo.stage.transaction import describe_pending

    log = deprecated_alias(log, old_path, new="--log", old="--path")
    log_path = Path(log) if log is not None else default_audit_path(config)
    parsed = read_log(log_path)
    if parsed.bad and not parsed.records and not parsed.pending:
        first = parsed.bad[0]  # not a damaged audit log: no line of it is one (a wrong --log?)
        raise ConfigError(
            f"{log_path}:{first.lineno}: not an audit log, no line of it is readable "
            f"({first.why}); fix: check the path (--log, --config, ${AUDIT_ENV})"
        )
    describe_pending(config, log_path, None)  # unreadable lines, interrupted writes: stderr
    every = parsed.records
    if workload:
        w = workload.strip()
        every = [r for r in every if w in (r.key.slug(), r.dataset, r.model, r.framework)]
    if plot is not None:
        _plot(every, plot, log_path, workload)
        return
    records = every[-limit:]
    rows = log_rows(records)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row.to_json(), sort_keys=True))
        return
    if not records:
        print_note(f"{log_path}: no audit records" + (f" for {workload}" if workload else ""))
        return
    console = out_console()
    for line in format_rows(rows, reasons=reasons):
        console.print(line, markup=False, emoji=False, highlight=False)
    for line in _best_runs(every, {r.key for r in records}):
        console.print(line, markup=False, emoji=False, highlight=False)
    print_note(f"{len(records)} of {len(every)} record(s) shown from {log_path}")


def _plot(records: Sequence[AuditRecord], out: Path, log_path: Path, workload: str | None) -> None:
    from jpo.errors import ConfigError
    from jpo.reporting.campaign import campaign_runs, plot_campaign

    keys = sorted({r.key.slug() for r in records})
    if not keys:
        raise ConfigError(
            f"{log_path}: no audit records"
            + (f" for {workload}" if workload else "")
            + "; fix: point --log at a workload's .jpo/audit.jsonl"
        )
    if len(keys) > 1:
        raise ConfigError(
            f"{log_path}: --plot draws one workload's campaign, the log holds {len(keys)} "
            f"({', '.join(keys)}); fix: add --workload NAME"
        )
    runs = campaign_runs(records)
    path = plot_campaign(runs, out, title=f"JPO campaign of {keys[0]} ({len(runs)} runs)")
    typer.echo(f"wrote {path}")


def _best_runs(records: Sequence[AuditRecord], keys: Iterable[WorkloadKey]) -> list[str]:
    """One line per shown workload: its best known-good run (jpo.stage.incumbent), if scored."""
    from jpo.reporting.log_view import short_number
    from jpo.stage.incumbent import best_run, scored_runs
    from jpo.stage.record import suggestion_records
    from jpo.stage.settings import load_suggest_settings

    settings = load_suggest_settings().incumbent
    lines = []
    for key in sorted(keys, key=lambda k: k.slug()):
        runs = scored_runs(suggestion_records([r for r in records if r.key == key]), settings)
        best = best_run(runs)
        if len(runs) < 2 or best is None:
            continue
        values = ", ".join(
            f"{k}={short_number(float(v))}" for k, v in best.hyperparameters.as_dict().items()
        )
        lines.append(
            f"best known-good run of {key.slug()}: {best.run_id} ({values}), objective "
            f"{best.objective:.3f} against its first run {runs[0].run_id} "
            f"({runs[0].objective:.3f}; configs/suggest.toml [incumbent])"
        )
    return lines
