"""The calibrated planner of round 11 (research/evaluate/planner.py)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "research" / "evaluate"))
from planner import CalibratedPlanner, training_priors  # noqa: E402

from jpo.evaluation.evaluate import evaluation_oracle_settings, load_evaluation_settings  # noqa: E402
from jpo.learning.reward import load_reward_weights  # noqa: E402
from jpo.sim.response import load_catalog, load_conditions, predict  # noqa: E402
from jpo.workload.constraints import load_constraints  # noqa: E402


def _planner(priors: list) -> CalibratedPlanner:
    settings = load_evaluation_settings()
    return CalibratedPlanner(
        priors=priors,
        conditions=load_conditions(None, **settings.conditions),
        weights=load_reward_weights(),
        oracle_settings=evaluation_oracle_settings(settings),
    )


def test_priors_are_the_training_split_only() -> None:
    catalog = load_catalog()
    priors = training_priors(catalog)
    assert priors and all(p.split == "train" for p in priors)
    assert {p.name for p in priors} < set(catalog)


def test_the_fit_never_starts_from_the_workload_itself_and_keeps_what_ci_knows() -> None:
    catalog = load_catalog()
    true = catalog["criteo-dlrm"]
    # The workload itself among the priors: the planner must still not use it.
    planner = _planner([*training_priors(catalog), true])
    campaign = ("criteo-dlrm", 0)
    assert planner.target(campaign, true, load_constraints()) is None  # no run yet
    run = predict(true, true.defaults, planner.conditions)
    planner.observe(campaign, true.defaults, run)
    fitted = planner.fitted(campaign, true)
    assert fitted is not None
    assert "criteo-dlrm.toml" not in fitted.source and "prior criteo-dlrm" not in fitted.source
    assert fitted.defaults == true.defaults and fitted.limits == true.limits
    assert fitted != dataclasses.replace(true, name=fitted.name, source=fitted.source)
    target = planner.target(campaign, true, load_constraints())
    assert target is not None
    load_constraints().validate(target)
