"""The yardstick every score is judged by: the evaluation's cluster conditions and oracle.

``jpo evaluate`` (:mod:`jpo.evaluation.evaluate`) and the oracle teacher
(:mod:`jpo.sim.teacher`) must judge configurations alike: the same cluster conditions
(``configs/evaluate.toml`` ``[conditions]`` over ``configs/cluster.toml``) and the same
oracle, whose val-loss tolerance is ``[scoring] oracle_val_loss_tolerance`` or, unset, the
quality bar's ``[quality_bar] val_loss_tolerance`` (so the oracle's improvement is one a
method may reach without failing the bar). It lives here, below the evaluation, so the
simulation never imports the evaluation. The file is read through
:func:`jpo.settings.load_settings`; the evaluation validates the whole file
(:func:`jpo.evaluation.evaluate.load_evaluation_settings`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from pydantic import ConfigDict, Field

from jpo.settings import Settings, load_settings
from jpo.sim.oracle import OracleSettings, load_oracle_settings
from jpo.sim.response import ClusterConditions, load_conditions

__all__ = ["Yardstick", "judged_oracle_settings", "load_yardstick"]

DEFAULT_VAL_LOSS_TOLERANCE = 0.01
"""The quality bar's tolerance when ``configs/evaluate.toml`` names none."""


class _View(Settings):
    """A partial view of ``configs/evaluate.toml``: the evaluation validates the rest."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class _ScoringView(_View):
    oracle_val_loss_tolerance: float | None = None


class _QualityBarView(_View):
    val_loss_tolerance: float = DEFAULT_VAL_LOSS_TOLERANCE


class _YardstickView(_View):
    """The keys of ``configs/evaluate.toml`` the yardstick reads."""

    conditions: dict[str, float] = Field(default_factory=dict)
    scoring: _ScoringView = _ScoringView()
    quality_bar: _QualityBarView = _QualityBarView()


@dataclass(frozen=True)
class Yardstick:
    """The cluster conditions and the oracle settings every score is judged by."""

    conditions: ClusterConditions
    oracle_settings: OracleSettings


def judged_oracle_settings(
    val_loss_tolerance: float, oracle_val_loss_tolerance: float | None = None
) -> OracleSettings:
    """Return ``configs/oracle.toml``'s settings held to the scoring rule's tolerance."""
    tolerance = val_loss_tolerance
    if oracle_val_loss_tolerance is not None:
        tolerance = oracle_val_loss_tolerance
    return dataclasses.replace(load_oracle_settings(), tolerance=tolerance)


def load_yardstick(path: str | Path | None = None) -> Yardstick:
    """Read the yardstick from ``configs/evaluate.toml`` (or ``path``)."""
    view = load_settings(_YardstickView, "evaluate.toml", path)
    return Yardstick(
        conditions=load_conditions(None, **view.conditions),
        oracle_settings=judged_oracle_settings(
            view.quality_bar.val_loss_tolerance, view.scoring.oracle_val_loss_tolerance
        ),
    )
