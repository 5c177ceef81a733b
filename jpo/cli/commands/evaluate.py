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
            help="Methods (repeat or comma-separate): jpo, rule_of_thumb, pattern, tpe_local, "
            "optuna_tpe, random, no_tuning, oracle, or a --tuner's name.",
        ),
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", help="Evaluation settings (configs/evaluate.toml).")
    ] = None,
    catalog: Annotated[
        str | None,
        typer.Option(
            "--catalog",
            help="Folder of workload profiles (*.toml, the catalog's format) to score instead.",
        ),
    ] = None,
    workload_set: Annotated[
        str | None,
        typer.Option(
            "--set", help="A workload set of configs/evaluate.toml [sets] (e.g. validation)."
        ),
    ] = None,
    tuner: Annotated[
        list[str] | None,
        typer.Option(
            "--tuner",
            help="Your own method, module:Class (a jpo.evaluation.tuners.Tuner); repeatable.",
        ),
    ] = None,
    default_runs: Annotated[
        int | None,
        typer.Option("--default-runs", min=1, help="Default runs for the scoring rule (5)."),
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Evaluate tuning methods on catalog workloads and write a Markdown report with plots."""
    from jpo.console import is_quiet, out_console
    from jpo.evaluation.evaluate import baseline_bar, method_summary, quality_bar
    from jpo.evaluation.report import run_from_cli

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
        catalog_dir=catalog,
        set_name=workload_set,
        tuners=tuple(tuner or ()),
        default_runs=default_runs,
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
    honest = baseline_bar(result)
    if honest is not None:
        d = honest.difference
        console.print(
            f"best honest baseline: {honest.baseline}; JPO - it: {d.mean:+.3f} "
            f"(SE seeds {d.se_seeds:.3f}, workloads {d.se_workloads:.3f})"
        )
    console.print(f"report: {paths.report}")
