"""Domain randomization: synthetic workload profiles around the catalog's training split.

Eleven training workloads are too few for a policy to learn a tuning rule that transfers
to workloads it never saw. :func:`random_profiles` draws any number of synthetic profiles
(``configs/randomization.toml`` documents every setting):

- base: a training-split catalog profile chosen uniformly (held-out profiles are never
  read, so held-out evaluation stays honest);
- every response-model constant of the base is multiplied by an independent log-uniform
  factor ``exp(U(-ln s, ln s))`` with the spread ``s`` of its ``[spread.*]`` key
  (``initial_loss`` and ``irreducible_loss`` share one factor, ``loss_scale``);
- the defaults (the ``config.ini`` a campaign starts from) move the same way, rounded and
  clamped into the constraints; pod limits stay the base's unless ``[spread.limits]``
  names them (``gpus`` rounded to a power of two); the framework label is drawn
  from the training split's frameworks;
- a share ``input_bound_share`` of the profiles is made input-pipeline bound at its
  defaults (``[regimes]``): ``cpu_s_per_sample`` is set so that the pipeline's CPU time
  per step is ``ratio`` times the GPU's step time (the response model's
  ``t_step = max(t_gpu, t_cpu)``), a regime the catalog's training split lacks;
- a draw is kept only if the oracle's reference configuration
  (:func:`jpo.sim.oracle.reference_config`: the default, or the default made to train) trains
  and lasts between ``min_default_hours`` and ``max_default_hours``.

Profile ``i`` depends only on ``(seed, i)`` and the training split, so a run is
reproducible and adding profiles keeps the earlier ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from jpo.errors import ConfigError
from jpo.settings import Settings, config_file, load_settings
from jpo.sim.response import (
    ClusterConditions,
    WorkloadProfile,
    profile_from_dict,
)

__all__ = [
    "RandomizationSettings",
    "input_bound_cpu_s_per_sample",
    "load_randomization",
    "random_profiles",
]

_SPREAD_SECTIONS = ("defaults", "limits", "memory", "compute", "optimization", "loss")
_LOSS_SCALE = "loss_scale"


@dataclass(frozen=True)
class RandomizationSettings:
    """``configs/randomization.toml`` (see the comments there)."""

    seed: int
    max_tries: int
    max_default_hours: float
    min_default_hours: float
    runs_per_profile: int
    spread: Mapping[str, Mapping[str, float]]
    input_bound_share: float = 0.0
    input_bound_ratio_min: float = 1.0
    input_bound_ratio_max: float = 1.0


def _non_negative(v: float, info: ValidationInfo) -> float:
    """Return ``v`` if it is >= 0 (as the old loader worded it), else raise."""
    if v < 0:
        raise ValueError(f"{info.field_name} must be a number >= 0, got {v!r}")
    return v


class _SamplingTable(Settings):
    """``[sampling]`` of randomization.toml."""

    model_config = ConfigDict(strict=True)
    seed: int
    max_tries: int = Field(ge=1)
    max_default_hours: float
    min_default_hours: float
    runs_per_profile: int = Field(ge=1)

    @field_validator("*")
    @classmethod
    def _at_least_zero(cls, v: float, info: ValidationInfo) -> float:
        return _non_negative(v, info)

    @model_validator(mode="after")
    def _hours_ordered(self) -> _SamplingTable:
        if not self.min_default_hours < self.max_default_hours:
            raise ValueError("min_default_hours must be < max_default_hours")
        return self


class _RegimesTable(Settings):
    """``[regimes]`` of randomization.toml (defaults: no input-bound regime)."""

    model_config = ConfigDict(strict=True)
    input_bound_share: float = Field(default=0.0, le=1.0)
    input_bound_ratio_min: float = 1.0
    input_bound_ratio_max: float = 1.0

    @field_validator("*")
    @classmethod
    def _at_least_zero(cls, v: float, info: ValidationInfo) -> float:
        return _non_negative(v, info)

    @model_validator(mode="after")
    def _ratios_ordered(self) -> _RegimesTable:
        if not 1.0 <= self.input_bound_ratio_min <= self.input_bound_ratio_max:
            raise ValueError("need 1 <= input_bound_ratio_min <= input_bound_ratio_max")
        return self


class _RandomizationFile(Settings):
    """The whole of randomization.toml; ``[spread.*]`` is checked by :func:`_spread`."""

    sampling: _SamplingTable
    regimes: _RegimesTable = _RegimesTable()
    spread: dict[str, Any] = Field(default_factory=dict)


def _spread(raw_spread: Mapping[str, Any], file: Path) -> dict[str, dict[str, float]]:
    """Return the ``[spread.*]`` factors; unknown sections or keys and factors < 1 raise."""
    from jpo.sim.response import PROFILE_FIELDS

    known = {(s, k) for s, k, kind in PROFILE_FIELDS if kind != "str"} | {("loss", _LOSS_SCALE)}
    spread: dict[str, dict[str, float]] = {}
    for section, table in raw_spread.items():
        if section not in _SPREAD_SECTIONS or not isinstance(table, dict):
            raise ConfigError(f"{file}: unknown section [spread.{section}]")
        for key, v in table.items():
            if (section, key) not in known or (section == "loss" and key.endswith("_loss")):
                raise ConfigError(f"{file}: unknown key {key!r} in [spread.{section}]")
            if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 1.0:
                raise ConfigError(f"{file}: [spread.{section}] {key} must be >= 1, got {v!r}")
            spread.setdefault(section, {})[key] = float(v)
    return spread


def load_randomization(
    path: str | Path | None = None, seed: int | None = None
) -> RandomizationSettings:
    """Load the randomization settings (default ``configs/randomization.toml``).

    ``seed`` replaces the file's ``[sampling] seed`` (another set of draws, e.g. a
    validation set); None keeps it.

    Raises:
        ConfigError: unreadable file, missing key, unknown field or a spread below 1.
    """
    file = config_file("randomization.toml", path)
    raw = load_settings(_RandomizationFile, "randomization.toml", file)
    sampling = raw.sampling.model_dump()
    if seed is not None:
        sampling["seed"] = seed
    return RandomizationSettings(
        spread=_spread(raw.spread, file), **sampling, **raw.regimes.model_dump()
    )


def input_bound_cpu_s_per_sample(data: Mapping[str, Mapping[str, Any]], ratio: float) -> float:
    """Return cpu_s_per_sample making t_cpu = ratio * t_gpu at the defaults (no contention).

    ``data`` is a profile's TOML form (``WorkloadProfile.as_toml_dict()``); ``ratio`` 1
    is the balance point: above it the profile is input-pipeline bound at its defaults.
    """
    d, lim, mem, comp = data["defaults"], data["limits"], data["memory"], data["compute"]
    b, layers = float(d["batch_size"]), float(d["num_layers"])
    n = mem["params_fixed"] + mem["params_per_layer"] * layers
    busy = (
        b
        / lim["gpus"]
        * (comp["gpu_s_per_sample_fixed"] + comp["gpu_s_per_sample_per_layer"] * layers)
    )
    t_gpu = comp["step_overhead_s"] + busy + comp["optimizer_s_per_param"] * n
    cores = lim["cpu_cores"] - comp["trainer_cpu_cores"]
    return float(ratio * t_gpu * cores / b)


def _factor(rng: np.random.Generator, spread: float) -> float:
    if spread <= 1.0:
        return 1.0
    return math.exp(rng.uniform(-math.log(spread), math.log(spread)))


def _draw(
    index: int,
    base: WorkloadProfile,
    frameworks: Sequence[str],
    rng: np.random.Generator,
    s: RandomizationSettings,
) -> WorkloadProfile:
    """Draw one candidate profile around ``base`` (not yet checked)."""
    from jpo.workload.constraints import load_constraints

    data = base.as_toml_dict()
    for section in _SPREAD_SECTIONS:
        for key, spread in s.spread.get(section, {}).items():
            f = _factor(rng, spread)
            if section == "loss" and key == _LOSS_SCALE:
                data["loss"]["initial_loss"] *= f
                data["loss"]["irreducible_loss"] *= f
            elif section == "limits" and key == "gpus":
                # whole GPUs per pod, a power of two as nodes offer them
                data["limits"]["gpus"] = 2 ** max(0, round(math.log2(data["limits"]["gpus"] * f)))
            else:
                data[section][key] = data[section][key] * f
    cons = load_constraints()
    d = data["defaults"]
    for name in ("batch_size", "num_layers", "epochs"):
        spec = cons.params[name]
        d[name] = int(min(max(round(d[name]), max(1, spec.min)), spec.max))
    lr = cons.params["learning_rate"]
    d["learning_rate"] = float(min(max(d["learning_rate"], lr.min), lr.max))
    if rng.uniform() < s.input_bound_share:
        ratio = rng.uniform(s.input_bound_ratio_min, s.input_bound_ratio_max)
        data["compute"]["cpu_s_per_sample"] = input_bound_cpu_s_per_sample(data, ratio)
    tag = f"rand{index:05d}"
    data["workload"] |= {
        "name": f"rand-{index:05d}",
        "dataset": tag,
        "framework": frameworks[int(rng.integers(len(frameworks)))],
        "split": "train",
        "description": f"domain-randomized profile around {base.name}",
    }
    return profile_from_dict(data, source=f"randomized:{tag}<-{base.name}")


def random_profiles(
    catalog: Mapping[str, WorkloadProfile],
    count: int,
    *,
    settings: RandomizationSettings | None = None,
    conditions: ClusterConditions | None = None,
) -> list[WorkloadProfile]:
    """Return ``count`` synthetic training profiles around the catalog's training split.

    Raises:
        ConfigError: the catalog has no training workload, or ``max_tries`` draws of one
            profile all failed the checks (loosen the spreads).
    """
    from jpo.sim.oracle import reference_config

    s = settings if settings is not None else load_randomization()
    cond = conditions if conditions is not None else ClusterConditions()
    bases = [p for _, p in sorted(catalog.items()) if p.split == "train"]
    if not bases:
        raise ConfigError("domain randomization needs training-split profiles in the catalog")
    frameworks = sorted({p.framework for p in bases})
    out = []
    for i in range(count):
        rng = np.random.default_rng([s.seed, i])
        for _ in range(s.max_tries):
            base = bases[int(rng.integers(len(bases)))]
            try:
                cand = _draw(i, base, frameworks, rng, s)
                _hp, ref = reference_config(cand, cond)
            except ConfigError:
                continue
            hours = ref.duration_s / 3600.0
            if s.min_default_hours <= hours <= s.max_default_hours:
                out.append(cand)
                break
        else:
            raise ConfigError(
                f"domain randomization: no valid draw for profile {i} in {s.max_tries} tries; "
                "narrow the [spread.*] factors in configs/randomization.toml"
            )
    return out
