"""``jpo evaluate``'s report: report.md, rounds.parquet, summary.json and the plots.

The figures keep every method visible where several lie on the same values (no tuning,
random search and Optuna TPE often sit at 0 for five rounds): each method has its own
colour, marker and line style and a small horizontal offset, and the legend sits outside
the axes. ``gain_by_workload.png`` draws one small panel per workload. The report's tables
stay narrow enough for a screen: quality and resources are separate tables, and
before/after pairs share one column (``0.576 -> 0.79``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jpo.errors import ConfigError, JpoError
from jpo.evaluation.evaluate import (
    EvaluationResult,
    QualityBar,
    baseline_bar,
    bundled_policy_path,
    evaluate,
    gain_by_round,
    load_evaluation_settings,
    load_set,
    load_workload_folder,
    method_summary,
    quality_bar,
    tuner_methods,
    workload_summary,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pandas as pd

    from jpo.sim.response import WorkloadProfile

__all__ = [
    "METHOD_STYLES",
    "ReportPaths",
    "protocol_section",
    "run_from_cli",
    "workload_rounds",
    "write_report",
]

OVERALL_QUALITY = (
    "method",
    "oracle_fraction_mean",
    "oracle_fraction_median",
    "oracle_fraction_last_mean",
    "oracle_reach_fraction_mean",
    "val_loss_ok_share",
    "invalid_configs",
    "oom_runs",
    "diverged_runs",
)
"""Columns of the overall quality table."""
OVERALL_RESOURCES = (
    "method",
    ("gpu_util", "GPU util"),
    ("cpu_util", "CPU util"),
    ("mem_util", "memory util"),
    ("throughput", "throughput/s"),
    "duration_s_after",
    "gpu_hours_after",
    "tuning_gpu_hours",
)
"""Columns of the overall resources table; (prefix, title) pairs are before -> after."""
WORKLOAD_QUALITY = (
    "workload",
    "method",
    "oracle_fraction",
    "oracle_reach_fraction",
    "val_loss_after",
    "default_val_loss",
    "val_loss_ok",
    "invalid_configs",
    "oom_runs",
    "diverged_runs",
)
"""Columns of the per-workload quality table."""
WORKLOAD_RESOURCES = (
    "workload",
    "method",
    ("gpu_util", "GPU util"),
    ("throughput", "throughput/s"),
    "duration_s_after",
)
"""Columns of the per-workload resources table."""

METHOD_STYLES: dict[str, dict[str, Any]] = {
    "jpo": {"color": "tab:blue", "marker": "o", "linestyle": "-"},
    "optuna_tpe": {"color": "tab:orange", "marker": "s", "linestyle": "--"},
    "random": {"color": "tab:green", "marker": "^", "linestyle": "-."},
    "no_tuning": {"color": "tab:gray", "marker": "D", "linestyle": ":"},
    "oracle": {"color": "tab:red", "marker": "*", "linestyle": "-"},
}
"""Colour, marker and line style per method; other methods cycle through _EXTRA_STYLES."""
_EXTRA_STYLES = (
    {"color": "tab:purple", "marker": "v", "linestyle": "--"},
    {"color": "tab:brown", "marker": "P", "linestyle": "-."},
    {"color": "tab:pink", "marker": "X", "linestyle": ":"},
    {"color": "tab:olive", "marker": "h", "linestyle": "--"},
    {"color": "tab:cyan", "marker": "<", "linestyle": "-."},
)
OFFSET = 0.06
"""Horizontal offset between methods' markers, in rounds (overlapping lines stay visible)."""


@dataclass(frozen=True)
class ReportPaths:
    """Files written by :func:`write_report`."""

    report: Path
    parquet: Path
    summary: Path
    plots: tuple[Path, ...]


def _style(method: str, index: int) -> dict[str, Any]:
    """Return the plot style of a method (known methods fixed; others by position)."""
    return METHOD_STYLES.get(method) or _EXTRA_STYLES[index % len(_EXTRA_STYLES)]


def workload_rounds(result: EvaluationResult) -> pd.DataFrame:
    """Return the mean oracle fraction per workload, method and round (over seeds)."""
    frame = result.frame()
    return (
        frame.groupby(["workload", "method", "round"], sort=False)
        .agg(oracle_fraction=("oracle_fraction", "mean"))
        .reset_index()
    )


def _columns(spec: Sequence[str | tuple[str, str]]) -> list[str]:
    return [c if isinstance(c, str) else c[1] for c in spec]


def _before_after(frame: pd.DataFrame, spec: Sequence[str | tuple[str, str]]) -> pd.DataFrame:
    """Return the frame with ``<prefix>_before -> <prefix>_after`` text columns added."""
    out = frame.copy()
    for c in spec:
        if isinstance(c, tuple):
            prefix, title = c
            out[title] = [
                f"{_fmt(b)} -> {_fmt(a)}"
                for b, a in zip(out[f"{prefix}_before"], out[f"{prefix}_after"], strict=True)
            ]
    return out


def write_report(result: EvaluationResult, out_dir: str | Path) -> ReportPaths:
    """Write report.md, rounds.parquet, summary.json and plots/*.png into ``out_dir``."""
    out = Path(out_dir)
    try:
        (out / "plots").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--out {out}: cannot create the folder: {err}") from err
    frame = result.frame()
    parquet = out / "rounds.parquet"
    frame.to_parquet(parquet, index=False)
    per_workload = workload_summary(result)
    per_method = method_summary(result)
    by_round = gain_by_round(result)
    bar = quality_bar(result)
    plots = _plots(per_method, by_round, workload_rounds(result), out / "plots")
    summary = out / "summary.json"
    summary.write_text(
        json.dumps(
            {
                "settings": asdict(result.settings),
                "workloads": list(result.workloads),
                "policy": result.policy,
                "policy_version": result.policy_version,
                "methods": _records(per_method),
                "quality_bar": None if bar is None else asdict(bar) | {"ok": bar.ok},
                "baseline_bar": _baseline_bar_json(result),
            },
            indent=2,
            default=_json_default,
        )
        + "\n",
        encoding="utf-8",
    )
    report = out / "report.md"
    report.write_text(
        _markdown(result, per_method, per_workload, by_round, bar, plots, out), encoding="utf-8"
    )
    return ReportPaths(report, parquet, summary, tuple(plots))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for rec in frame.to_dict(orient="records"):
        out.append(
            {
                k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in rec.items()
            }
        )
    return out


def _plots(
    per_method: pd.DataFrame, by_round: pd.DataFrame, per_workload: pd.DataFrame, folder: Path
) -> list[Path]:
    """Draw the figures (matplotlib Agg) and return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    paths = [_utilization_plot(per_method, folder / "utilization_before_after.png")]
    paths.append(
        _round_plot(
            by_round,
            "oracle_fraction",
            "fraction of the oracle's improvement",
            "gain vs round (mean over workloads)",
            folder / "gain_vs_round.png",
        )
    )
    paths.append(
        _round_plot(
            by_round,
            "incumbent_val_loss_rel",
            "final validation loss / default's",
            "validation loss vs round (mean over workloads)",
            folder / "val_loss_vs_round.png",
        )
    )
    paths.append(_workload_grid(per_workload, folder / "gain_by_workload.png"))
    return paths


def _utilization_plot(per_method: pd.DataFrame, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharey=True)
    x = np.arange(len(per_method))
    width = 0.38
    for ax, (label, key) in zip(
        axes, (("GPU", "gpu_util"), ("CPU", "cpu_util"), ("memory", "mem_util")), strict=True
    ):
        ax.bar(x - width / 2, per_method[f"{key}_before"], width, label="default (before)",
               color="tab:gray")  # fmt: skip
        ax.bar(x + width / 2, per_method[f"{key}_after"], width, label="after tuning",
               color="tab:blue")  # fmt: skip
        ax.set_xticks(x, per_method["method"], rotation=30, ha="right")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"mean {label} utilization")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("fraction of what the pod reserved")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return _save(fig, path)


def _draw_methods(ax: Any, frame: pd.DataFrame, value: str, *, markersize: float = 6) -> None:
    """Plot one line per method with its style and a small x offset."""
    methods = list(dict.fromkeys(frame["method"]))
    for i, method in enumerate(methods):
        grp = frame[frame["method"] == method]
        shift = (i - (len(methods) - 1) / 2) * OFFSET
        style = _style(str(method), i)
        ax.plot(grp["round"] + shift, grp[value], label=str(method), markersize=markersize,
                linewidth=1.5, alpha=0.9, **style)  # fmt: skip


def _round_plot(by_round: pd.DataFrame, value: str, ylabel: str, title: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    _draw_methods(ax, by_round, value)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(sorted(by_round["round"].unique()))
    ax.set_xlabel("round (methods drawn side by side within a round)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def _workload_grid(per_workload: pd.DataFrame, path: Path) -> Path:
    """One small panel per workload: each method's oracle fraction by round."""
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(per_workload["workload"]))
    cols = min(4, max(1, len(names)))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols + 1.8, 2.8 * rows + 0.6),
                             sharex=True, squeeze=False)  # fmt: skip
    for ax, name in zip(axes.ravel(), names, strict=False):
        _draw_methods(ax, per_workload[per_workload["workload"] == name], "oracle_fraction",
                      markersize=4)  # fmt: skip
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.set_xticks(sorted(per_workload["round"].unique()))
        ax.tick_params(labelsize=8, labelbottom=True)
    for ax in axes.ravel()[len(names) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("oracle fraction", fontsize=8)
    for ax in axes.ravel()[: len(names)]:
        ax.set_xlabel("round", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=9, frameon=False)
    fig.suptitle("gain vs round per workload (mean over seeds)")
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / (3.4 * cols + 1.8), 0.96))
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if not math.isfinite(float(value)):
            return "n/a"
        return f"{float(value):.{digits}g}"
    return str(value)


def _table(frame: pd.DataFrame, columns: Iterable[str]) -> str:
    cols = list(columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines)


def _markdown(
    result: EvaluationResult,
    per_method: pd.DataFrame,
    per_workload: pd.DataFrame,
    by_round: pd.DataFrame,
    bar: QualityBar | None,
    plots: list[Path],
    out: Path,
) -> str:
    s = result.settings
    frame = result.frame()
    oracle_tol = (
        s.val_loss_tolerance if s.oracle_val_loss_tolerance is None else s.oracle_val_loss_tolerance
    )
    parts = [
        "# JPO evaluation report",
        "",
        f"- workloads ({len(result.workloads)}): {', '.join(result.workloads)}",
        f"- rounds: {s.rounds}, seeds: {s.seeds} (from {s.base_seed}), score: {s.score}",
        f"- policy: {result.policy or 'none'} (version {result.policy_version})",
        f"- JPO path: {s.jpo_path} ("
        + (
            "jpo.stage.suggest.suggest in-process: features, action, constraints, guards, rollback"
            if s.jpo_path == "suggest"
            else "features -> action -> constraints, no guards"
        )
        + ")",
        f"- oracle: validation loss held to the default's x (1 + {oracle_tol:g})",
        "- search space of Optuna TPE and random search: "
        + (
            f"what a trust-region method can reach from the default in {s.rounds} rounds"
            if s.search_space == "reach"
            else "the whole constrained range"
        )
        + f"; random search's per-round trust region: "
        f"{'applied' if s.random_trust_region else 'not applied'}",
        f"- undefined oracle fractions (default already optimal): "
        f"{int(frame[frame['round'] == 0]['oracle_fraction'].isna().sum())} of "
        f"{int((frame['round'] == 0).sum())} campaigns",
        "",
        "Objective: `jpo.sim.oracle.objective` (the reward with no previous run; reference = the "
        "default configuration, or the default made to train when it fails); "
        "scores are noise-free (`jpo.sim.response.predict`), choices use measured runs.",
        "`oracle_fraction` is relative to the global oracle (the whole constraint box: the "
        "quality bar's figure); `oracle_reach_fraction` to the reach-box oracle (the best "
        f"configuration within {s.rounds} trust-region steps of the default). Both score "
        "each method's incumbent, the best run it observed; `oracle_fraction_last_mean` "
        f"scores the configuration it ran in round {s.rounds}, what `config.ini` holds.",
        "",
        "## Overall (mean over workloads; counts are totals over tuning rounds)",
        "",
        "Quality:",
        "",
        _table(per_method, OVERALL_QUALITY),
        "",
        "Resources (default run -> each method's result):",
        "",
        _table(_before_after(per_method, OVERALL_RESOURCES), _columns(OVERALL_RESOURCES)),
        "",
    ]
    parts += protocol_section(result, per_method)
    if bar is not None:
        parts += ["## Quality bar (JPO)", ""]
        parts += [f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in bar.passed.items()]
        parts += [
            "",
            f"JPO: oracle fraction {bar.oracle_fraction:.3f} (global oracle, the bar; "
            f"reach-box oracle: {bar.oracle_reach_fraction:.3f}), val-loss-ok share "
            f"{bar.val_loss_ok_share:.3f}, invalid configs {bar.invalid_configs}, "
            f"OOM runs {bar.oom_runs}.",
            "",
            f"Ceiling: the oracle's own configurations, held to the same measured val-loss "
            f"rule as every method (the oracle is exempt above), reach "
            f"{bar.oracle_ceiling:.3f} of its improvement (`oracle_ceiling`).",
            "",
        ]
    parts += ["## Gain vs round (mean oracle fraction)", ""]
    pivot = by_round.pivot(index="round", columns="method", values="oracle_fraction")
    pivot = pivot.reset_index()
    parts += [_table(pivot, ["round", *[m for m in s.methods if m in pivot.columns]]), ""]
    parts += ["## Per workload", ""]
    parts += [
        "Quality:",
        "",
        _table(per_workload, WORKLOAD_QUALITY),
        "",
        "Resources (default run -> each method's result):",
        "",
        _table(_before_after(per_workload, WORKLOAD_RESOURCES), _columns(WORKLOAD_RESOURCES)),
        "",
        "## Plots",
        "",
    ]
    parts += [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in plots]
    parts += ["", "All rounds: `rounds.parquet`.", ""]
    return "\n".join(parts)


def _set_spec(result: EvaluationResult) -> dict[str, Any]:
    """Return the evaluated set's ``[sets.NAME]`` table (empty when none was named)."""
    return dict(result.settings.sets.get(result.set_name, {}))


def _baseline_bar_json(result: EvaluationResult) -> dict[str, Any] | None:
    """Return issue 25's bar as JSON-ready data (None when it does not apply)."""
    spec = _set_spec(result)
    bar = baseline_bar(result, absolute_min=spec.get("absolute_min"))
    if bar is None:
        return None
    return asdict(bar) | {"ok": bar.ok, "set": result.set_name, "role": spec.get("role")}


def _tolerance_lines(result: EvaluationResult) -> list[str]:
    """Return the report's table of every val-loss tolerance in play, and why they differ."""
    from jpo.learning.reward import load_reward_weights
    from jpo.stage.suggest import load_suggest_settings

    tol = result.settings.val_loss_tolerance
    weights = load_reward_weights()
    suggest = load_suggest_settings()
    rows = [
        ("scoring rule (incumbent, val loss ok, honest baselines)", tol, "the one setting"),
        (
            "CI rollback (configs/suggest.toml [rollback])",
            suggest.rollback.val_loss_tolerance,
            "one noisy run against one noisy run: 1 % would roll back most reruns of the "
            "same configuration; the scoring rule's incumbent choice filters at 1 %",
        ),
        (
            "reward vs previous run (configs/reward.toml)",
            weights.tolerance_previous,
            "the policy's training signal",
        ),
        (
            "reward vs best run (configs/reward.toml)",
            weights.tolerance_best,
            "the policy's training signal (a soft penalty, not a rule)",
        ),
    ]
    lines = ["| tolerance | value | why |", "|---|---|---|"]
    lines += [f"| {name} | {value:g} | {why} |" for name, value, why in rows]
    return lines


def protocol_section(result: EvaluationResult, per_method: pd.DataFrame) -> list[str]:
    """Return the report's protocol, safety and honest-baseline sections (issue 25)."""
    s = result.settings
    spec = _set_spec(result)
    role = spec.get("role", "unnamed (a folder or workloads given directly)")
    parts = [
        "## Protocol",
        "",
        f"- set: {result.set_name or 'n/a'}, role: **{role}** "
        "(training: profiles the policy learns on; validation: every choice; test: read "
        "only to report)",
        f"- scoring rule: a run counts when its measured val loss <= the mean of "
        f"{s.default_runs} measured default runs x (1 + {s.val_loss_tolerance:g}); "
        "`oracle_fraction_single_mean` keeps the single-default-run reading",
        "",
        *_tolerance_lines(result),
        "",
        "## Safety (totals over tuning runs)",
        "",
        "harmful: noise-free objective below the default's; rule breaks: trained runs whose "
        "measured val loss breaks the scoring rule.",
        "",
        _table(
            per_method,
            [
                "method",
                "oracle_fraction_mean",
                "oracle_fraction_single_mean",
                "tuning_runs",
                "oom_runs",
                "diverged_runs",
                "failed_runs",
                "harmful_runs",
                "rule_breaks",
                "val_loss_ok_share",
            ],
        ),
        "",
    ]
    bar = baseline_bar(result, absolute_min=spec.get("absolute_min"))
    if bar is None:
        return parts
    d = bar.difference
    parts += [
        "## JPO against the best honest baseline",
        "",
        f"Best honest baseline: **{bar.baseline}**. JPO - {bar.baseline} (paired by "
        f"workload and seed): **{d.mean:+.3f}** (standard error over {d.seeds} seeds "
        f"{d.se_seeds:.3f}, over {d.workloads} workloads {d.se_workloads:.3f}).",
        "",
    ]
    parts += [f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in bar.passed.items()]
    return [*parts, ""]


def run_from_cli(
    *,
    policy_path: str | None,
    workloads: Sequence[str] | None,
    split: str | None,
    rounds: int | None,
    seeds: int | None,
    methods: Sequence[str] | None,
    out: str,
    config: str | None = None,
    progress: bool = True,
    catalog_dir: str | None = None,
    set_name: str | None = None,
    tuners: Sequence[str] = (),
    default_runs: int | None = None,
) -> tuple[EvaluationResult, ReportPaths]:
    """Load settings and the policy, evaluate, and write the report (``jpo evaluate``)."""
    base = load_evaluation_settings(config)
    extra = tuner_methods(tuners)
    chosen = tuple(methods) if methods else None
    if extra and chosen is None:
        chosen = (*base.methods, *[m for m in extra if m not in base.methods])
    settings = base.with_overrides(
        split=split,
        rounds=rounds,
        seeds=seeds,
        methods=chosen,
        default_runs=default_runs,
        tuners={**base.tuners, **extra},
    )
    if catalog_dir is not None and set_name is not None:
        raise ConfigError("pass either --catalog DIR or --set NAME, not both")
    catalog: Mapping[str, WorkloadProfile] | None = None
    frozen: Mapping[str, Sequence[str]] | None = None
    if catalog_dir is not None:
        catalog, frozen = load_workload_folder(catalog_dir)
        settings = settings.with_overrides(split="all")
    elif set_name is not None:
        catalog, frozen = load_set(settings, set_name)
        settings = settings.with_overrides(split="all")
    policy = None
    if "jpo" in settings.methods:
        from jpo.policy.artifact import LocalPolicy

        path = policy_path or str(bundled_policy_path())
        policy = LocalPolicy.load(path)
        policy_path = path
    try:
        result = evaluate(
            settings,
            workloads=workloads,
            policy=policy,
            policy_path=policy_path,
            progress=progress,
            catalog=catalog,
            frozen=frozen,
            set_name=set_name or "",
        )
    except JpoError:
        raise
    return result, write_report(result, out)
