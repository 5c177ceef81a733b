r"""The reward of one training run: efficiency up, model quality held, failures punished.

The replay env (training), the oracle and ``jpo evaluate`` all score runs with this
module and the weights in ``configs/reward.toml``, so they optimize the same thing.

Formula
=======

For a new run ``s`` (a :class:`~jpo.telemetry.schema.RunSummary`), the previous run ``p`` of the
same workload (optional), the workload's best final validation loss ``L*``, a
reference per-GPU throughput ``ρ_ref`` and a reference cost ``G_ref`` (GPU-hours)::

    if s failed (OOM, diverged, other):
        r = -P_fail[kind]                                             (no other terms)
    else:
        r = E + T + Q - D - C

    E = w_E · Σ_k m_k · clip(u_k, 0, 1)                               utilization efficiency
        u_k: mean utilization of what the pod reserved, k in {gpu, gpu_mem, cpu, mem}
             (fractions: GPU busy time, GPU memory used / device memory, CPU cores used /
             CPU limit, working set / memory limit); m_k: shares normalized to Σ m_k = 1
    T = w_T · clip(ln(ρ(s) / ρ_ref), -c_T, +c_T)                      throughput per GPU-hour
        ρ(s) = throughput / GPUs = throughput · duration_s / (3600 · gpu_hours)
               (samples/s per GPU; × 3600 = samples per GPU-hour; the ratio is unitless)
        ρ_ref = reference_throughput if given, else ρ(p); T = 0 when neither exists
    Q = w_Q · clip(-δ_best, 0, c_Q)                                   quality bonus
    D = cap · tanh(w_D · x / cap),  x = max(0, δ_prev - τ_prev) + max(0, δ_best - τ_best)
                                                                      degradation penalty
        δ_prev = (L - L_p) / |L_p|   relative val-loss change vs the previous run
                                     (0 when there is no successful previous run)
        δ_best = (L - L*) / |L*|     relative val-loss change vs the workload's best
                                     (0 when no best is known, L* = inf)
        D ≈ w_D · x (proportional) for small x and saturates smoothly at ``cap``, so it
        stays bounded for SAC yet still grows (has a gradient) for a badly degraded run
    C = w_C · clip(ln(G(s) / G_ref), -c_C, +c_C)                      GPU-hours cost
        G(s) = s.gpu_hours (GPU-hours the run reserved: wall time × GPUs of the pod)
        G_ref = reference_gpu_hours if given, else G(p); C = 0 when neither exists

``L`` is ``s.final_val_loss`` (loss units cancel: every δ is relative, dimensionless).
With the shipped weights ``r`` lies in [-5, +3.5]: E ∈ [0, 1], T ∈ [-1, 1],
Q ∈ [0, 0.5], D ∈ [0, 3], C ∈ [-1, 1], P_fail = 5 (a failed run scores no better
than the worst successful one). A run that raised utilization but made the model more
than the tolerance worse loses reward even so: 10 % beyond tolerance costs 0.96, about as
much as the whole utilization term can give. C prices the run's total compute, so that a
configuration cannot buy back a loss lost to a huge batch with ever more epochs: without
it, high utilization and throughput alone favour runs that take many times the GPU-hours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

from pydantic import ConfigDict

from jpo.errors import ConfigError
from jpo.settings import Settings, config_file, load_settings
from jpo.telemetry.schema import RunSummary

__all__ = [
    "RewardBreakdown",
    "RewardWeights",
    "compute_reward",
    "load_reward_weights",
    "objective",
    "objective_vs_run",
    "per_gpu_throughput",
]


@dataclass(frozen=True, slots=True)
class RewardWeights:
    """Weights and tolerances of the reward (see the module docstring for the formula).

    Attributes:
        efficiency_weight: w_E, weight of the utilization-efficiency term.
        share_gpu: m_gpu, share of mean GPU utilization in E (shares are normalized).
        share_gpu_mem: m_gpu_mem, share of mean GPU memory utilization in E.
        share_cpu: m_cpu, share of mean CPU utilization (of the CPU limit) in E.
        share_mem: m_mem, share of mean memory utilization (of the memory limit) in E.
        throughput_weight: w_T, weight of the log per-GPU throughput ratio.
        throughput_log_clip: c_T, the log ratio is clipped to [-c_T, c_T].
        quality_weight: w_Q, weight of the relative improvement over the best loss.
        quality_clip: c_Q, cap of the counted relative improvement.
        degradation_weight: w_D, penalty per unit of relative degradation beyond tolerance.
        tolerance_previous: τ_prev, relative degradation vs the previous run tolerated.
        tolerance_best: τ_best, relative degradation vs the workload's best tolerated.
        degradation_cap: the degradation penalty D saturates (tanh) at this value.
        cost_weight: w_C, weight of the log GPU-hours ratio.
        cost_log_clip: c_C, the log GPU-hours ratio is clipped to [-c_C, c_C].
        failure_oom: P_fail for a run killed by OOM.
        failure_diverged: P_fail for a diverged run (NaN/inf loss).
        failure_other: P_fail for any other failure.
    """

    efficiency_weight: float = 1.0
    share_gpu: float = 0.5
    share_gpu_mem: float = 0.2
    share_cpu: float = 0.15
    share_mem: float = 0.15
    throughput_weight: float = 0.5
    throughput_log_clip: float = 2.0
    quality_weight: float = 1.0
    quality_clip: float = 0.5
    degradation_weight: float = 10.0
    tolerance_previous: float = 0.01
    tolerance_best: float = 0.03
    degradation_cap: float = 3.0
    cost_weight: float = 0.5
    cost_log_clip: float = 2.0
    failure_oom: float = 5.0
    failure_diverged: float = 5.0
    failure_other: float = 5.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigError(
                    f"reward weight {f.name} = {value!r} is invalid; every weight, "
                    "tolerance and penalty must be a finite number >= 0"
                )
        if self.share_gpu + self.share_gpu_mem + self.share_cpu + self.share_mem <= 0:
            raise ConfigError(
                "reward weights: the utilization shares [efficiency] gpu, gpu_mem, cpu, "
                "mem sum to 0; give at least one a positive share"
            )

    def failure_penalty(self, failure: str) -> float:
        """Return P_fail for a failure kind (``oom``, ``diverged``, ``failed``)."""
        if failure == "oom":
            return self.failure_oom
        if failure == "diverged":
            return self.failure_diverged
        return self.failure_other


# TOML section/key -> RewardWeights field.
_TOML_KEYS: dict[str, dict[str, str]] = {
    "efficiency": {
        "weight": "efficiency_weight",
        "gpu": "share_gpu",
        "gpu_mem": "share_gpu_mem",
        "cpu": "share_cpu",
        "mem": "share_mem",
    },
    "throughput": {"weight": "throughput_weight", "log_clip": "throughput_log_clip"},
    "quality": {"weight": "quality_weight", "clip": "quality_clip"},
    "degradation": {
        "weight": "degradation_weight",
        "tolerance_previous": "tolerance_previous",
        "tolerance_best": "tolerance_best",
        "cap": "degradation_cap",
    },
    "cost": {"weight": "cost_weight", "log_clip": "cost_log_clip"},
    "failure": {"oom": "failure_oom", "diverged": "failure_diverged", "other": "failure_other"},
}


class _RewardTable(Settings):
    """One table of reward.toml: numbers only (bools and strings are errors)."""

    model_config = ConfigDict(strict=True)


class _EfficiencyTable(_RewardTable):
    weight: float | None = None
    gpu: float | None = None
    gpu_mem: float | None = None
    cpu: float | None = None
    mem: float | None = None


class _LogRatioTable(_RewardTable):
    weight: float | None = None
    log_clip: float | None = None


class _QualityTable(_RewardTable):
    weight: float | None = None
    clip: float | None = None


class _DegradationTable(_RewardTable):
    weight: float | None = None
    tolerance_previous: float | None = None
    tolerance_best: float | None = None
    cap: float | None = None


class _FailureTable(_RewardTable):
    oom: float | None = None
    diverged: float | None = None
    other: float | None = None


class _RewardFile(Settings):
    """The whole of reward.toml; keys left out keep the RewardWeights defaults."""

    efficiency: _EfficiencyTable = _EfficiencyTable()
    throughput: _LogRatioTable = _LogRatioTable()
    quality: _QualityTable = _QualityTable()
    degradation: _DegradationTable = _DegradationTable()
    cost: _LogRatioTable = _LogRatioTable()
    failure: _FailureTable = _FailureTable()


def load_reward_weights(path: str | Path | None = None) -> RewardWeights:
    """Load reward weights from a TOML file (default ``configs/reward.toml``).

    Keys left out keep their defaults; unknown sections or keys are rejected.

    Raises:
        ConfigError: the file is missing, not TOML, has unknown keys or invalid values.
    """
    p = config_file("reward.toml", path)
    raw = load_settings(_RewardFile, "reward.toml", p)
    values: dict[str, float] = {}
    for section, keys in _TOML_KEYS.items():
        table = getattr(raw, section).model_dump(exclude_unset=True)
        values |= {keys[key]: float(value) for key, value in table.items()}
    try:
        return RewardWeights(**values)
    except ConfigError as err:
        raise ConfigError(f"{p}: {err}") from err


@dataclass(frozen=True, slots=True)
class RewardBreakdown:
    """The reward of one run and its parts.

    ``total = efficiency + throughput_term + quality_term - degradation_penalty -
    failure_penalty``.

    Attributes:
        total: the reward r.
        efficiency: E, utilization-efficiency term.
        throughput_term: T, per-GPU throughput log-ratio term.
        quality_term: Q, bonus for improving on the workload's best loss.
        degradation_penalty: D, val-loss degradation penalty (>= 0).
        failure_penalty: P_fail of a failed run (>= 0), else 0.
        val_loss_change_previous: δ_prev, relative val-loss change vs the previous run.
        val_loss_change_best: δ_best, relative val-loss change vs the workload's best.
        cost_term: C, GPU-hours cost (negative when the run was cheaper than the reference).
    """

    total: float
    efficiency: float
    throughput_term: float
    quality_term: float
    degradation_penalty: float
    failure_penalty: float
    val_loss_change_previous: float
    val_loss_change_best: float
    cost_term: float = 0.0


def per_gpu_throughput(summary: RunSummary) -> float:
    """Return ρ = samples/s per GPU of a run (throughput when GPU count is unknown)."""
    if summary.gpu_hours > 0 and summary.duration_s > 0:
        gpus = summary.gpu_hours * 3600.0 / summary.duration_s
        return summary.throughput / gpus
    return summary.throughput


def _relative_change(loss: float, reference: float) -> float:
    """Return (loss - reference) / |reference|, or 0 if the reference is unusable."""
    if not math.isfinite(reference) or reference == 0.0:
        return 0.0
    return (loss - reference) / abs(reference)


def _clip(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def compute_reward(
    new: RunSummary,
    previous: RunSummary | None,
    best_val_loss: float,
    weights: RewardWeights,
    *,
    reference_throughput: float | None = None,
    reference_gpu_hours: float | None = None,
) -> RewardBreakdown:
    """Score a run against the previous run and the workload's best (module docstring).

    Args:
        new: the run being scored.
        previous: the workload's run before it, or None (first run of a campaign).
        best_val_loss: the workload's best final validation loss so far, before ``new``
            (``inf`` when unknown).
        weights: reward weights, e.g. from :func:`load_reward_weights`.
        reference_throughput: ρ_ref in samples/s per GPU (e.g. the workload's baseline);
            defaults to the previous run's per-GPU throughput.
        reference_gpu_hours: G_ref in GPU-hours (e.g. the workload's baseline run);
            defaults to the previous run's GPU-hours.
    """
    if new.failure != "none":
        penalty = weights.failure_penalty(new.failure)
        return RewardBreakdown(-penalty, 0.0, 0.0, 0.0, 0.0, penalty, 0.0, 0.0)

    w = weights
    shares = w.share_gpu + w.share_gpu_mem + w.share_cpu + w.share_mem
    util = (
        w.share_gpu * _clip(new.gpu_util_mean, 0.0, 1.0)
        + w.share_gpu_mem * _clip(new.gpu_mem_util_mean, 0.0, 1.0)
        + w.share_cpu * _clip(new.cpu_util_mean, 0.0, 1.0)
        + w.share_mem * _clip(new.mem_util_mean, 0.0, 1.0)
    ) / shares
    efficiency = w.efficiency_weight * util

    prev_ok = previous is not None and previous.failure == "none"
    if reference_throughput is None and prev_ok:
        assert previous is not None
        reference_throughput = per_gpu_throughput(previous)
    if reference_gpu_hours is None and prev_ok:
        assert previous is not None
        reference_gpu_hours = previous.gpu_hours
    rho = per_gpu_throughput(new)
    if reference_throughput is not None and reference_throughput > 0:
        c = w.throughput_log_clip
        ratio = math.log(rho / reference_throughput) if rho > 0 else -c
        throughput_term = w.throughput_weight * _clip(ratio, -c, c)
    else:
        throughput_term = 0.0

    loss = new.final_val_loss
    d_prev = 0.0
    if previous is not None and previous.failure == "none":
        d_prev = _relative_change(loss, previous.final_val_loss)
    d_best = _relative_change(loss, best_val_loss)
    excess = max(0.0, d_prev - w.tolerance_previous) + max(0.0, d_best - w.tolerance_best)
    cap = w.degradation_cap
    degradation = cap * math.tanh(w.degradation_weight * excess / cap) if cap > 0 else 0.0
    quality = w.quality_weight * _clip(-d_best, 0.0, w.quality_clip)

    if reference_gpu_hours is not None and reference_gpu_hours > 0 and new.gpu_hours > 0:
        c = w.cost_log_clip
        cost = w.cost_weight * _clip(math.log(new.gpu_hours / reference_gpu_hours), -c, c)
    else:
        cost = 0.0

    total = efficiency + throughput_term + quality - degradation - cost
    return RewardBreakdown(
        total, efficiency, throughput_term, quality, degradation, 0.0, d_prev, d_best, cost
    )


def objective(
    summary: RunSummary,
    reference_val_loss: float,
    weights: RewardWeights,
    reference_throughput: float | None = None,
    reference_gpu_hours: float | None = None,
) -> float:
    """Return the reward a run would get with no previous run: the oracle's objective.

    Same formula as :func:`compute_reward` with ``previous=None``, ``L* =
    reference_val_loss``, ``ρ_ref = reference_throughput`` (samples/s per GPU) and
    ``G_ref = reference_gpu_hours``. Pass the same references to every candidate of one
    workload (e.g. its baseline run's :func:`per_gpu_throughput` and ``gpu_hours``):
    without them the throughput term T and the cost term C are 0.
    """
    return compute_reward(
        summary,
        None,
        reference_val_loss,
        weights,
        reference_throughput=reference_throughput,
        reference_gpu_hours=reference_gpu_hours,
    ).total


def objective_vs_run(summary: RunSummary, reference: RunSummary, weights: RewardWeights) -> float:
    """Return :func:`objective` with a reference run's loss, per-GPU throughput and GPU-hours.

    A failed reference run gives no throughput or cost reference (T = C = 0).
    """
    ok = reference.failure == "none"
    return objective(
        summary,
        reference.final_val_loss,
        weights,
        reference_throughput=per_gpu_throughput(reference) if ok else None,
        reference_gpu_hours=reference.gpu_hours if ok and reference.gpu_hours > 0 else None,
    )
