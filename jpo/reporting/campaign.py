"""A workload's tuning campaign read back from its audit log: one row per run, and a chart.

Each suggestion record names the run it was based on (``telemetry.run_id`` and its
summary) and, once ``jpo feedback`` scored the next run, that run's outcome. Read in
order, the records give the campaign run by run: the values each run used, its GPU
utilization, throughput and val loss, its objective against the campaign's first run
(:func:`jpo.learning.reward.objective_vs_run`, the score the return-to-best rule uses), its
reward and verdict, and what ``jpo suggest`` decided from it (changed, rollback,
unchanged, ...: :func:`jpo.reporting.monitoring.decision_of`). ``jpo demo`` prints these rows and
``jpo log --plot`` draws them (:func:`plot_campaign`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jpo.errors import ConfigError
from jpo.workload.types import HYPERPARAMETER_NAMES, Hyperparameters

if TYPE_CHECKING:
    from jpo.stage.audit import AuditRecord
    from jpo.telemetry.schema import RunSummary

__all__ = ["CampaignRun", "best_known_good", "campaign_runs", "plot_campaign"]


@dataclass(frozen=True)
class CampaignRun:
    """One run of a workload's campaign, as its audit log tells it."""

    index: int
    """1-based position in the campaign."""
    run_id: str
    hyperparameters: Hyperparameters | None
    """The values the run used."""
    gpu_util: float | None
    throughput: float | None
    val_loss: float | None
    objective: float | None
    """Objective against the campaign's first run (jpo.learning.reward.objective_vs_run)."""
    reward: float | None
    """``jpo feedback``'s reward of this run (None for the first run, or while pending)."""
    verdict: str
    """``reference`` (the first run), ``ok``, ``degraded``, ``failed`` or ``-`` (unscored)."""
    decision: str
    """What ``jpo suggest`` decided from this run (``""`` when it has not run yet)."""
    next_values: Hyperparameters | None
    """What config.ini held after that decision."""
    when: datetime | None = None
    """When the decision was made."""


def _summary_numbers(summary: RunSummary | None) -> tuple[float | None, ...]:
    if summary is None:
        return None, None, None
    loss = summary.final_val_loss
    return summary.gpu_util_mean, summary.throughput, loss if math.isfinite(loss) else None


@dataclass
class _Scored:
    reward: float | None
    verdict: str
    summary: RunSummary | None
    hyperparameters: Hyperparameters | None


def _outcomes(records: Sequence[AuditRecord]) -> dict[str, _Scored]:
    """Return the scored runs of the log by run id (the newest outcome of each run wins)."""
    from jpo.stage.record import suggestion_records

    out: dict[str, _Scored] = {}
    for rec in suggestion_records(records):
        outcome = rec.outcome
        if outcome is None or not outcome.run_id:
            continue
        verdict = "failed" if outcome.failed else ("degraded" if outcome.degraded else "ok")
        reward = None if outcome.reward is None else float(outcome.reward)
        out[outcome.run_id] = _Scored(reward, verdict, outcome.summary, rec.ran)
    return out


def campaign_runs(records: Sequence[AuditRecord]) -> list[CampaignRun]:
    """Return one workload's campaign run by run, oldest first (records of one workload).

    Raises:
        ConfigError: the records belong to more than one workload.
    """
    from jpo.learning.reward import load_reward_weights, objective_vs_run
    from jpo.reporting.monitoring import decision_of
    from jpo.stage.record import suggestion_records

    keys = {r.key for r in records}
    if len(keys) > 1:
        names = ", ".join(sorted(k.slug() for k in keys))
        raise ConfigError(f"the audit log holds several workloads ({names}); pick one")
    if not records:
        return []
    weights = load_reward_weights()
    typed = suggestion_records(records)
    reference = typed[0].basis.summary
    scored = _outcomes(records)
    rows: dict[str, dict[str, Any]] = {}
    for rec in typed:
        rid = rec.basis.run_id or f"(run before suggestion {rec.suggestion_id[:8]})"
        row = rows.setdefault(rid, {"summary": rec.basis.summary, "hp": rec.before})
        row.update(decision=decision_of(rec.record), next=rec.applied, when=rec.record.timestamp)
    for rid, scored_run in scored.items():  # scored runs no suggestion was made from yet
        rows.setdefault(rid, {"summary": scored_run.summary, "hp": scored_run.hyperparameters})
    out: list[CampaignRun] = []
    for i, (rid, row) in enumerate(rows.items(), start=1):
        s = scored.get(rid)
        summary: RunSummary | None = row["summary"]
        if summary is None and s is not None:
            summary = s.summary
        gpu, tput, loss = _summary_numbers(summary)
        objective = None
        if summary is not None and reference is not None and summary.failure == "none":
            objective = objective_vs_run(summary, reference, weights)
        out.append(
            CampaignRun(
                index=i,
                run_id=rid,
                hyperparameters=(s.hyperparameters if s and s.hyperparameters else row["hp"]),
                gpu_util=gpu,
                throughput=tput,
                val_loss=loss,
                objective=objective,
                reward=s.reward if s else None,
                verdict=s.verdict if s else ("reference" if i == 1 else "-"),
                decision=row.get("decision", ""),
                next_values=row.get("next"),
                when=row.get("when"),
            )
        )
    return out


def best_known_good(runs: Sequence[CampaignRun]) -> CampaignRun | None:
    """Return the run with the highest objective among the reference and the ok runs."""
    good = [r for r in runs if r.objective is not None and r.verdict in ("reference", "ok")]
    return max(good, key=lambda r: r.objective or 0.0) if good else None


_PANELS: tuple[tuple[str, str], ...] = (
    ("objective", "objective vs run 1"),
    ("gpu_util", "GPU utilization"),
    ("throughput", "throughput (samples/s)"),
    ("val_loss", "val loss"),
)
_BAD = ("degraded", "failed")
_HP_LABELS = {
    "batch_size": "batch size",
    "learning_rate": "learning rate",
    "num_layers": "layers",
    "epochs": "epochs",
}


def _series(runs: Sequence[CampaignRun], name: str) -> list[float]:
    vals: list[float] = []
    for r in runs:
        if name in _HP_LABELS:
            v = None if r.hyperparameters is None else getattr(r.hyperparameters, name)
        else:
            v = getattr(r, name)
        vals.append(math.nan if v is None else float(v))
    return vals


def _format_axis(ax: Any, name: str) -> None:
    """Readable tick labels: plain numbers on log axes, percent for utilization."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    if name in ("learning_rate", "batch_size"):
        ax.set_yscale("log", base=2 if name == "batch_size" else 10)
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    elif name == "gpu_util":
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    elif name in _HP_LABELS:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def plot_campaign(runs: Sequence[CampaignRun], path: str | os.PathLike[str], *, title: str) -> Path:
    """Draw a campaign (metrics and each hyperparameter per run, rollbacks marked) as a PNG.

    Raises:
        ConfigError: no runs to draw, or the PNG cannot be written (the path is named).
    """
    if not runs:
        raise ConfigError(f"{path}: no runs to draw (the audit log has no suggestion records)")
    try:
        import matplotlib
    except ModuleNotFoundError as err:
        raise ConfigError(
            f"{path}: drawing a campaign needs matplotlib, which this install lacks; "
            "fix: pip install 'jpo[sim]'"
        ) from err

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [p[0] for p in _PANELS] + list(HYPERPARAMETER_NAMES)
    labels = dict(_PANELS) | _HP_LABELS
    fig, axes = plt.subplots(4, 2, figsize=(11, 10), sharex=True)
    xs = [r.index for r in runs]
    best = best_known_good(runs)
    for ax, name in zip(axes.T.ravel(), names, strict=True):
        ys = _series(runs, name)
        ax.plot(xs, ys, "-o", color="tab:blue", markersize=5, label="run")
        bad = [(r.index, y) for r, y in zip(runs, ys, strict=True) if r.verdict in _BAD]
        if bad:
            ax.plot(*zip(*bad, strict=True), "X", color="tab:red", markersize=10, label="degraded")
        for r in runs:
            if r.decision == "rollback":
                ax.axvline(r.index + 0.5, color="tab:red", linestyle="--", linewidth=1)
        if best is not None:
            y = ys[best.index - 1]
            ax.plot([best.index], [y], "*", color="tab:green", markersize=15, label="best run")
        _format_axis(ax, name)
        finite = [y for y in ys if math.isfinite(y)]
        if finite and min(finite) == max(finite) and name in ("num_layers", "epochs"):
            ax.set_ylim(finite[0] - 1, finite[0] + 1)  # a flat integer line: whole ticks
        ax.set_ylabel(labels[name])
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("run")
        ax.set_xticks(xs)
    handles, texts = axes[0][0].get_legend_handles_labels()
    from matplotlib.lines import Line2D

    handles.append(Line2D([], [], color="tab:red", linestyle="--"))
    texts.append("rollback decided after the run on its left")
    fig.legend(handles, texts, loc="lower center", ncol=4, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
    except OSError as err:
        raise ConfigError(
            f"{out}: cannot write the chart ({err}); fix: pick a writable path"
        ) from err
    finally:
        plt.close(fig)
    return out
