"""Tuning methods compared by ``jpo evaluate``, behind one small ask/tell interface.

Every method tunes the same workload from the same default configuration, sees the same
simulated runs, is scored by the same objective (:func:`jpo.reward.objective`) and has
every proposal checked by the same constraints before it may run. The evaluation loop
(:mod:`jpo.evaluate`) owns that checking: a tuner only proposes.

Methods:
    * :class:`JpoPolicyTuner` -- the JPO policy, driven through the CI stage's own mapping
      code (features -> action -> constraints, trust region included).
    * :class:`OptunaTuner` -- Optuna's TPE sampler, ask/tell over a search box.
    * :class:`RandomSearchTuner` -- uniform samples in the same box, inside the constraints.
      By default the per-round trust region is NOT applied: each round may jump anywhere in
      the box, which makes it a stronger baseline than a random walk limited to x2 per
      round (``configs/evaluate.toml`` ``[baselines] random_trust_region`` switches it on).
      The box (``TuningTask.box``) is by default what a trust-region method can reach
      from the default in R rounds (:func:`reach_box`: the same reachable set as JPO);
      ``[baselines] search_space = "constraints"`` searches the whole constrained range.
    * :class:`NoTuning` -- keeps the default configuration (the "before").
    * :class:`OracleTuner` -- runs the oracle's best configuration from round one
      (``envs.oracle.best_config``): the ceiling every method is measured against.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from jpo.schema import RunSummary
from jpo.workload import HYPERPARAMETER_NAMES, Hyperparameters

if TYPE_CHECKING:
    import pyarrow as pa

    from jpo.constraints import Constraints


@dataclass(frozen=True)
class TuningTask:
    """What a tuner knows when a campaign on one workload starts.

    Attributes:
        workload: catalog name of the workload profile.
        profile: the workload profile (``envs.response.WorkloadProfile``).
        constraints: the constraints for this workload (tunable set, ranges, trust region).
        default: the workload's default hyperparameters (round 0's configuration).
        default_summary: the measured run at the default configuration.
        seed: seed for any randomness the tuner uses.
        extra: method-specific inputs (e.g. the oracle's configuration).
        box: per tunable parameter, the (low, high) search-space bounds of the search
            baselines (None: the whole constrained range); see :func:`reach_box`.
    """

    workload: str
    profile: Any
    constraints: Constraints
    default: Hyperparameters
    default_summary: RunSummary
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)
    box: dict[str, tuple[float, float]] | None = None

    def bounds(self, name: str) -> tuple[float, float]:
        """Return the search bounds of one parameter (the box, else the constraints)."""
        spec = self.constraints.params[name]
        if self.box is not None and name in self.box:
            return self.box[name]
        return float(spec.min), float(spec.max)


def reach_box(
    constraints: Constraints, start: Hyperparameters, rounds: int
) -> dict[str, tuple[float, float]]:
    """Return the box a trust-region method can reach from ``start`` in ``rounds`` steps.

    Per tunable parameter with trust-region factor f: [start / f^R, start * f^R] (for
    integers also at least start -/+ R, as one step may always move by one), intersected
    with the constraints' bounds. Searching this box gives the baselines the same
    reachable set as JPO in the same number of rounds, without its per-step limit.
    """
    values = start.as_dict()
    box: dict[str, tuple[float, float]] = {}
    for name in constraints.tunable:
        spec = constraints.params[name]
        v = float(values[name])
        reach = spec.trust_region**rounds
        lo, hi = v / reach, v * reach
        if spec.type == "int":
            lo, hi = min(lo, v - rounds), max(hi, v + rounds)
        box[name] = (max(float(spec.min), lo), min(float(spec.max), hi))
    return box


class Tuner(ABC):
    """One tuning method on one workload: propose a configuration, learn from its run."""

    name: str = "tuner"

    def __init__(self, task: TuningTask) -> None:
        self.task = task
        self.current: Hyperparameters = task.default
        self.last_summary: RunSummary = task.default_summary
        self.last_table: pa.Table | None = task.extra.get("default_table")
        self.last_note: str = ""

    @property
    def uses_trust_region(self) -> bool:
        """Whether proposals must stay within the trust region of the current config."""
        return False

    @abstractmethod
    def ask(self) -> Hyperparameters:
        """Return the configuration to run next."""

    def tell(
        self,
        hp: Hyperparameters,
        summary: RunSummary,
        objective: float,
        table: pa.Table | None = None,
    ) -> None:
        """Record the run of ``hp``: its summary, observed objective and telemetry rows."""
        self.current = hp
        self.last_summary = summary
        self.last_table = table

    def reject(self, hp: Hyperparameters) -> None:
        """Record that ``hp`` failed validation and never ran (the default: forget it)."""
        del hp


class NoTuning(Tuner):
    """Keep the default configuration every round."""

    name = "no_tuning"

    def ask(self) -> Hyperparameters:
        """Return the default configuration."""
        return self.task.default


class OracleTuner(Tuner):
    """Run the oracle's best configuration (``task.extra["oracle_hp"]``) every round."""

    name = "oracle"

    def ask(self) -> Hyperparameters:
        """Return the oracle's configuration."""
        hp: Hyperparameters = self.task.extra["oracle_hp"]
        return hp


class RandomSearchTuner(Tuner):
    """Uniform random configurations inside the constraints.

    With ``trust_region=False`` (default) each proposal is drawn uniformly (log-uniformly
    on log-scale parameters) from the task's search box (``task.box``, else the whole
    constrained range) and rounded by the constraints; with ``True`` it is a uniform random
    action in [-1, 1]^k mapped through the trust region from the current configuration.
    """

    name = "random"

    def __init__(self, task: TuningTask, *, trust_region: bool = False) -> None:
        super().__init__(task)
        self._rng = np.random.default_rng(task.seed)
        self._trust_region = trust_region

    @property
    def uses_trust_region(self) -> bool:
        """Whether proposals are limited to the trust region."""
        return self._trust_region

    def ask(self) -> Hyperparameters:
        """Return a uniformly random configuration inside the constraints."""
        constraints = self.task.constraints
        if self._trust_region:
            k = len(constraints.tunable)
            return constraints.apply_action(self.current, self._rng.uniform(-1.0, 1.0, k))
        if self.task.box is None:
            sampled: Hyperparameters = constraints.sample_uniform(self._rng, base=self.task.default)
            return sampled
        values = self.task.default.as_dict()
        for name in constraints.tunable:
            lo, hi = self.task.bounds(name)
            if constraints.params[name].scale == "log":
                values[name] = math.exp(self._rng.uniform(math.log(lo), math.log(hi)))
            else:
                values[name] = self._rng.uniform(lo, hi)
        return _rounded(constraints, values)


class OptunaTuner(Tuner):
    """Optuna's TPE sampler (ask/tell) over the constrained box, maximizing the objective.

    Each tunable parameter gets an Optuna distribution with the constraints' range and
    scale (log for log-scale parameters, integer steps for integers, powers of two when
    the constraints require them); frozen parameters keep their default. A failed run
    (OOM, divergence) is told with its (penalized) objective, so TPE learns to avoid it.
    """

    name = "optuna_tpe"

    def __init__(self, task: TuningTask, *, n_startup_trials: int = 2) -> None:
        super().__init__(task)
        import optuna  # heavy import: only when this baseline runs

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(seed=task.seed, n_startup_trials=n_startup_trials)
        self._optuna = optuna
        self._study = optuna.create_study(direction="maximize", sampler=sampler)
        self._distributions = _optuna_distributions(task, optuna)
        self._pending: Any = None
        # The default run is free knowledge every method has: tell TPE about it.
        self._study.add_trial(
            optuna.trial.create_trial(
                params=_params_for(task.default, task.constraints, self._distributions),
                distributions=self._distributions,
                values=[float(task.extra.get("default_objective", 0.0))],
            )
        )

    def ask(self) -> Hyperparameters:
        """Return TPE's next configuration."""
        self._pending = self._study.ask(self._distributions)
        values = _decode_params(self._pending.params, self.task.default, self.task.constraints)
        return Hyperparameters.from_mapping(values)

    def tell(
        self,
        hp: Hyperparameters,
        summary: RunSummary,
        objective: float,
        table: pa.Table | None = None,
    ) -> None:
        """Report the observed objective of the last asked trial."""
        super().tell(hp, summary, objective, table)
        if self._pending is not None:
            value = objective if math.isfinite(objective) else -1e9
            self._study.tell(self._pending, value)
            self._pending = None

    def reject(self, hp: Hyperparameters) -> None:
        """Mark the pending trial failed: it never ran."""
        if self._pending is not None:
            self._study.tell(self._pending, state=self._optuna.trial.TrialState.FAIL)
            self._pending = None


def _param_spec(constraints: Constraints, name: str) -> Any:
    """Return the constraints' spec object for one parameter."""
    return constraints.params[name]


def _rounded(constraints: Constraints, values: dict[str, float | int]) -> Hyperparameters:
    """Round sampled values as the constraints do (integers, powers of two), in bounds."""
    out = dict(values)
    for name in constraints.tunable:
        spec = constraints.params[name]
        v = min(max(float(values[name]), float(spec.min)), float(spec.max))
        if spec.type == "int":
            if spec.power_of_two:
                exp = round(math.log2(max(v, 1.0)))
                v = 2.0**exp
                while v > spec.max:
                    v /= 2.0
                while v < spec.min:
                    v *= 2.0
            v = float(min(max(math.floor(v + 0.5), math.ceil(spec.min)), math.floor(spec.max)))
        out[name] = v
    return Hyperparameters.from_mapping(out)


def _optuna_distributions(task: TuningTask, optuna: Any) -> dict[str, Any]:
    """Build one Optuna distribution per tunable parameter (task box or constraints)."""
    constraints = task.constraints
    dists: dict[str, Any] = {}
    for name in constraints.tunable:
        spec = _param_spec(constraints, name)
        low, high = task.bounds(name)
        log = spec.scale == "log"
        if getattr(spec, "power_of_two", False):
            e_lo = math.ceil(math.log2(low))
            dists[name] = optuna.distributions.IntDistribution(
                e_lo, max(e_lo, math.floor(math.log2(high)))
            )
        elif spec.type == "int":
            lo_i, hi_i = math.ceil(low), max(math.ceil(low), math.floor(high))
            dists[name] = optuna.distributions.IntDistribution(lo_i, hi_i, log=log)
        else:
            dists[name] = optuna.distributions.FloatDistribution(float(low), float(high), log=log)
    return dists


def _params_for(
    hp: Hyperparameters, constraints: Constraints, dists: dict[str, Any]
) -> dict[str, Any]:
    """Encode a configuration as Optuna params (inverse of :func:`_decode_params`)."""
    values = hp.as_dict()
    params: dict[str, Any] = {}
    for name, dist in dists.items():
        value: float = values[name]
        if getattr(_param_spec(constraints, name), "power_of_two", False):
            value = round(math.log2(max(value, 1)))
        params[name] = type(dist.low)(min(max(value, dist.low), dist.high))
    return params


def _decode_params(
    params: dict[str, Any], default: Hyperparameters, constraints: Constraints
) -> dict[str, float | int]:
    """Decode Optuna params into hyperparameter values (frozen ones keep the default)."""
    values = default.as_dict()
    for name, value in params.items():
        spec = _param_spec(constraints, name)
        if getattr(spec, "power_of_two", False):
            values[name] = 2 ** int(value)
        else:
            values[name] = value
    return values


Proposal = tuple[Hyperparameters, str]
"""A configuration and a short note on how it was reached (e.g. ``jpo suggest``'s status)."""


class JpoPolicyTuner(Tuner):
    """The JPO policy, driven the way ``jpo suggest`` drives it.

    ``propose`` maps the last run to the next configuration: either the CI stage itself
    (:func:`jpo.suggest.suggest` in-process: features -> action -> constraints -> guards ->
    rollback) or its bare mapping (features -> action -> constraints); see
    :func:`jpo.evaluate.suggest_proposer` and :func:`jpo.evaluate.jpo_proposer`.
    """

    name = "jpo"

    def __init__(self, task: TuningTask, *, propose: Callable[..., Proposal]) -> None:
        super().__init__(task)
        self._propose = propose
        # The campaign's runs before the last one: the observation's context
        # (jpo.features.context_from_runs, as CI and the env build it) on the direct path.
        self._history: list[RunSummary] = []

    @property
    def uses_trust_region(self) -> bool:
        """The policy's proposals are bound by the trust region, as in CI."""
        return True

    def ask(self) -> Hyperparameters:
        """Return the policy's suggestion for the next run."""
        hp, self.last_note = self._propose(
            task=self.task,
            current=self.current,
            summary=self.last_summary,
            table=self.last_table,
            history=tuple(self._history),
        )
        return hp

    def tell(
        self,
        hp: Hyperparameters,
        summary: RunSummary,
        objective: float,
        table: pa.Table | None = None,
    ) -> None:
        """Advance to the run of ``hp``; keep the campaign's earlier runs."""
        self._history.append(self.last_summary)
        super().tell(hp, summary, objective, table)


TunerFactory = Callable[[TuningTask], Tuner]

__all__ = [
    "HYPERPARAMETER_NAMES",
    "JpoPolicyTuner",
    "NoTuning",
    "OptunaTuner",
    "OracleTuner",
    "Proposal",
    "RandomSearchTuner",
    "Tuner",
    "TunerFactory",
    "TuningTask",
    "reach_box",
]
