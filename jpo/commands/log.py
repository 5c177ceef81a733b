"""``jpo log``: show the audit log of suggested changes as a table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from jpo.audit import AuditRecord
    from jpo.workload import WorkloadKey


def register(app: typer.Typer) -> None:
    """Add the ``log`` command to the root CLI."""
    app.command("log")(log_command)


def _fmt(v: float) -> str:
    return f"{v:g}"


def log_command(
    path: Annotated[
        str | None,
        typer.Option(
            "--path",
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
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead.")] = False,
) -> None:
    """Show suggested changes: when, which workload, before -> after, why, outcome."""
    from rich.table import Table

    from jpo.audit import AUDIT_ENV, default_audit_path, read_log
    from jpo.console import err_console, out_console
    from jpo.errors import ConfigError
    from jpo.transaction import describe_pending

    log_path = Path(path) if path is not None else default_audit_path(config)
    log = read_log(log_path)
    if log.bad and not log.records and not log.pending:
        first = log.bad[0]  # not a damaged audit log: no line of it is one (a wrong --path?)
        raise ConfigError(
            f"{log_path}:{first.lineno}: not an audit log, no line of it is readable "
            f"({first.why}); fix: check the path (--path, --config, ${AUDIT_ENV})"
        )
    describe_pending(config, log_path, None)  # unreadable lines, interrupted writes: stderr
    every = log.records
    if workload:
        w = workload.strip()
        every = [r for r in every if w in (r.key.slug(), r.dataset, r.model, r.framework)]
    records = every[-limit:]
    if as_json:
        for r in records:
            typer.echo(r.model_dump_json())
        return
    if not records:
        err_console().print(
            f"{log_path}: no audit records" + (f" for {workload}" if workload else ""), markup=False
        )
        return
    table = Table(title=f"JPO audit log: {log_path}", title_justify="left")
    for col in ("time (UTC)", "workload", "changes", "reason", "policy", "outcome"):
        table.add_column(col, overflow="fold")
    for r in records:
        changes = [
            f"{k} {_fmt(r.before[k])}->{_fmt(v)}"
            for k, v in r.after.items()
            if k in r.before and r.before[k] != v
        ]
        outcome = "-" if r.outcome is None else ", ".join(f"{k}={v}" for k, v in r.outcome.items())
        table.add_row(
            r.timestamp.strftime("%Y-%m-%d %H:%M:%S"),
            r.key.slug(),
            "; ".join(changes) or "(unchanged)",
            r.reason,
            r.policy_version or "-",
            outcome,
        )
    out_console().print(table)
    for line in _best_runs(every, {r.key for r in records}):
        out_console().print(line, markup=False)
    err_console().print(f"{len(records)} record(s) shown", markup=False)


def _best_runs(records: Sequence[AuditRecord], keys: Iterable[WorkloadKey]) -> list[str]:
    """One line per shown workload: its best known-good run (jpo.incumbent), if scored."""
    from jpo.incumbent import best_run, scored_runs
    from jpo.suggest import load_suggest_settings

    settings = load_suggest_settings().incumbent
    lines = []
    for key in sorted(keys, key=lambda k: k.slug()):
        runs = scored_runs([r for r in records if r.key == key], settings)
        best = best_run(runs, settings)
        if len(runs) < 2 or best is None:
            continue
        values = ", ".join(f"{k}={_fmt(v)}" for k, v in best.hyperparameters.as_dict().items())
        lines.append(
            f"best known-good run of {key.slug()}: {best.run_id} ({values}), objective "
            f"{best.objective:.3f} against its first run {runs[0].run_id} "
            f"({runs[0].objective:.3f}; configs/suggest.toml [incumbent])"
        )
    return lines
