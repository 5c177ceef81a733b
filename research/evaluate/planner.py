"""A model-based planner: calibrate a profile on the campaign's runs, step towards its oracle.

Round 11's question (research/evaluate/RESULTS.md): the teacher that knows each
workload's oracle configuration reaches 0.955 on the held-out split, and a student that
sees one run's telemetry 0.45-0.53. Does a planner that knows no oracle, only the
response model's form, close the gap? After every run of a campaign it fits a profile
to the campaign's runs so far (:func:`jpo.sim.calibration.fit_profile`, prior: the catalog
training profile that best explains them, never the workload itself), searches that
fitted profile's oracle configuration (:func:`jpo.sim.oracle.best_config`, the settings every
score is judged by) and takes one trust-region step towards it. What the planner is told
beyond the runs is what CI knows too: the workload's default configuration (its
``config.ini``) and its pod limits (kube-state-metrics, DCGM FB_USED + FB_FREE).
A diagnostic, not a method JPO ships: ``diagnose.py planner`` scores it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from jpo.errors import ConfigError
from jpo.learning.reward import RewardWeights
from jpo.sim.calibration import (
    CalibrationSettings,
    best_explaining,
    fit_profile,
    load_calibration_settings,
)
from jpo.sim.oracle import OracleSettings, best_config
from jpo.sim.response import ClusterConditions, WorkloadProfile
from jpo.telemetry.schema import RunSummary
from jpo.workload.constraints import Constraints
from jpo.workload.types import Hyperparameters, WorkloadKey

Run = tuple[Hyperparameters, RunSummary]


@dataclasses.dataclass
class CalibratedPlanner:
    """Per campaign: the runs seen so far; per step: fit, search, one step towards."""

    priors: Sequence[WorkloadProfile]
    conditions: ClusterConditions
    weights: RewardWeights
    oracle_settings: OracleSettings
    calibration: CalibrationSettings = dataclasses.field(default_factory=load_calibration_settings)
    runs: dict[Any, list[Run]] = dataclasses.field(default_factory=dict)

    def observe(self, campaign: Any, hp: Hyperparameters, summary: RunSummary) -> None:
        """Record one measured run of ``campaign``."""
        self.runs.setdefault(campaign, []).append((hp, summary))

    def fitted(self, campaign: Any, known: WorkloadProfile) -> WorkloadProfile | None:
        """Return the profile fitted to the campaign's runs (None: no run trained yet).

        ``known`` supplies only what CI knows of the workload: its key, default
        configuration and pod limits; every response constant comes from the fit.
        """
        runs = self.runs.get(campaign, [])
        if not any(s.failure == "none" for _, s in runs):
            return None

        def known_parts(p: WorkloadProfile) -> WorkloadProfile:
            return dataclasses.replace(
                p,
                dataset=known.dataset,
                model=known.model,
                framework=known.framework,
                defaults=known.defaults,
                limits=known.limits,
            )

        candidates = [known_parts(p) for p in self.priors if p.name != known.name]
        if not candidates:
            raise ConfigError(f"planner: no prior profile other than {known.name!r}")

        prior = best_explaining(candidates, runs, self.conditions, self.calibration)
        key = WorkloadKey(known.dataset, known.model, known.framework)
        fit = fit_profile(
            key, runs, prior=prior, conditions=self.conditions, settings=self.calibration
        )
        return known_parts(fit)

    def target(
        self, campaign: Any, known: WorkloadProfile, constraints: Constraints
    ) -> Hyperparameters | None:
        """Return the fitted profile's oracle configuration (None: nothing to aim at)."""
        profile = self.fitted(campaign, known)
        if profile is None:
            return None
        try:
            return best_config(
                profile, constraints, self.conditions, self.weights, settings=self.oracle_settings
            ).hp
        except ConfigError:
            return None  # nothing inside the constraints trains on the fitted profile


def training_priors(catalog: Mapping[str, WorkloadProfile]) -> list[WorkloadProfile]:
    """Return the catalog's training-split profiles (the planner's priors)."""
    return [p for p in catalog.values() if p.split == "train"]
