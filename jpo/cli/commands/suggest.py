"""``jpo suggest``: the CI stage (read config.ini, ask the policy, guard, write, audit).

Exit codes (docs/user-guide.md, "Exit codes"): 0 changed (or --dry-run), 10 unchanged by choice,
11 unchanged: no trustworthy telemetry, 12 needs approval, 2 invalid input, 3 validation
failed, 5 policy unusable (endpoint down and no local fallback), 7 write failed, 8 the
endpoint refused the token (never hidden by --fallback-local), 1 internal error.
"""

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
    """Add the ``suggest`` command to the root CLI."""
    app.command("suggest")(suggest_command)


def suggest_command(
    config: WorkloadConfigOption,
    prometheus: Annotated[
        str | None,
        typer.Option(
            "--prometheus",
            help="Prometheus URL (default: $JPO_PROMETHEUS_URL, else configs/suggest.toml).",
        ),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option("--endpoint", help="Serve endpoint base URL, e.g. http://jpo:8000."),
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option("--policy", help="Local policy artifact (default: the bundled policy)."),
    ] = None,
    fallback_local: Annotated[
        bool | None,
        typer.Option(
            "--fallback-local/--no-fallback-local",
            help="If the endpoint fails, use the local policy (default: configs/suggest.toml).",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the change; write nothing.")
    ] = False,
    approve: Annotated[
        bool, typer.Option("--approve", help="Allow a change above the approval threshold.")
    ] = False,
    log: AuditLogOption = None,
    settings: Annotated[
        Path | None, typer.Option("--settings", help="Settings TOML (configs/suggest.toml).")
    ] = None,
    metrics: MetricCatalogOption = None,
    as_json: JsonOption = False,
) -> int:
    """Suggest new hyperparameters for a workload and write them into its config.ini.

    Exit codes: 0 changed (or --dry-run), 10 unchanged by choice (hysteresis, guards,
    waiting for a run with the last values), 11 unchanged: no trustworthy telemetry,
    12 needs approval (--approve), 2 invalid input, 3 suggestion failed validation,
    5 policy unusable (endpoint down, no local fallback), 7 write failed, 8 endpoint
    refused the token (401/403, even with --fallback-local), 1 internal error. On any
    non-zero code config.ini is untouched.
    """
    from jpo.stage.suggest import SuggestOptions, suggest
    from jpo.telemetry.sources import without_pandas

    options = SuggestOptions(
        config=config,
        prometheus_url=prometheus,
        endpoint=endpoint,
        policy_path=policy,
        fallback_local=fallback_local,
        dry_run=dry_run,
        approve=approve,
        log_path=log,
        settings_path=settings,
        metrics_path=metrics,
    )
    with without_pandas():  # the CI stage must start fast (SPEC section 1): no pandas
        result = suggest(options)
    if as_json:
        typer.echo(json.dumps(result.to_json(), sort_keys=True))
    else:
        print_result(result)
    return int(result.exit_code)


def print_result(result: object) -> None:
    """Print a suggestion for people: the decision, the diff, the notes."""
    from rich.table import Table

    from jpo.console import out_console, print_error
    from jpo.stage.suggest import SuggestResult, SuggestStatus

    assert isinstance(result, SuggestResult)
    console = out_console()
    if result.status in (SuggestStatus.NO_DATA, SuggestStatus.POLICY_UNAVAILABLE):
        # it could not suggest at all: one line on stderr, as every failure (user guide)
        print_error(result.message, prefix=result.status.value)
    else:
        console.print(f"{result.status.value}: {result.message}", markup=False, highlight=False)
    if result.run_id and result.workload is not None:
        console.print(
            f"telemetry: run {result.run_id} of {result.workload.slug()} (latest finished run)",
            markup=False,
            highlight=False,
        )
    diff = result.diff()
    if diff:
        table = Table(title=None, show_edge=False)
        for col in ("parameter", "before", "after"):
            table.add_column(col)
        for name, old, new in diff:
            table.add_row(name, f"{old:g}", f"{new:g}")
        console.print(table)
    if result.policy_version:
        gain = (
            ""
            if result.predicted_gain is None
            else f", predicted gain {result.predicted_gain:+.1%}"
        )
        console.print(
            f"policy {result.policy_version} from {result.policy_source}{gain}",
            markup=False,
            highlight=False,
        )
    for note in result.notes:
        console.print(f"  - {note}", markup=False, highlight=False)
