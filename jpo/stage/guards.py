"""Guards between the policy's proposal and the file: lessons from running in the field.

Each guard takes the current values and a proposal and returns a (possibly reduced)
proposal plus a human-readable note for the audit log. They are pure functions of their
inputs (no I/O) so that ``jpo suggest`` can run them in a fixed order:

1. **Failed-config memory** — never propose a configuration that already failed (OOM,
   divergence) for this workload; for OOM, nothing at least as large either.
2. **Memory guard** — refuse a batch size / depth predicted not to fit the GPU memory
   Prometheus reports (DCGM ``FB_USED + FB_FREE``).
3. **Hysteresis** — drop tiny per-parameter nudges, and a batch-size increase whose
   predicted throughput gain is below a threshold, so configs do not flap.
4. **Approval** — changes larger than a configured size need ``--approve``.

Predicted gain and memory use come from two deliberately simple models fitted to the
*last observed run* (not the catalog response model, which is unknown for a user's
workload and would pull the simulator into the CI path):

* Throughput (roofline view, SPEC appendix "Step time and utilization"): step time
  t(B) = overhead + c·B and GPU utilization u = c·B / t. With r = B'/B the throughput
  ratio is r / (1 - u + u·r).
* Memory (SPEC appendix "Memory"): the observed peak GPU memory fraction m splits into a
  part a·m that scales with batch_size × num_layers (activations) and a fixed rest
  (weights, optimizer state); predicted m' = m·((1 - a) + a·(B'L')/(BL)). With a = 1
  (default) growth is over-predicted, which errs on the safe side.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from jpo.telemetry.schema import Failure, RunSummary
from jpo.workload.types import HYPERPARAMETER_NAMES, Hyperparameters

__all__ = [
    "FailedConfig",
    "GuardResult",
    "apply_hysteresis",
    "approval_needed",
    "check_failed_configs",
    "memory_guard",
    "predicted_gpu_memory_fraction",
    "predicted_throughput_gain",
    "relative_change",
]


@dataclass(frozen=True, slots=True)
class FailedConfig:
    """A configuration that failed, degraded, or scored below the campaign's best run.

    ``"degraded"``: its run worsened validation loss and was rolled back; ``"worse"``: its
    run scored below the campaign's best known-good run (:mod:`jpo.stage.incumbent`).
    """

    hyperparameters: Hyperparameters
    failure: Failure | Literal["degraded", "worse"]
    run_id: str = ""


@dataclass(frozen=True, slots=True)
class GuardResult:
    """A guard's output: the (possibly reduced) proposal and why it was changed."""

    hyperparameters: Hyperparameters
    notes: tuple[str, ...] = ()

    @property
    def changed_by_guard(self) -> bool:
        """Whether the guard altered the proposal."""
        return bool(self.notes)


def relative_change(old: float, new: float) -> float:
    """Return |new - old| / |old| (inf when old is 0 and new is not)."""
    if old == new:
        return 0.0
    if old == 0:
        return math.inf
    return abs(new - old) / abs(old)


def _with(hp: Hyperparameters, **values: float | int) -> Hyperparameters:
    return replace(hp, **values)  # type: ignore[arg-type]


def predicted_throughput_gain(
    summary: RunSummary, current: Hyperparameters, proposed: Hyperparameters
) -> float:
    """Return the predicted relative throughput change of ``proposed`` vs ``current``.

    Roofline model on the last run's mean GPU utilization u (see module docstring):
    throughput'/throughput = r / (1 - u + u·r), r = B'/B. Only batch size moves it.
    """
    u = min(max(summary.gpu_util_mean, 0.0), 1.0)
    r = proposed.batch_size / current.batch_size
    return r / (1.0 - u + u * r) - 1.0


def predicted_gpu_memory_fraction(
    observed_fraction: float,
    current: Hyperparameters,
    proposed: Hyperparameters,
    activation_fraction: float,
) -> float:
    """Return the predicted peak GPU-memory fraction of ``proposed`` (module docstring)."""
    scale = (proposed.batch_size * proposed.num_layers) / (current.batch_size * current.num_layers)
    return observed_fraction * ((1.0 - activation_fraction) + activation_fraction * scale)


def memory_guard(
    current: Hyperparameters,
    proposed: Hyperparameters,
    *,
    observed_fraction: float | None,
    gpu_memory_total_mib: float | None,
    max_fraction: float,
    activation_fraction: float,
    memory: str = "GPU memory",
) -> GuardResult:
    """Refuse a batch size / depth predicted not to fit the GPU memory.

    ``observed_fraction`` is the last run's peak (p95) GPU memory fraction (a cpu-device
    workload's pod memory fraction, named by ``memory`` in the note); None (no telemetry)
    disables the guard. A refused proposal keeps the current batch size and depth (other
    parameters pass through).
    """
    if observed_fraction is None or not math.isfinite(observed_fraction):
        return GuardResult(proposed)
    predicted = predicted_gpu_memory_fraction(
        observed_fraction, current, proposed, activation_fraction
    )
    if predicted <= max_fraction:
        return GuardResult(proposed)
    kept = _with(proposed, batch_size=current.batch_size, num_layers=current.num_layers)
    total = f" of {gpu_memory_total_mib:.0f} MiB" if gpu_memory_total_mib else ""
    note = (
        f"memory guard: batch_size={proposed.batch_size}, num_layers={proposed.num_layers} "
        f"predicted to use {predicted:.0%} of {memory}{total} (limit {max_fraction:.0%}, "
        f"configs/suggest.toml [memory]); kept batch_size={current.batch_size}, "
        f"num_layers={current.num_layers}"
    )
    return GuardResult(kept, (note,))


def _dominates_oom(proposed: Hyperparameters, failed: Hyperparameters) -> bool:
    """An OOM at (B, L) predicts OOM at any B' >= B and L' >= L."""
    return proposed.batch_size >= failed.batch_size and proposed.num_layers >= failed.num_layers


def _near(a: Hyperparameters, b: Hyperparameters, tolerance: float) -> bool:
    """Every hyperparameter of ``a`` within ``tolerance`` (relative) of ``b``'s."""
    x, y = a.as_dict(), b.as_dict()
    return all(relative_change(float(y[n]), float(x[n])) <= tolerance for n in x)


def check_failed_configs(
    current: Hyperparameters,
    proposed: Hyperparameters,
    failures: Iterable[FailedConfig],
    *,
    near: float = 0.0,
) -> GuardResult:
    """Never re-suggest a configuration that failed (or degraded) for this workload.

    A repeat of any remembered configuration is refused: every hyperparameter within
    ``near`` (relative; 0 = exact repeats only) of it. So is anything at least as large in
    batch size and depth as one that ran out of memory. A refused proposal becomes the
    current values (the caller then reports "unchanged by choice").
    """
    for failed in failures:
        hit = _near(proposed, failed.hyperparameters, near) or (
            failed.failure == "oom" and _dominates_oom(proposed, failed.hyperparameters)
        )
        if hit and proposed != current:
            where = f" in run {failed.run_id}" if failed.run_id else ""
            what = (
                "scored below the campaign's best known-good run"
                if failed.failure == "worse"
                else f"failed with {failed.failure}"
            )
            note = (
                f"failed-config memory: {_fmt(proposed)} repeats or exceeds a configuration "
                f"that {what}{where} ({_fmt(failed.hyperparameters)})"
            )
            return GuardResult(current, (note,))
    return GuardResult(proposed)


def apply_hysteresis(
    summary: RunSummary,
    current: Hyperparameters,
    proposed: Hyperparameters,
    *,
    min_relative_change: float,
    min_predicted_gain: float | None,
) -> GuardResult:
    """Drop changes too small to be worth a new config (so the file does not flap).

    Each parameter whose relative change is below ``min_relative_change`` keeps its
    current value. A batch-size *increase* whose predicted throughput gain
    (:func:`predicted_throughput_gain`) is below ``min_predicted_gain`` keeps the current
    batch size: the GPU is already busy, a bigger batch would only cost quality (None: no
    such check, for a device the roofline model does not describe).
    Decreases pass (the policy lowers the batch for quality, which this model cannot price).
    """
    notes: list[str] = []
    values = proposed.as_dict()
    cur = current.as_dict()
    for name in HYPERPARAMETER_NAMES:
        change = relative_change(float(cur[name]), float(values[name]))
        if 0 < change < min_relative_change:
            notes.append(
                f"hysteresis: {name} {cur[name]} -> {values[name]} is a {change:.1%} change "
                f"(< {min_relative_change:.0%}); kept {cur[name]}"
            )
            values[name] = cur[name]
    kept = Hyperparameters.from_mapping(values)
    if min_predicted_gain is not None and kept.batch_size > current.batch_size:
        gain = predicted_throughput_gain(summary, current, kept)
        if gain < min_predicted_gain:
            notes.append(
                f"hysteresis: batch_size {current.batch_size} -> {kept.batch_size} predicted "
                f"to raise throughput by {gain:.1%} only (GPU {summary.gpu_util_mean:.0%} busy; "
                f"needs >= {min_predicted_gain:.0%}); kept {current.batch_size}"
            )
            kept = _with(kept, batch_size=current.batch_size)
    return GuardResult(kept, tuple(notes))


def approval_needed(
    current: Hyperparameters, proposed: Hyperparameters, max_relative_change: float
) -> tuple[str, ...]:
    """Return a note per parameter whose change exceeds ``max_relative_change`` (empty: none)."""
    cur, new = current.as_dict(), proposed.as_dict()
    out: list[str] = []
    for name in HYPERPARAMETER_NAMES:
        change = relative_change(float(cur[name]), float(new[name]))
        if change > max_relative_change:
            out.append(
                f"{name} {cur[name]} -> {new[name]} changes by {change:.0%} "
                f"(> {max_relative_change:.0%} without --approve)"
            )
    return tuple(out)


def _fmt(hp: Hyperparameters) -> str:
    return ", ".join(f"{k}={v}" for k, v in hp.as_dict().items())


def failed_configs_from(
    entries: Sequence[tuple[Hyperparameters, Failure, str]],
) -> tuple[FailedConfig, ...]:
    """Build the failed-config list from (hyperparameters, failure, run_id) triples."""
    return tuple(
        FailedConfig(hp, failure, run_id) for hp, failure, run_id in entries if failure != "none"
    )
