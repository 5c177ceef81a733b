"""``jpo check --config PATH`` (also ``workload-checker PATH``): verify a workload's config.ini.

``--config`` names the file as in every other command; the positional ``PATH`` stays
accepted (hidden) for ``workload-checker PATH`` and scripts written before the rename.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from jpo.errors import ExitCode


def register(app: typer.Typer) -> None:
    """Add the ``check`` command to the root CLI."""
    app.command("check")(check_command)


def check_command(
    config: Annotated[
        str | None,
        typer.Option("--config", help="The workload's config.ini.", show_default=False),
    ] = None,
    path: Annotated[
        str | None,
        typer.Argument(
            help="The workload's config.ini (old spelling of --config).",
            show_default=False,
            metavar="[PATH]",
            hidden=True,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a machine-readable JSON report on stdout.")
    ] = False,
    constraints: Annotated[
        str | None,
        typer.Option(
            "--constraints",
            help="Constraints TOML (default: configs/constraints.toml, or $JPO_CONFIG_DIR).",
        ),
    ] = None,
) -> None:
    """Check a workload file: sections, keys, types, names, limits. Never writes.

    Lists every problem with file:line, key and the fix. Exit code 0 when the file is
    valid, 2 when it is not.
    """
    from jpo.console import err_console, out_console
    from jpo.errors import ConfigError
    from jpo.workload.config_file import check_workload
    from jpo.workload.constraints import load_constraints

    if config is not None and path is not None and config != path:
        raise ConfigError(f"--config {config} and PATH {path} differ; fix: give only --config")
    path = config if config is not None else path
    if path is None:
        raise ConfigError(
            "Missing argument: no workload file given; fix: jpo check --config path/to/config.ini"
        )
    limits = load_constraints(constraints)
    report = check_workload(path, limits)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        out = out_console()
        err = err_console()
        for w in report.warnings:
            err.print(f"warning: {w}", markup=False, style="yellow")
        if report.ok:
            wl = report.workload
            assert wl is not None
            hp = ", ".join(f"{k}={v}" for k, v in wl.hyperparameters.as_dict().items())
            out.print(
                f"{path}: valid ({wl.key.slug()}; {hp}; tunable: {', '.join(wl.jpo.tunable)})",
                markup=False,
            )
        else:
            for p in report.problems:
                out.print(f"{p}", markup=False)
            n = len(report.problems)
            err.print(
                f"error: {path}: {n} problem{'s' if n != 1 else ''}; nothing was written",
                markup=False,
                style="bold red",
            )
    if not report.ok:
        raise typer.Exit(int(ExitCode.INVALID_INPUT))
