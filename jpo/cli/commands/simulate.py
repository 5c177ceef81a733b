"""``jpo simulate``: simulated Kubernetes training workloads (no cluster needed).

- ``jpo simulate list``: the workload catalog (configs/workloads/*.toml).
- ``jpo simulate run --workload NAME [--config PATH]``: one simulated pod exporting the
  raw metrics (cAdvisor, kube-state-metrics, DCGM, jpo_training_*) on
  ``http://127.0.0.1:PORT/metrics`` at ``--speedup`` x real time, for Prometheus to scrape.
- ``jpo simulate history --workloads ... --runs N --out DIR [--openmetrics FILE]``: many
  past runs at once, as Parquet (history store) and OpenMetrics text for
  ``promtool tsdb create-blocks-from openmetrics``.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command group to the root CLI."""
    group = typer.Typer(
        help="Simulated training workloads: live /metrics exporters and history generation.",
        no_args_is_help=True,
    )
    group.command("list")(list_command)
    group.command("run")(run_command)
    group.command("history")(history_command)
    app.add_typer(group, name="simulate")


def _select(names: list[str] | None) -> list[str]:
    """Expand names (repeatable, comma-separated; 'all', 'train', 'holdout')."""
    from jpo.sim.response import load_catalog, load_profile

    wanted = [n.strip() for item in (names or ["all"]) for n in item.split(",") if n.strip()]
    catalog = load_catalog()
    out: list[str] = []
    for name in wanted:
        if name == "all":
            out += list(catalog)
        elif name in ("train", "holdout"):
            out += [n for n, p in catalog.items() if p.split == name]
        else:
            out.append(load_profile(name).name)  # ConfigError names the known ones
    return list(dict.fromkeys(out))


def list_command() -> None:
    """List the workload catalog with each workload's predicted run at its defaults."""
    from rich.table import Table

    from jpo.console import plain_console
    from jpo.sim.response import load_catalog, load_conditions, predict

    cond = load_conditions()
    table = Table(
        "name",
        "split",
        "framework",
        "bottleneck",
        "defaults (B, lr, L, E)",
        "GPU util",
        "CPU util",
        "GPU mem",
        "outcome",
    )
    for name, p in load_catalog().items():
        d = p.defaults
        s = predict(p, d, cond)
        table.add_row(
            name,
            p.split,
            p.framework,
            p.bottleneck,
            f"{d.batch_size}, {d.learning_rate:g}, {d.num_layers}, {d.epochs}",
            f"{s.gpu_util_mean:.0%}",
            f"{s.cpu_util_mean:.0%}",
            f"{s.gpu_mem_util_p95:.0%}",
            s.failure if s.failure != "none" else f"ok, {s.duration_s / 60:.0f} min",
        )
    plain_console(width=160).print(table)


def run_command(
    workload: Annotated[str, typer.Option("--workload", help="Catalog name or profile TOML.")],
    config: Annotated[
        Path | None,
        typer.Option("--config", help="The workload's config.ini (default: profile defaults)."),
    ] = None,
    speedup: Annotated[
        float, typer.Option("--speedup", min=0.001, help="Simulated seconds per real second.")
    ] = 60.0,
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="0 = any free.")] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Noise seed.")] = 0,
    runs: Annotated[int, typer.Option("--runs", min=1, help="Consecutive runs.")] = 1,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Id of the first run.")] = None,
    linger_s: Annotated[
        float, typer.Option("--linger-s", min=0, help="Serve the final state this long.")
    ] = 30.0,
    cluster: Annotated[
        Path | None, typer.Option("--cluster", help="Cluster conditions (configs/cluster.toml).")
    ] = None,
) -> None:
    """Run one simulated training pod that exports its raw metrics on /metrics."""
    from jpo.sim.live import LiveWorkload
    from jpo.sim.response import load_conditions, load_profile

    profile = load_profile(workload)
    hp, key = profile.defaults, profile.key
    if config is not None:
        from jpo.workload.config_file import read_workload

        wf = read_workload(config)
        hp, key = wf.hyperparameters, wf.key
    live = LiveWorkload(
        profile,
        hp,
        load_conditions(cluster),
        port=port,
        speedup=speedup,
        seed=seed,
        runs=runs,
        run_id=run_id,
        linger_s=linger_s,
        key=key,
    )
    run = live.current_run
    outcome = run.summary.failure if run.summary.failure != "none" else "ok"
    typer.echo(
        f"serving {key.slug()} run {run.run_id} ({outcome}, "
        f"{run.summary.duration_s / speedup:.1f} s at x{speedup:g}) on {live.url}",
    )
    signal.signal(signal.SIGTERM, lambda *_: live.request_stop())
    live.start()
    try:
        live.wait()
    finally:
        live.stop()


def history_command(
    out: Annotated[Path, typer.Option("--out", help="History store folder (Parquet).")],
    workloads: Annotated[
        list[str] | None,
        typer.Option("--workloads", help="Names (repeat or comma-separate), all, train, holdout."),
    ] = None,
    runs: Annotated[int, typer.Option("--runs", min=1, help="Runs per workload.")] = 10,
    openmetrics: Annotated[
        Path | None, typer.Option("--openmetrics", help="Also write OpenMetrics text here.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Generation seed.")] = 0,
    end: Annotated[
        float | None,
        typer.Option("--end", help="Epoch seconds the last runs end before (default: now)."),
    ] = None,
) -> None:
    """Generate past runs of catalog workloads as Parquet (and OpenMetrics for promtool)."""
    from jpo.sim.simulator import generate_history

    names = _select(workloads)
    t0 = time.perf_counter()
    result = generate_history(names, runs, out, openmetrics=openmetrics, seed=seed, end=end)
    dt = time.perf_counter() - t0
    n = len(result.runs)
    failed = sum(r.summary.failure != "none" for r in result.runs)
    typer.echo(
        f"{n} runs of {len(names)} workloads ({failed} failed) in {dt:.2f} s"
        f" ({n / dt:.0f} runs/s): {result.parquet_rows} rows -> {out}"
        + (f", {result.openmetrics_samples} samples -> {openmetrics}" if openmetrics else "")
    )
    if openmetrics:
        typer.echo(f"backfill: promtool tsdb create-blocks-from openmetrics {openmetrics} DATA_DIR")
