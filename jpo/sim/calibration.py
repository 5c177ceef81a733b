"""Calibration: fit a workload's profile constants to its recorded runs.

The replay env must answer "what if" for real workloads whose profile nobody wrote down.
:func:`fit_profile` starts from a prior profile (the catalog profile with the same
workload key, else the catalog profile that best explains the runs) and fits, by
:func:`scipy.optimize.least_squares` on the log of each constant, the constants that the
recorded summaries can observe through :func:`jpo.sim.response.predict`:

- step time (throughput, GPU utilization, CPU utilization, duration): ``step_overhead_s``,
  ``gpu_s_per_sample_fixed``, ``gpu_s_per_sample_per_layer``, ``optimizer_s_per_param``,
  ``cpu_s_per_sample``, ``trainer_cpu_cores``, ``startup_s``;
- memory (GPU and host memory utilization): ``gpu_runtime_overhead_mib``,
  ``params_per_layer``, ``activation_bytes_per_sample_per_layer``, ``host_base_bytes``,
  ``host_bytes_per_sample``;
- loss (final validation loss): ``initial_loss``, ``irreducible_loss``, ``n_c``,
  ``epochs_min``, ``b_noise``, ``reference_learning_rate``, ``lr_noise_penalty``,
  ``overfit_rate``.

Residuals are log-ratios predicted/recorded per observable (successful runs; failed runs
only bound the fit: an OOM run's memory must exceed the limit, a diverged run's learning
rate the divergence threshold, both as hinge residuals). A weak pull toward the prior
(``configs/calibration.toml``) keeps constants the runs cannot see where the prior put
them. Limits (pod CPU, memory, GPU memory) are not observable from fractions and come
from the prior. Runs are predicted under ``conditions`` (default: configs/cluster.toml),
the same base the replay env uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ConfigDict, field_validator

from jpo.errors import ConfigError
from jpo.settings import Settings, load_settings
from jpo.sim.response import (
    ClusterConditions,
    WorkloadProfile,
    load_catalog,
    load_conditions,
    lr_ratio,
    predict,
)
from jpo.telemetry.schema import RunSummary
from jpo.workload.types import Hyperparameters, WorkloadKey

FITTED: tuple[str, ...] = (
    "step_overhead_s",
    "gpu_s_per_sample_fixed",
    "gpu_s_per_sample_per_layer",
    "optimizer_s_per_param",
    "cpu_s_per_sample",
    "trainer_cpu_cores",
    "startup_s",
    "gpu_runtime_overhead_mib",
    "params_per_layer",
    "activation_bytes_per_sample_per_layer",
    "host_base_bytes",
    "host_bytes_per_sample",
    "initial_loss",
    "irreducible_loss",
    "n_c",
    "epochs_min",
    "b_noise",
    "reference_learning_rate",
    "lr_noise_penalty",
    "overfit_rate",
)
"""Profile constants :func:`fit_profile` adjusts (all others come from the prior)."""

OBSERVED: tuple[str, ...] = (
    "throughput",
    "gpu_util_mean",
    "cpu_util_mean",
    "duration_s",
    "gpu_mem_util_mean",
    "mem_util_mean",
    "final_val_loss",
)
"""RunSummary fields the fit matches (log-ratio residuals). Means, not p95s: the p95 of a
noisy series overstates its level by about 1.6 noise standard deviations."""


@dataclass(frozen=True, slots=True)
class CalibrationSettings:
    """``configs/calibration.toml`` (see the comments there)."""

    prior_weight: float
    log_bound: float
    failure_weight: float
    floor: float
    max_nfev: int
    tolerance: float


class _FitTable(Settings):
    """``[fit]`` of calibration.toml: every value a number > 0."""

    model_config = ConfigDict(strict=True)
    prior_weight: float
    log_bound: float
    failure_weight: float
    floor: float
    max_nfev: int | float
    tolerance: float

    @field_validator("*")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError(f"must be a number > 0, got {v!r}")
        return v


class _CalibrationFile(Settings):
    """The whole of calibration.toml."""

    fit: _FitTable


def load_calibration_settings(path: str | Path | None = None) -> CalibrationSettings:
    """Load the fit settings (default ``configs/calibration.toml``)."""
    fit = load_settings(_CalibrationFile, "calibration.toml", path).fit
    return CalibrationSettings(**{**fit.model_dump(), "max_nfev": int(fit.max_nfev)})


def _log_ratio(pred: float, obs: float, floor: float) -> float:
    return math.log(max(pred, floor) / max(obs, floor))


def residuals(
    profile: WorkloadProfile,
    runs: Sequence[tuple[Hyperparameters, RunSummary]],
    conditions: ClusterConditions,
    settings: CalibrationSettings,
) -> list[float]:
    """Return the fit residuals of ``profile`` against the recorded ``runs``."""
    out: list[float] = []
    lim = profile.limits
    for hp, rec in runs:
        pred = predict(profile, hp, conditions)
        if rec.failure == "none":
            if pred.failure != "none":
                out += [settings.failure_weight] * len(OBSERVED)
                continue
            for name in OBSERVED:
                out.append(_log_ratio(getattr(pred, name), getattr(rec, name), settings.floor))
        elif rec.failure == "oom":
            need = max(
                profile.gpu_memory_mib(hp) / lim.gpu_memory_mib,
                profile.host_memory_bytes(hp) / lim.memory_bytes,
            )
            out.append(settings.failure_weight * max(0.0, -math.log(need)))
        elif rec.failure == "diverged":
            r = lr_ratio(profile, hp) / profile.divergence_factor
            out.append(settings.failure_weight * max(0.0, -math.log(r)))
    return out


def best_explaining(
    candidates: Sequence[WorkloadProfile],
    runs: Sequence[tuple[Hyperparameters, RunSummary]],
    conditions: ClusterConditions,
    settings: CalibrationSettings,
) -> WorkloadProfile:
    """Return the candidate profile whose predictions miss the recorded runs least."""

    def cost(p: WorkloadProfile) -> float:
        return float(np.sum(np.square(residuals(p, runs, conditions, settings))))

    return min(candidates, key=cost)


def _choose_prior(
    key: WorkloadKey,
    runs: Sequence[tuple[Hyperparameters, RunSummary]],
    conditions: ClusterConditions,
    settings: CalibrationSettings,
) -> WorkloadProfile:
    catalog = load_catalog()
    for p in catalog.values():
        if p.key == key:
            return p
    best = best_explaining(list(catalog.values()), runs, conditions, settings)
    return replace(best, dataset=key.dataset, model=key.model, framework=key.framework)


def fit_profile(
    key: WorkloadKey,
    runs: Sequence[tuple[Hyperparameters, RunSummary]],
    prior: WorkloadProfile | None = None,
    *,
    conditions: ClusterConditions | None = None,
    settings: CalibrationSettings | None = None,
) -> WorkloadProfile:
    """Fit a profile for ``key`` to recorded (hyperparameters, summary) pairs.

    Raises:
        ConfigError: no runs, or no successful run to fit to.
    """
    from scipy.optimize import least_squares

    runs = list(runs)
    if not any(s.failure == "none" for _, s in runs):
        raise ConfigError(
            f"workload {key.slug()}: calibration needs at least one successful run, got "
            f"{len(runs)} run(s) (all failed or none): record a run that completes"
        )
    cond = conditions if conditions is not None else load_conditions()
    s = settings if settings is not None else load_calibration_settings()
    base = prior if prior is not None else _choose_prior(key, runs, cond, s)
    base = replace(base, dataset=key.dataset, model=key.model, framework=key.framework)
    x0 = np.array([math.log(max(getattr(base, n), 1e-30)) for n in FITTED])
    zero_floor = {n for n in FITTED if getattr(base, n) == 0.0}

    def build(x: np.ndarray) -> WorkloadProfile:
        vals: dict[str, Any] = {
            n: (0.0 if n in zero_floor else float(math.exp(v)))
            for n, v in zip(FITTED, x, strict=True)
        }
        return replace(base, **vals)

    def fun(x: np.ndarray) -> np.ndarray:
        p = build(x)
        res = residuals(p, runs, cond, s)
        pull = (s.prior_weight * (x - x0)).tolist()
        return np.asarray(res + pull, dtype=float)

    lo, hi = x0 - s.log_bound, x0 + s.log_bound
    fit = least_squares(
        fun,
        x0,
        bounds=(lo, hi),
        x_scale=1.0,
        max_nfev=s.max_nfev,
        ftol=s.tolerance,
        xtol=s.tolerance,
        gtol=s.tolerance,
    )
    source = f"fitted to {len(runs)} run(s) of {key.slug()} from prior {base.source or base.name}"
    return replace(build(fit.x), name=f"{key.slug()}-calibrated", source=source)
