"""``jpo demo``: the README's first command, JPO's main job end to end on embedded defaults.

Copies a few catalog workloads' ``config.ini`` into a work folder and runs a short tuning
campaign on each: run, ``jpo suggest``, run again with the new values, ``jpo feedback``,
suggest again (rollback of a degraded run, return to the best), ``--rounds`` times; then
prints each campaign round by round, where it ended, its PNG chart and where the files
are (:mod:`jpo.cli.demo` has the details).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from jpo.cli.demo import DEFAULT_ROUNDS, MAX_ROUNDS


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
    rounds: Annotated[
        int,
        typer.Option(
            "--rounds",
            min=1,
            max=MAX_ROUNDS,
            help="Runs per campaign (each run is followed by jpo feedback and jpo suggest).",
        ),
    ] = DEFAULT_ROUNDS,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of the tables.")
    ] = False,
) -> int:
    """Run a short JPO tuning campaign on bundled workloads and show how it went.

    For each workload, --rounds times: run it with its config.ini values, `jpo feedback`
    scores the run, `jpo suggest` writes the next values (a new step, a rollback of a
    degraded run, or a return to the campaign's best run). Shows the runs round by round,
    the best run, what config.ini holds at the end, and a PNG chart per campaign.
    Exit codes: 0 ok, 2 invalid input (unknown workload), 4 telemetry (local Prometheus
    failed), 5 policy unusable, 1 internal error.
    """
    import tempfile

    from jpo.cli.demo import check_workloads, render_campaign, run_demo
    from jpo.console import err_console, is_quiet, out_console

    names = tuple(workload) if workload else None
    if names:
        check_workloads(names)  # before the work folder is created
    root = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="jpo-demo-"))
    progress = err_console() if as_json else out_console()

    def say(line: str) -> None:
        if not is_quiet():
            progress.print(f"  {line}", style="dim")

    if not is_quiet():
        mode = "fast: in-process runs" if fast else "live simulated pods"
        progress.print(f"JPO demo in {root} ({mode}, {rounds} runs per workload)")
    rows = run_demo(
        workdir=root,
        fast=fast,
        workloads=names,
        policy=policy,
        use_prometheus=prometheus,
        live=live,
        rounds=rounds,
        say=say,
    )
    if as_json:
        typer.echo(json.dumps(_to_json(root, rows), sort_keys=True, default=str))
        return 0
    console = out_console()
    for row in rows:
        console.print()
        for line in render_campaign(row):
            console.print(line)
    console.print()
    console.print(
        "run: * = the best known-good run; objective: vs run 1 (jpo.learning.reward, the score the "
        "return to the best uses); reward and verdict: `jpo feedback`'s score of the run; "
        "then jpo suggest: what the CI stage did to config.ini after the run"
    )
    console.print()
    console.print("Files (open them to see what the CI stage did):")
    for label, path in _files(root, rows):
        console.print(f"  {label:<18} {path}")
    console.print(
        "Next: `jpo log --config <config.ini>` shows a workload's audit trail, "
        "`jpo log --config <config.ini> --plot chart.png` draws it; "
        "`jpo suggest --help` shows the CI stage on your own config.ini."
    )
    return 0


def _workload_files(row: Any) -> dict[str, Path]:
    """The files the CI stage wrote for one workload (only those that exist)."""
    from jpo.stage.workspace import Workspace

    ws = Workspace.for_config(row.config)
    candidates = {
        "config": row.config,
        "backup": ws.backup_for(row.config),
        "audit_log": ws.audit_log,
        "history": ws.root / "history",
        "chart": row.chart,
    }
    return {label: path for label, path in candidates.items() if path and path.exists()}


def _shared_files(root: Path) -> dict[str, Path]:
    candidates = {"prometheus_data": root / "prometheus-data", "history": root / "history"}
    return {label: path for label, path in candidates.items() if path.exists()}


def _files(root: Path, rows: Any) -> list[tuple[str, Path]]:
    labels = {
        "config": "config.ini",
        "backup": "backup",
        "audit_log": "audit log",
        "history": "history",
        "chart": "chart",
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
    from jpo.workload.types import HYPERPARAMETER_NAMES

    return {name: getattr(hp, name) for name in HYPERPARAMETER_NAMES}


def _run_json(run: Any) -> dict[str, Any]:
    return {
        "run": run.index,
        "run_id": run.run_id,
        "hyperparameters": _hp(run.hyperparameters),
        "gpu_util": run.gpu_util,
        "throughput": run.throughput,
        "val_loss": run.val_loss,
        "objective": run.objective,
        "reward": run.reward,
        "verdict": run.verdict,
        "decision": run.decision,
    }


def _to_json(root: Path, rows: Any) -> dict[str, Any]:
    return {
        "workdir": str(root),
        "workloads": [
            {
                "workload": r.workload,
                "files": {k: str(p) for k, p in _workload_files(r).items()},
                "before": _hp(r.before),
                "final": _hp(r.final),
                "runs": [_run_json(run) for run in r.runs],
                "best_run": None if r.best is None else r.best.index,
                "decisions": list(r.decisions),
                "notes": list(r.notes),
            }
            for r in rows
        ],
        "files": {k: str(p) for k, p in _shared_files(root).items()},
    }
