"""``jpo demo``: the README's first command, JPO's main job end to end on embedded defaults.

Copies a few catalog workloads' ``config.ini`` into a work folder, runs each once, lets
``jpo suggest`` tune it, runs it again with the new values, records ``jpo feedback`` and
rolls back a degraded run; then prints a before/after table and where the files are
(:mod:`jpo.demo` has the details).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to the root CLI."""
    app.command("demo")(demo_command)


def demo_command(
    fast: Annotated[
        bool,
        typer.Option(
            "--fast",
            help="Two workloads, runs simulated in process and backfilled (seconds, not minutes).",
        ),
    ] = False,
    workdir: Annotated[
        Path | None,
        typer.Option(
            "--workdir",
            help="Folder for the config.ini copies, audit logs, history and Prometheus data "
            "(default: a new temporary folder, kept after the demo).",
        ),
    ] = None,
    workload: Annotated[
        list[str] | None,
        typer.Option(
            "--workload",
            help="Catalog workload to tune (repeatable; names under examples/workloads/).",
        ),
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option("--policy", help="Local policy artifact (default: the bundled policy)."),
    ] = None,
    prometheus: Annotated[
        bool | None,
        typer.Option(
            "--prometheus/--no-prometheus",
            help="Use a local Prometheus (default: when prometheus and promtool are "
            "installed), else the Parquet history store.",
        ),
    ] = None,
    live: Annotated[
        bool | None,
        typer.Option(
            "--live/--no-live",
            help="Run live simulated pods scraped every second (default: on unless --fast).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of the table.")
    ] = False,
) -> int:
    """Run JPO end to end on bundled workloads and show what it changed.

    For each workload: run it with its config.ini values, `jpo suggest` new values, run it
    again with them, `jpo feedback` the result, and roll back if the new run degraded.
    Exit codes: 0 ok, 2 invalid input (unknown workload), 4 telemetry (local Prometheus
    failed), 5 policy unusable, 1 internal error.
    """
    import tempfile

    from rich.console import Console

    from jpo.console import err_console, out_console
    from jpo.demo import check_workloads, render_table, run_demo

    names = tuple(workload) if workload else None
    if names:
        check_workloads(names)  # before the work folder is created
    root = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="jpo-demo-"))
    progress = err_console() if as_json else out_console()

    def say(line: str) -> None:
        progress.print(f"  {line}", markup=False, highlight=False, style="dim")

    progress.print(
        f"JPO demo in {root} ({'fast: in-process runs' if fast else 'live simulated pods'})",
        markup=False,
        highlight=False,
    )
    rows = run_demo(
        workdir=root,
        fast=fast,
        workloads=names,
        policy=policy,
        use_prometheus=prometheus,
        live=live,
        say=say,
    )
    if as_json:
        typer.echo(json.dumps(_to_json(root, rows), sort_keys=True, default=str))
        return 0
    console = out_console()
    console.print()
    # Piped output (CI logs, `| tee`) gets 80 columns from rich; the table needs ~130.
    table_console = console if console.is_terminal else Console(width=160, highlight=False)
    table_console.print(render_table(rows))
    console.print(
        "decision: what `jpo suggest` did to config.ini; runs: the run before -> the run "
        "with the new values; reward: `jpo feedback`'s score of the new run",
        markup=False,
        highlight=False,
    )
    console.print()
    console.print("Files (open them to see what the CI stage did):", markup=False)
    for label, path in _files(root, rows):
        console.print(f"  {label:<18} {path}", markup=False, highlight=False)
    console.print(
        "Next: `jpo log --config <config.ini>` shows a workload's audit trail; "
        "`jpo suggest --help` shows the CI stage on your own config.ini.",
        markup=False,
        highlight=False,
    )
    return 0


def _workload_files(row: Any) -> dict[str, Path]:
    """The files the CI stage wrote for one workload (only those that exist)."""
    from jpo.workspace import Workspace

    folder = row.config.parent
    workspace = Workspace.for_config(row.config)
    candidates = {
        "config": row.config,
        "backup": workspace.backup_for(row.config),
        "audit_log": workspace.audit_log,
        "history": folder / ".jpo" / "history",
    }
    return {label: path for label, path in candidates.items() if path.exists()}


def _shared_files(root: Path) -> dict[str, Path]:
    candidates = {"prometheus_data": root / "prometheus-data", "history": root / "history"}
    return {label: path for label, path in candidates.items() if path.exists()}


def _files(root: Path, rows: Any) -> list[tuple[str, Path]]:
    labels = {
        "config": "config.ini",
        "backup": "backup",
        "audit_log": "audit log",
        "history": "history",
        "prometheus_data": "Prometheus",
    }
    files: list[tuple[str, Path]] = []
    for row in rows:
        files.append((f"{row.workload}/", row.config.parent))
        files.extend((f"  {labels[k]}", p) for k, p in _workload_files(row).items())
    files.extend((labels[k], p) for k, p in _shared_files(root).items())
    return files


def _hp(hp: Any) -> dict[str, Any] | None:
    if hp is None:
        return None
    from jpo.workload import HYPERPARAMETER_NAMES

    return {name: getattr(hp, name) for name in HYPERPARAMETER_NAMES}


def _summary(s: Any) -> dict[str, Any] | None:
    if s is None:
        return None
    return {
        "gpu_util_mean": s.gpu_util_mean,
        "throughput": s.throughput,
        "final_val_loss": s.final_val_loss,
    }


def _to_json(root: Path, rows: Any) -> dict[str, Any]:
    return {
        "workdir": str(root),
        "workloads": [
            {
                "workload": r.workload,
                "files": {k: str(p) for k, p in _workload_files(r).items()},
                "decision": r.status,
                "message": r.message,
                "before": _hp(r.before),
                "after": _hp(r.after),
                "rolled_back_to": _hp(r.rolled_back_to),
                "run_before": _summary(r.summary_before),
                "run_after": _summary(r.summary_after),
                "reward": r.reward,
                "degraded": r.degraded,
                "notes": list(r.notes),
            }
            for r in rows
        ],
        "files": {k: str(p) for k, p in _shared_files(root).items()},
    }
