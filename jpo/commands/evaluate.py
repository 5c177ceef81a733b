"""``jpo evaluate``: compare JPO with Optuna TPE, random search, no tuning and the oracle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command to the root CLI."""
    app.command("evaluate")(evaluate_command)


def evaluate_command(
    out: Annotated[Path, typer.Option("--out", help="Folder for report.md, plots, Parquet.")],
    policy: Annotated[
        str | None,
        typer.Option("--policy", help="Exported policy artifact (default: the bundled one)."),
    ] = None,
    workloads: Annotated[
        list[str] | None,
        typer.Option(
            "--workloads",
            help="Catalog workload names (repeat or comma-separate); overrides --split.",
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option("--split", help="train, holdout or all (default from configs/evaluate.toml)."),
    ] = None,
    rounds: Annotated[
        int | None, typer.Option("--rounds", min=1, help="Tuning rounds per workload (default 5).")
    ] = None,
    seeds: Annotated[
        int | None, typer.Option("--seeds", min=1, help="Noise seeds per workload (default 1).")
    ] = None,
    methods: Annotated[
        list[str] | None,
        typer.Option(
            "--methods",
            help="Methods (repeat or comma-separate): jpo, optuna_tpe, random, no_tuning, oracle.",
        ),
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", help="Evaluation settings (configs/evaluate.toml).")
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Evaluate tuning methods on catalog workloads and write a Markdown report with plots."""
    from jpo.console import is_quiet, out_console
    from jpo.evaluate import method_summary, quality_bar, run_from_cli

    def _flat(values: list[str] | None) -> list[str] | None:
        """Accept repeated flags and comma-separated lists alike."""
        if not values:
            return None
        return [v.strip() for value in values for v in value.split(",") if v.strip()]

    result, paths = run_from_cli(
        policy_path=policy,
        workloads=_flat(workloads),
        split=split,
        rounds=rounds,
        seeds=seeds,
        methods=_flat(methods),
        out=str(out),
        config=config,
        progress=progress and not is_quiet(),
    )
    console = out_console()
    summary = method_summary(result)
    for _, row in summary.iterrows():
        console.print(
            f"{row['method']:>10}: oracle fraction {row['oracle_fraction_mean']:.3f}, "
            f"val-loss ok {row['val_loss_ok_share']:.0%}, invalid {int(row['invalid_configs'])},"
            f" OOM {int(row['oom_runs'])}"
        )
    bar = quality_bar(result)
    if bar is not None:
        console.print(f"quality bar: {'PASS' if bar.ok else 'FAIL'}")
    console.print(f"report: {paths.report}")
