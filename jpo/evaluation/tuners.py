"""Tuning methods compared by ``jpo evaluate``, behind one small ask/tell interface.

Every method tunes the same workload from the same default configuration, sees the same
simulated runs, is scored by the same objective (:func:`jpo.learning.reward.objective`) and has
every proposal checked by the same constraints before it may run. The evaluation loop
(:mod:`jpo.evaluation.evaluate`) owns that checking: a tuner only proposes.

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
      (``jpo.sim.oracle.best_config``): the ceiling every method is measured against.

Honest baselines (issue 25): each sees only what a CI pipeline sees -- the constraints,
the default configuration, the measured default run and its own measured runs -- never
the response model, the workload profile or the evaluation's noise-free objective. Each
scores its runs itself (:meth:`CampaignRules.score`: :func:`jpo.learning.reward.objective_vs_run`
against the measured default run) under the scoring rule (measured val loss within
:attr:`CampaignRules.val_loss_tolerance` of the measured default), keeps the best run as
its anchor, proposes only within one trust-region step of it (:attr:`Tuner.anchor`) and
passes every batch/depth change through the CI stage's memory guard
(:func:`jpo.stage.guards.memory_guard`):

    * :class:`RuleOfThumbTuner` -- what an engineer does by hand: double the batch with the
      learning rate scaled linearly while it pays, then epochs down, lr x2, lr /2.
    * :class:`PatternSearchTuner` -- coordinate / pattern search in the action space.
    * :class:`LocalTPETuner` -- Optuna TPE over the one-step trust region around the best run.

A user's own method: subclass :class:`Tuner` (``ask`` / ``tell``; ``anchor`` when its
trust region is measured from another configuration than the last one) and pass
``--tuner module:Class`` to ``jpo evaluate`` (docs/maintainer-guide.md, "Adding a tuner").
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from jpo.sim.oracle import reach_box
from jpo.telemetry.schema import RunSummary
from jpo.workload.types import HYPERPARAMETER_NAMES, Hyperparameters

if TYPE_CHECKING:
    import pyarrow as pa

    from jpo.workload.constraints import Constraints


@dataclass(frozen=True)
class CampaignRules:
    """What every method and the CI stage share: one tolerance, the memory guard, the reward.

    Attributes:
        val_loss_tolerance: the scoring rule's tolerance: a run counts only when its
            measured final val loss is at most the measured default's x (1 + this).
        max_gpu_memory_fraction: the CI stage's memory guard limit (configs/suggest.toml).
        activation_fraction: the memory guard's activation share (configs/suggest.toml).
        weights: reward weights (None: configs/reward.toml).
    """

    val_loss_tolerance: float = 0.01
    max_gpu_memory_fraction: float = 0.90
    activation_fraction: float = 1.0
    weights: Any = None

    def score(self, summary: RunSummary, reference: RunSummary) -> float:
        """Return a measured run's objective against the measured reference (default) run."""
        from jpo.learning.reward import objective_vs_run

        weights = self.weights if self.weights is not None else _default_weights()
        return float(objective_vs_run(summary, reference, weights))

    def holds(self, summary: RunSummary, reference: RunSummary) -> bool:
        """Tell whether a measured run trained and kept val loss within the tolerance."""
        if summary.failure != "none" or not math.isfinite(summary.final_val_loss):
            return False
        if reference.failure != "none" or not math.isfinite(reference.final_val_loss):
            return True
        return summary.final_val_loss <= reference.final_val_loss * (1.0 + self.val_loss_tolerance)


_WEIGHTS: list[Any] = []


def _default_weights() -> Any:
    """Return configs/reward.toml's weights (read once)."""
    if not _WEIGHTS:
        from jpo.learning.reward import load_reward_weights

        _WEIGHTS.append(load_reward_weights())
    return _WEIGHTS[0]


@dataclass(frozen=True)
class TuningTask:
    """What a tuner knows when a campaign on one workload starts.

    Attributes:
        workload: catalog name of the workload profile.
        profile: the workload profile (``jpo.sim.response.WorkloadProfile``).
        constraints: the constraints for this workload (tunable set, ranges, trust region).
        default: the workload's default hyperparameters (round 0's configuration).
        default_summary: the measured run at the default configuration.
        seed: seed for any randomness the tuner uses.
        extra: method-specific inputs (e.g. the oracle's configuration).
        rules: the campaign's shared rules (tolerance, memory guard, reward weights).
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
    rules: CampaignRules = field(default_factory=lambda: CampaignRules())

    def bounds(self, name: str) -> tuple[float, float]:
        """Return the search bounds of one parameter (the box, else the constraints)."""
        spec = self.constraints.params[name]
        if self.box is not None and name in self.box:
            return self.box[name]
        return float(spec.min), float(spec.max)


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

    @property
    def anchor(self) -> Hyperparameters:
        """The configuration the next proposal's trust region is measured from."""
        return self.current

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


# --------------------------------------------------------------------------- honest baselines


@dataclass(frozen=True)
class MeasuredRun:
    """One run a CI pipeline saw: its configuration, measured summary and own score."""

    hp: Hyperparameters
    summary: RunSummary
    score: float
    holds: bool


def _key(hp: Hyperparameters) -> tuple[float, ...]:
    """Return a configuration's identity (for "never repeat a configuration")."""
    return tuple(round(float(v), 12) for v in hp.as_dict().values())


class HonestTuner(Tuner):
    """Base of the honest baselines: sees only measured runs (module docstring).

    It reads ``task.constraints``, ``task.default``, ``task.default_summary`` and
    ``task.rules`` and nothing else of the task (never ``profile`` nor ``extra``). Runs are
    scored by :meth:`CampaignRules.score` against the measured default run; the best run
    that holds the scoring rule is the anchor of every proposal's trust region.
    """

    def __init__(self, task: TuningTask) -> None:
        # Not Tuner.__init__: it reads task.extra, which an honest baseline never does.
        self.task = task
        self.current = task.default
        self.last_summary = task.default_summary
        self.last_table = None
        self.last_note = ""
        rules = task.rules
        default = task.default_summary
        first = MeasuredRun(
            task.default, default, rules.score(default, default), rules.holds(default, default)
        )
        self.runs: list[MeasuredRun] = [first]
        self.best: MeasuredRun = first
        self.tried: set[tuple[float, ...]] = {_key(task.default)}

    @property
    def uses_trust_region(self) -> bool:
        """Proposals stay within one trust-region step of the anchor (the best run)."""
        return True

    @property
    def anchor(self) -> Hyperparameters:
        """The best run's configuration: proposals are one trust-region step from it."""
        return self.best.hp

    def measure(self, hp: Hyperparameters, summary: RunSummary) -> MeasuredRun:
        """Score a measured run against the measured default run (the scoring rule)."""
        rules, ref = self.task.rules, self.task.default_summary
        return MeasuredRun(hp, summary, rules.score(summary, ref), rules.holds(summary, ref))

    def tell(
        self,
        hp: Hyperparameters,
        summary: RunSummary,
        objective: float,
        table: pa.Table | None = None,
    ) -> None:
        """Record a measured run; ``objective`` (the evaluation's yardstick) is ignored."""
        del objective, table  # only what CI sees: the measured run, scored by the rules
        self.current = hp
        self.last_summary = summary
        run = self.measure(hp, summary)
        self.runs.append(run)
        self.tried.add(_key(hp))
        self.observe(run)
        if run.holds and (not self.best.holds or run.score > self.best.score):
            self.best = run

    def observe(self, run: MeasuredRun) -> None:
        """Hook: a measured run arrived (before the best run is updated)."""
        del run

    def reject(self, hp: Hyperparameters) -> None:
        """Remember a configuration the constraints refused (never propose it again)."""
        self.tried.add(_key(hp))

    def step(self, values: dict[str, float]) -> Hyperparameters | None:
        """Return the best run moved towards ``values`` within one step, guarded; None if tried.

        The move is clamped into the constraints and the trust region around the best run,
        then the CI stage's memory guard (:func:`jpo.stage.guards.memory_guard`) keeps the best
        run's batch size and depth when the move is predicted not to fit. A result that
        equals a configuration already run (or refused) is None.
        """
        from jpo.errors import ConstraintViolation

        try:
            hp = self.task.constraints.clamp(self.best.hp, values)
        except ConstraintViolation:
            return None
        hp = self.guarded(hp)
        return None if _key(hp) in self.tried else hp

    def guarded(self, hp: Hyperparameters) -> Hyperparameters:
        """Apply the CI stage's memory guard to a move away from the best run."""
        from jpo.stage.guards import memory_guard

        rules = self.task.rules
        fraction = self.best.summary.gpu_mem_util_p95
        result = memory_guard(
            self.best.hp,
            hp,
            observed_fraction=fraction if fraction > 0 else None,
            gpu_memory_total_mib=None,
            max_fraction=rules.max_gpu_memory_fraction,
            activation_fraction=rules.activation_fraction,
        )
        return result.hyperparameters


class RuleOfThumbTuner(HonestTuner):
    """What an experienced engineer does by hand (issue 25).

    Each round: double the batch size with the learning rate scaled linearly while the
    last run held val loss, improved the score and used less than ``memory_threshold`` of
    the GPU's memory (p95). After a run that degraded, failed or did not pay, go back to
    the best run and try the next knob: epochs down one trust-region step, then the
    learning rate x2, then /2 (a knob that paid is tried again from the new best run).
    Never repeats a configuration; with nothing left it reruns the best configuration.
    """

    name = "rule_of_thumb"
    KNOBS: tuple[str, ...] = ("batch", "epochs_down", "lr_up", "lr_down")

    def __init__(self, task: TuningTask, *, memory_threshold: float = 0.45) -> None:
        super().__init__(task)
        self._memory_threshold = memory_threshold
        self._knob = 0
        self._last_knob: int | None = None

    def _move(self, knob: str) -> dict[str, float]:
        hp = self.best.hp
        spec = self.task.constraints.params["epochs"]
        if knob == "batch":
            return {"batch_size": hp.batch_size * 2.0, "learning_rate": hp.learning_rate * 2.0}
        if knob == "epochs_down":
            return {"epochs": hp.epochs / spec.trust_region}
        if knob == "lr_up":
            return {"learning_rate": hp.learning_rate * 2.0}
        return {"learning_rate": hp.learning_rate / 2.0}

    def observe(self, run: MeasuredRun) -> None:
        """Keep the knob when its run paid, else go on to the next knob."""
        paid = run.holds and run.score > self.best.score
        if self._last_knob is not None and self.KNOBS[self._last_knob] == "batch":
            paid = paid and run.summary.gpu_mem_util_p95 < self._memory_threshold
        if self._last_knob is not None and not paid:
            self._knob = max(self._knob, self._last_knob + 1)

    def ask(self) -> Hyperparameters:
        """Return the next configuration of the rule (module docstring)."""
        if self._knob == 0 and self.best.summary.gpu_mem_util_p95 >= self._memory_threshold:
            self._knob = 1  # the batch already uses the memory an engineer allows
        for knob in range(self._knob, len(self.KNOBS)):
            if knob == 0 and "batch_size" not in self.task.constraints.tunable:
                continue
            hp = self.step(self._move(self.KNOBS[knob]))
            if hp is not None:
                self._knob, self._last_knob = knob, knob
                return hp
        self._last_knob = None
        return self.best.hp


class PatternSearchTuner(HonestTuner):
    """Coordinate / pattern search in the action space from the default (issue 25).

    From the best run it tries one tunable coordinate at a time, +step then -step in
    action units (:meth:`jpo.workload.constraints.Constraints.apply_action`: 1 = a full
    trust-region step); a move that improves the score under the scoring rule becomes the
    best run and is repeated (the pattern move); after a sweep with no improvement the
    step halves. Moves pass the CI stage's memory guard; configurations already run are
    skipped.
    """

    name = "pattern"

    def __init__(self, task: TuningTask, *, min_step: float = 0.125) -> None:
        super().__init__(task)
        self._step = 1.0
        self._min_step = min_step
        self._pattern: np.ndarray | None = None
        self._pending: np.ndarray | None = None
        self._cursor = 0

    def _moves(self) -> list[np.ndarray]:
        k = len(self.task.constraints.tunable)
        out = []
        for i in range(k):
            for sign in (1.0, -1.0):
                a = np.zeros(k)
                a[i] = sign * self._step
                out.append(a)
        return out

    def observe(self, run: MeasuredRun) -> None:
        """Keep the direction that paid (pattern move); else go on with the sweep."""
        paid = run.holds and run.score > self.best.score
        self._pattern = self._pending if paid else None

    def _try(self, action: np.ndarray) -> Hyperparameters | None:
        from jpo.errors import ConstraintViolation

        try:
            hp = self.task.constraints.apply_action(self.best.hp, action)
        except ConstraintViolation:
            return None
        hp = self.guarded(hp)
        return None if _key(hp) in self.tried else hp

    def ask(self) -> Hyperparameters:
        """Return the next move of the pattern search."""
        if self._pattern is not None:
            hp = self._try(self._pattern)
            if hp is not None:
                self._pending = self._pattern
                return hp
        while self._step >= self._min_step:
            moves = self._moves()
            while self._cursor < len(moves):
                action = moves[self._cursor]
                self._cursor += 1
                hp = self._try(action)
                if hp is not None:
                    self._pending = action
                    return hp
            self._cursor = 0
            self._step /= 2.0
        self._pending = None
        return self.best.hp


class LocalTPETuner(HonestTuner):
    """Optuna TPE over the one-step trust region around the best run (issue 25).

    Its search space is the action space [-1, 1]^k around the current best run
    (:meth:`jpo.workload.constraints.Constraints.apply_action`). Every ask rebuilds the study with
    every run so far, re-encoded as an action relative to the current best run
    (:meth:`jpo.workload.constraints.Constraints.action_towards`), told the score under the
    scoring rule (a run that breaks the val-loss rule or fails gets the worst value seen
    minus one, so TPE learns the rule it is scored by, not the raw reward).
    """

    name = "tpe_local"

    def __init__(self, task: TuningTask, *, n_startup_trials: int = 2) -> None:
        super().__init__(task)
        import optuna  # heavy import: only when this baseline runs

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        self._n_startup = n_startup_trials
        self._asks = 0

    def _value(self, run: MeasuredRun) -> float:
        worst = min(r.score for r in self.runs if math.isfinite(r.score))
        return run.score if run.holds and math.isfinite(run.score) else worst - 1.0

    def ask(self) -> Hyperparameters:
        """Return TPE's next configuration in the trust region around the best run."""
        optuna = self._optuna
        cons = self.task.constraints
        names = [f"a_{n}" for n in cons.tunable]
        dists = {n: optuna.distributions.FloatDistribution(-1.0, 1.0) for n in names}
        sampler = optuna.samplers.TPESampler(
            seed=(self.task.seed + self._asks) % 2**32, n_startup_trials=self._n_startup
        )
        study = optuna.create_study(direction="maximize", sampler=sampler)
        for run in self.runs:
            action = cons.action_towards(self.best.hp, run.hp)
            params = {n: float(min(max(a, -1.0), 1.0)) for n, a in zip(names, action, strict=True)}
            study.add_trial(
                optuna.trial.create_trial(
                    params=params, distributions=dists, values=[self._value(run)]
                )
            )
        self._asks += 1
        for _ in range(20):  # a repeat of a run already made teaches TPE nothing
            trial = study.ask(dists)
            action = np.array([trial.params[n] for n in names])
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            hp = self.guarded(cons.apply_action(self.best.hp, action))
            if _key(hp) not in self.tried:
                return hp
        return self.best.hp


Proposal = tuple[Hyperparameters, str]
"""A configuration and a short note on how it was reached (e.g. ``jpo suggest``'s status)."""


class JpoPolicyTuner(Tuner):
    """The JPO policy, driven the way ``jpo suggest`` drives it.

    ``propose`` maps the last run to the next configuration: either the CI stage itself
    (:func:`jpo.stage.suggest.suggest` in-process: features -> action -> constraints -> guards ->
    rollback) or its bare mapping (features -> action -> constraints); see
    :func:`jpo.evaluation.evaluate.suggest_proposer` and
    :func:`jpo.evaluation.evaluate.jpo_proposer`.
    """

    name = "jpo"

    def __init__(self, task: TuningTask, *, propose: Callable[..., Proposal]) -> None:
        super().__init__(task)
        self._propose = propose
        # The campaign's runs before the last one: the observation's context
        # (jpo.learning.features.context_from_runs, as CI and the env build it) on the direct path.
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
    "CampaignRules",
    "HonestTuner",
    "JpoPolicyTuner",
    "LocalTPETuner",
    "MeasuredRun",
    "NoTuning",
    "OptunaTuner",
    "OracleTuner",
    "PatternSearchTuner",
    "Proposal",
    "RandomSearchTuner",
    "RuleOfThumbTuner",
    "Tuner",
    "TunerFactory",
    "TuningTask",
    "reach_box",
]
