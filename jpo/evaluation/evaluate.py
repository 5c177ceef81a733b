"""``jpo evaluate``: JPO against Optuna TPE, random search, no tuning and the oracle.

Protocol (issue 8, item 1). For each workload of the chosen set and each seed:

1. Run the workload's default configuration once (round 0). Every method starts from this
   same measured run.
2. For each method, for rounds 1..R: the method proposes a configuration (``ask``); the
   proposal is validated by the constraints (an invalid one is counted and never runs:
   the workload reruns its current configuration); the run is simulated by the response
   model (:func:`jpo.sim.response.simulate_run`: time-varying co-tenant contention and
   measurement noise); the method is told the measured run (``tell``).
   Every method sees the same noise draw in the same round (common random numbers).
3. Scoring. Every run is scored with the oracle's objective (:func:`jpo.sim.oracle.objective`:
   the reward of :mod:`jpo.learning.reward` with no previous run, reference loss and per-GPU
   throughput from the workload's reference configuration, i.e. its default, or the
   default made to train when it fails), so every method and the oracle optimize the same
   thing. Methods choose with the objective they
   OBSERVE (noisy); results are scored with the noise-free objective of the same
   configuration (:func:`jpo.sim.response.predict` at the mean contention). The fraction of
   the oracle's improvement after round r is
   ``(obj(config_r) - obj(default)) / (obj(oracle) - obj(default))``, where
   ``config_r`` is the method's incumbent (the best observed so far among the runs that
   trained and whose measured validation loss held the quality bar against the measured
   default run, the default included: the same constraint the oracle obeys) or its
   round-r configuration (``[run] score`` in ``configs/evaluate.toml``; both are stored).
   Two oracles: the global one (:func:`jpo.sim.oracle.best_config` over the whole
   constraint box; ``oracle_fraction``, the quality bar's figure) and the reach-box one
   (the same search restricted to what a trust-region method reaches from the default in
   R steps, :func:`jpo.sim.oracle.reach_constraints`; ``oracle_reach_fraction``, reported).

A shift in the cluster (``[shift]`` in ``configs/evaluate.toml``): from round
``[shift] round`` on, runs are simulated under ``[conditions]`` updated with ``[shift]
conditions`` (e.g. co-tenant contention 0.15 -> 0.6); every row also holds the noise-free
objective of its values under those conditions against their own reference
(``objective_shifted_true``, ``default_objective_shifted``) and whether it ran shifted.

Outputs (:func:`jpo.evaluation.report.write_report`): ``report.md``, ``rounds.parquet`` (one
row per workload, seed, method and round), ``summary.json`` and PNG plots under ``plots/``.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from jpo.errors import ConfigError, ConstraintViolation
from jpo.evaluation.tuners import (
    CampaignRules,
    JpoPolicyTuner,
    LocalTPETuner,
    NoTuning,
    OptunaTuner,
    OracleTuner,
    PatternSearchTuner,
    Proposal,
    RandomSearchTuner,
    RuleOfThumbTuner,
    Tuner,
    TuningTask,
    reach_box,
)
from jpo.paths import BUNDLED_POLICY_DIR, REPO_ROOT, config_path
from jpo.settings import Settings, config_file, load_settings
from jpo.telemetry.schema import RunSummary
from jpo.workload.types import HYPERPARAMETER_NAMES, Hyperparameters

if TYPE_CHECKING:
    import pandas as pd

    from jpo.policy.artifact import LocalPolicy
    from jpo.policy.source import PolicySource
    from jpo.policy.step import Actor
    from jpo.sim.oracle import OracleSettings
    from jpo.sim.response import WorkloadProfile
    from jpo.stage.suggest import SuggestSettings
    from jpo.workload.constraints import Constraints

__all__ = [
    "EVALUATE_CONFIG_PATH",
    "METHODS",
    "EvaluationResult",
    "EvaluationSettings",
    "QualityBar",
    "evaluate",
    "evaluation_oracle_settings",
    "jpo_proposer",
    "load_evaluation_settings",
    "method_summary",
    "quality_bar",
    "select_workloads",
    "workload_seed",
    "workload_summary",
]

EVALUATE_CONFIG_PATH = config_path("evaluate.toml")

METHODS: tuple[str, ...] = (
    "jpo",
    "rule_of_thumb",
    "pattern",
    "tpe_local",
    "optuna_tpe",
    "random",
    "no_tuning",
    "oracle",
)
"""Method names ``jpo evaluate`` knows, in default report order."""

HONEST_BASELINES: tuple[str, ...] = ("rule_of_thumb", "pattern", "tpe_local")
"""Baselines that see only measured runs, inside JPO's constraints and trust region."""

ROLES: tuple[str, ...] = ("training", "validation", "test")
"""Roles of a workload set (configs/evaluate.toml [sets]): what it may be used for."""

_SPLITS = ("train", "holdout", "all")
_SCORES = ("incumbent", "last")


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class EvaluationSettings:
    """Settings of one evaluation (``configs/evaluate.toml``; each key documented there)."""

    rounds: int = 5
    seeds: int = 1
    base_seed: int = 0
    split: str = "holdout"
    methods: tuple[str, ...] = METHODS
    score: str = "incumbent"
    scrape_interval_s: float = 15.0
    conditions: dict[str, float] = field(default_factory=dict)
    jpo_path: str = "suggest"
    search_space: str = "reach"
    random_trust_region: bool = False
    optuna_startup_trials: int = 2
    min_oracle_gap: float = 1e-6
    oracle_val_loss_tolerance: float | None = None
    oracle_fraction_min: float = 0.90
    val_loss_tolerance: float = 0.01
    val_loss_ok_share_min: float = 0.95
    must_beat: tuple[str, ...] = ("optuna_tpe", "random")
    default_runs: int = 5
    rule_of_thumb_memory_fraction: float = 0.45
    tuners: dict[str, str] = field(default_factory=dict)
    sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    margin_min: float = 0.10
    shift_round: int = 0
    shift_conditions: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if self.shift_round < 0:
            problems.append(f"shift round must be >= 0 (0: no shift), got {self.shift_round}")
        if self.default_runs < 1:
            problems.append(f"default_runs must be >= 1, got {self.default_runs}")
        if not (0.0 < self.rule_of_thumb_memory_fraction <= 1.0):
            problems.append(
                "rule_of_thumb_memory_fraction must be in (0, 1], got "
                f"{self.rule_of_thumb_memory_fraction}"
            )
        for set_name, spec in self.sets.items():
            if spec.get("role") not in ROLES:
                problems.append(
                    f"[sets.{set_name}] role must be one of {ROLES}, got {spec.get('role')!r}"
                )
        if self.rounds < 1:
            problems.append(f"rounds must be >= 1, got {self.rounds}")
        if self.seeds < 1:
            problems.append(f"seeds must be >= 1, got {self.seeds}")
        if self.split not in _SPLITS:
            problems.append(f"split must be one of {_SPLITS}, got {self.split!r}")
        if self.score not in _SCORES:
            problems.append(f"score must be one of {_SCORES}, got {self.score!r}")
        known = (*METHODS, *self.tuners)
        unknown = [m for m in self.methods if m not in known]
        if unknown or not self.methods:
            problems.append(
                f"methods must be a non-empty subset of {known}, got {unknown}; "
                "add your own with --tuner module:Class"
            )
        if self.jpo_path not in ("suggest", "direct"):
            problems.append(f"jpo path must be 'suggest' or 'direct', got {self.jpo_path!r}")
        if self.search_space not in ("reach", "constraints"):
            problems.append(
                f"search_space must be 'reach' or 'constraints', got {self.search_space!r}"
            )
        if not (self.scrape_interval_s > 0):
            problems.append(f"scrape_interval_s must be > 0, got {self.scrape_interval_s}")
        if problems:
            raise ConfigError("evaluation settings: " + "; ".join(problems))

    def with_overrides(self, **overrides: Any) -> EvaluationSettings:
        """Return a copy with the non-None ``overrides`` applied (CLI flags)."""
        values = asdict(self)
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["methods"] = tuple(values["methods"])
        values["must_beat"] = tuple(values["must_beat"])
        return EvaluationSettings(**values)

    def shifted(self, rnd: int) -> bool:
        """Tell whether round ``rnd`` runs under ``[shift] conditions`` (from ``[shift] round``)."""
        return 0 < self.shift_round <= rnd

    @property
    def rules(self) -> CampaignRules:
        """The campaign rules every honest baseline shares with the CI stage."""
        from jpo.stage.suggest import load_suggest_settings

        suggest = load_suggest_settings()
        return CampaignRules(
            val_loss_tolerance=self.val_loss_tolerance,
            max_gpu_memory_fraction=suggest.memory.max_gpu_memory_fraction,
            activation_fraction=suggest.memory.activation_fraction,
        )


class _RunTable(Settings):
    rounds: int | None = None
    seeds: int | None = None
    base_seed: int | None = None
    split: str | None = None
    methods: tuple[str, ...] | None = None
    score: str | None = None
    scrape_interval_s: float | None = None
    default_runs: int | None = None


class _BaselinesTable(Settings):
    search_space: str | None = None
    random_trust_region: bool | None = None
    optuna_startup_trials: int | None = None
    rule_of_thumb_memory_fraction: float | None = None


class _JpoTable(Settings):
    path: str | None = None


class _ScoringTable(Settings):
    min_oracle_gap: float | None = None
    oracle_val_loss_tolerance: float | None = None


class _QualityBarTable(Settings):
    oracle_fraction_min: float | None = None
    val_loss_tolerance: float | None = None
    val_loss_ok_share_min: float | None = None
    must_beat: tuple[str, ...] | None = None
    margin_min: float | None = None


class _ShiftTable(Settings):
    round: int | None = None
    conditions: dict[str, float] = Field(default_factory=dict)


class EvaluateFile(Settings):
    """``configs/evaluate.toml`` as written (each key documented there; unset keys: defaults)."""

    run: _RunTable = _RunTable()
    conditions: dict[str, float] = Field(default_factory=dict)
    baselines: _BaselinesTable = _BaselinesTable()
    jpo: _JpoTable = _JpoTable()
    scoring: _ScoringTable = _ScoringTable()
    quality_bar: _QualityBarTable = _QualityBarTable()
    tuners: dict[str, str] = Field(default_factory=dict)
    sets: dict[str, dict[str, Any]] = Field(default_factory=dict)
    shift: _ShiftTable = _ShiftTable()

    def settings(self) -> EvaluationSettings:
        """Return the file's :class:`EvaluationSettings` (raises ConfigError on bad values)."""
        values: dict[str, Any] = {}
        for table in (self.run, self.baselines, self.scoring, self.quality_bar):
            values |= table.model_dump(exclude_unset=True)
        if "path" in self.jpo.model_fields_set:
            values["jpo_path"] = self.jpo.path
        if self.shift.round is not None:
            values["shift_round"] = self.shift.round
        values["shift_conditions"] = dict(self.shift.conditions)
        return EvaluationSettings(
            **values, conditions=dict(self.conditions), tuners=dict(self.tuners),
            sets={k: dict(v) for k, v in self.sets.items()},
        )  # fmt: skip


def load_evaluation_settings(path: str | Path | None = None) -> EvaluationSettings:
    """Read ``configs/evaluate.toml`` (or ``path``) into :class:`EvaluationSettings`."""
    file = config_file("evaluate.toml", path)  # $JPO_CONFIG_DIR honoured when no path
    model = load_settings(EvaluateFile, "evaluate.toml", file)
    try:
        return model.settings()
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{file}: {err}") from err
    except ConfigError as err:
        raise ConfigError(f"{file}: {err}") from err


# --------------------------------------------------------------------------- workloads


def select_workloads(
    catalog: Mapping[str, Any], names: Sequence[str] | None = None, split: str = "holdout"
) -> list[str]:
    """Return the workload names to evaluate: ``names`` if given, else the ``split``'s.

    Raises:
        ConfigError: an unknown workload name, an unknown split, or an empty selection.
    """
    if names:
        unknown = [n for n in names if n not in catalog]
        if unknown:
            raise ConfigError(f"unknown workload(s) {unknown}; known: {', '.join(sorted(catalog))}")
        return list(dict.fromkeys(names))
    if split not in _SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(_SPLITS)}, got {split!r}")
    chosen = [n for n, p in sorted(catalog.items()) if split == "all" or p.split == split]
    if not chosen:
        raise ConfigError(f"the catalog has no workloads in split {split!r}")
    return chosen


# --------------------------------------------------------------------------- the JPO path


def jpo_proposer(policy: Actor) -> Callable[..., Proposal]:
    """Return the bare policy mapping: features -> action -> constraints (no guards).

    It computes the observation with :func:`jpo.learning.features.build_observation` (the CI
    stage's feature code) and maps the policy's action with :func:`jpo.policy.step.policy_step`,
    the CI stage's and Serve's mapping (a non-finite action is a PolicyError; entries ordered
    by the manifest's action names; :meth:`jpo.workload.constraints.Constraints.apply_action`:
    trust region, rounding, frozen keys). ``[jpo] path = "direct"`` selects it; the default
    drives the whole CI stage (:func:`suggest_proposer`).
    """
    from jpo.learning.features import build_observation, context_from_runs
    from jpo.policy.step import policy_step

    source = f"file:{getattr(policy, 'path', 'policy')}"

    def propose(
        *,
        task: TuningTask,
        current: Hyperparameters,
        summary: RunSummary,
        history: Sequence[RunSummary] = (),
        **_: Any,
    ) -> Proposal:
        # The context CI and the env build (median baseline, best loss and previous failure
        # over the campaign's runs); the model size stays unknown, as in training and CI.
        context = context_from_runs(summary, history, framework=task.profile.framework)
        obs = build_observation(summary, current, task.constraints, context)
        step = policy_step(policy, obs, task.constraints, current, source=source)
        return step.hyperparameters, "direct"

    return propose


def suggest_proposer(
    policy_path: str | Path,
    workdir: Path,
    settings: SuggestSettings | None = None,
    policy_source: PolicySource | None = None,
) -> Callable[..., Proposal]:
    """Return a proposer that runs the CI stage itself, :func:`jpo.stage.suggest.suggest`.

    Each campaign (workload x seed) gets its own ``config.ini`` and audit log under
    ``workdir``; each round hands ``suggest`` the last simulated run's telemetry through
    an in-memory :class:`jpo.telemetry.sources.MetricSource`, and the local policy artifact. So
    the policy's proposals go through exactly what CI applies: features, action,
    constraints, guards (failed-config memory, memory guard, hysteresis), feedback and
    rollback. ``--approve`` is implied (evaluation has no human in the loop). ``settings``
    replaces ``configs/suggest.toml`` (a CI-stage variant, e.g. ``[probe]`` on), so research
    scripts compare designs without patching the module; ``policy_source`` replaces the
    local artifact as the stage's policy (e.g. a planner answering as a policy).
    """
    from jpo.policy.source import LocalPolicySource
    from jpo.stage.suggest import SuggestOptions, SuggestStatus, load_suggest_settings, suggest

    source = policy_source if policy_source is not None else LocalPolicySource(Path(policy_path))
    settings = settings if settings is not None else load_suggest_settings()
    # Keyed by campaign, never by id(task): a finished campaign's task is garbage, and
    # CPython hands its id to a later task, which then inherited the old config.ini.
    folders: dict[tuple[str, int], Path] = {}

    def propose(
        *,
        task: TuningTask,
        current: Hyperparameters,
        summary: RunSummary,
        table: Any = None,
        **_: Any,
    ) -> Proposal:
        # The CI stage reads the campaign's history from its own audit log.
        campaign = (task.workload, task.seed)
        folder = folders.get(campaign)
        if folder is None:
            folder = workdir / f"{task.workload}-{task.seed}-{len(folders)}"
            folder.mkdir(parents=True, exist_ok=False)
            _write_config_ini(folder / "config.ini", task.profile, current, task.constraints.frozen)
            folders[campaign] = folder
        if table is None:
            raise ConfigError("suggest path: no telemetry table for the last run (a bug)")
        options = SuggestOptions(
            config=folder / "config.ini", approve=True, log_path=folder / "audit.jsonl"
        )
        result = suggest(
            options, metric_source=_MemorySource(table), policy_source=source, settings=settings
        )
        if result.status == SuggestStatus.POLICY_UNAVAILABLE:
            from jpo.errors import PolicyError

            raise PolicyError(f"{policy_path}: {result.message}")
        if result.status in (SuggestStatus.CHANGED, SuggestStatus.ROLLED_BACK):
            assert result.after is not None
            return result.after, str(result.status)
        return current, str(result.status)

    return propose


def _write_config_ini(
    path: Path, profile: Any, hp: Hyperparameters, frozen: Sequence[str] = ()
) -> None:
    """Write a workload's config.ini (the catalog profile's labels, ``hp``, ``[jpo] freeze``)."""
    lines = [
        f"# {profile.name}: evaluation campaign (written by jpo evaluate)",
        "",
        "[workload]",
        f"dataset = {profile.dataset}",
        f"model = {profile.model}",
        f"framework = {profile.framework}",
        "",
        "[hyperparameters]",
        *(f"{k} = {v}" for k, v in hp.as_dict().items()),
        "",
    ]
    if frozen:
        lines += ["[jpo]", f"freeze = {', '.join(frozen)}", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def _memory_source_class() -> type:
    """Build the in-memory MetricSource class lazily (jpo.telemetry.sources imports pyarrow)."""
    from jpo.telemetry.sources import MetricSource

    class MemorySource(MetricSource):
        """One run's telemetry, served as a MetricSource (the latest and only run)."""

        def __init__(self, table: Any) -> None:
            self._table = table

        def list_runs(self, key: Any) -> list[str]:
            return sorted(set(self._table.column("run_id").to_pylist()))

        def run_table(
            self, key: Any, run_id: str | None = None, *, lookback: str | None = None
        ) -> Any:
            return self._table

        def history(self, start: Any, end: Any, step: float) -> Any:
            return self._table

    return MemorySource


def _MemorySource(table: Any) -> Any:
    return _memory_source_class()(table)


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class EvaluationResult:
    """All rounds of one evaluation, plus what produced them."""

    rows: list[dict[str, Any]]
    settings: EvaluationSettings
    workloads: tuple[str, ...]
    policy: str | None
    policy_version: int | None
    set_name: str = ""

    def frame(self) -> pd.DataFrame:
        """Return the rounds as a pandas DataFrame (one row per workload/seed/method/round)."""
        import pandas as pd

        return pd.DataFrame(self.rows)


@dataclass(frozen=True)
class _Scorer:
    """One workload's yardstick, the same for every method, seed and round.

    The objective is the oracle's (:func:`jpo.sim.oracle.objective`: the reward with no
    previous run, ``L*`` and ``ρ_ref`` from the workload's reference configuration, i.e.
    its default, or the default made to train when it fails), so "fraction of the
    oracle's improvement" compares like with like.
    """

    profile: Any
    conditions: Any
    weights: Any
    reference: RunSummary

    def summary(self, hp: Hyperparameters) -> RunSummary:
        """Return the noise-free run of ``hp`` (:func:`jpo.sim.response.predict`)."""
        from jpo.sim.response import predict

        return predict(self.profile, hp, self.conditions)

    def objective(self, summary: RunSummary) -> float:
        """Return the objective of a run (noise-free or measured)."""
        from jpo.sim.oracle import objective

        return float(objective(summary, self.reference, self.weights))


def _make_tuner(
    method: str,
    task: TuningTask,
    settings: EvaluationSettings,
    propose: Callable[..., Proposal] | None,
) -> Tuner:
    """Build the tuner of ``method`` for one campaign."""
    if method == "jpo":
        if propose is None:
            raise ConfigError("method 'jpo' needs a policy (--policy PATH or the bundled one)")
        return JpoPolicyTuner(task, propose=propose)
    if method == "optuna_tpe":
        return OptunaTuner(task, n_startup_trials=settings.optuna_startup_trials)
    if method == "random":
        return RandomSearchTuner(task, trust_region=settings.random_trust_region)
    if method == "no_tuning":
        return NoTuning(task)
    if method == "oracle":
        return OracleTuner(task)
    if method == "rule_of_thumb":
        return RuleOfThumbTuner(task, memory_threshold=settings.rule_of_thumb_memory_fraction)
    if method == "pattern":
        return PatternSearchTuner(task)
    if method == "tpe_local":
        return LocalTPETuner(task, n_startup_trials=settings.optuna_startup_trials)
    if method in settings.tuners:
        return load_tuner_class(settings.tuners[method])(task)
    raise ConfigError(f"unknown method {method!r}; known: {', '.join(METHODS)}")


def load_tuner_class(spec: str) -> type[Tuner]:
    """Import a user's tuner, ``module:Class`` (a :class:`jpo.evaluation.tuners.Tuner` subclass).

    Raises:
        ConfigError: a malformed spec, a module that does not import, a missing class, or a
            class that is not a Tuner; the message names the spec and the fix.
    """
    import importlib

    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise ConfigError(f"--tuner {spec!r}: expected module:Class, e.g. mytuners:GridTuner")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"--tuner {spec!r}: cannot import module {module_name!r} ({err}); put it on PYTHONPATH"
        ) from err
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Tuner)):
        raise ConfigError(
            f"--tuner {spec!r}: {class_name!r} is not a jpo.evaluation.tuners.Tuner subclass in "
            f"{module_name!r}; subclass Tuner and implement ask()"
        )
    return cls


def tuner_methods(specs: Sequence[str]) -> dict[str, str]:
    """Return ``{method name: spec}`` for ``--tuner module:Class`` specs (the class's ``name``)."""
    out: dict[str, str] = {}
    for spec in specs:
        cls = load_tuner_class(spec)
        name = str(getattr(cls, "name", "")) or spec
        if name in METHODS or name == "tuner":
            name = spec.partition(":")[2]
        if name in METHODS or name in out:
            raise ConfigError(
                f"--tuner {spec!r}: method name {name!r} is taken; set a unique class "
                "attribute name = '...'"
            )
        out[name] = spec
    return out


def _validate(
    constraints: Constraints, hp: Hyperparameters, previous: Hyperparameters | None
) -> str:
    """Return '' when ``hp`` passes the constraints, else the violation's message."""
    try:
        constraints.validate(hp, previous=previous)
    except ConstraintViolation as err:
        return str(err) or "constraint violation"
    return ""


def workload_seed(name: str) -> int:
    """Return a workload's stable seed component (CRC-32 of its catalog name)."""
    import zlib

    return zlib.crc32(name.encode("utf-8"))


def _seed_for(*parts: int) -> np.random.Generator:
    """Return a generator seeded from integers (common random numbers across methods)."""
    return np.random.default_rng(list(parts))


def _summary_fields(summary: RunSummary | None) -> dict[str, Any]:
    """Flatten a run summary into report columns (NaN when the run did not happen)."""
    names = (
        "cpu_util_mean",
        "mem_util_mean",
        "gpu_util_mean",
        "gpu_mem_util_mean",
        "throughput",
        "duration_s",
        "gpu_hours",
        "final_val_loss",
    )
    if summary is None:
        return {n: math.nan for n in names} | {"failure": "not_run"}
    return {n: float(getattr(summary, n)) for n in names} | {"failure": summary.failure}


Proposer = Callable[..., Proposal]
"""A proposer of method ``"jpo"``: keyword arguments ``task``, ``current``, ``summary``,
``history``, ``table`` (:class:`jpo.evaluation.tuners.JpoPolicyTuner` passes them) ->
``(configuration, note)``."""


def evaluate(
    settings: EvaluationSettings,
    *,
    workloads: Sequence[str] | None = None,
    policy: LocalPolicy | None = None,
    policy_path: str | None = None,
    constraints: Constraints | None = None,
    progress: bool = True,
    workdir: str | Path | None = None,
    catalog: Mapping[str, WorkloadProfile] | None = None,
    frozen: Mapping[str, Sequence[str]] | None = None,
    set_name: str = "",
    suggest_settings: SuggestSettings | None = None,
    propose: Proposer | None = None,
    policy_source: PolicySource | None = None,
    wrap_propose: Callable[[Proposer], Proposer] | None = None,
) -> EvaluationResult:
    """Run the evaluation protocol (module docstring) and return every round.

    The last four arguments are the plug-in points for research drivers (a variant of the
    CI stage, a teacher, a planner, a policy wrapper): each replaces one piece of method
    ``"jpo"`` for this call only, so nothing is patched.

    Args:
        settings: rounds, seeds, methods, scoring and baseline settings.
        workloads: catalog names; None selects ``settings.split``.
        policy: the JPO policy (required when ``"jpo"`` is among the methods).
        policy_path: the policy's artifact folder (required by the ``suggest`` path).
        constraints: the constraints (default: ``configs/constraints.toml``).
        progress: show a rich progress bar on stderr.
        workdir: where the suggest path keeps each campaign's config.ini and audit log
            (default: a temporary folder, removed afterwards).
        catalog: the workload profiles to draw from (default: ``configs/workloads``), e.g.
            synthetic validation profiles from :func:`jpo.sim.randomization.random_profiles`.
        frozen: per workload, the parameters its config.ini freezes (``[jpo] freeze``),
            e.g. from :func:`load_workload_folder`.
        set_name: the workload set's name in ``configs/evaluate.toml`` ``[sets]`` (reported
            with its role).
        suggest_settings: the CI stage's settings on the suggest path (default:
            ``configs/suggest.toml``), e.g. a design variant under comparison.
        propose: the proposer of method ``"jpo"`` (default: built from ``policy`` and
            ``[jpo] path``; :func:`jpo_proposer`, :func:`suggest_proposer`), e.g. a teacher.
        policy_source: the CI stage's policy on the suggest path (default: the local
            artifact at ``policy_path``), e.g. a planner answering as a policy.
        wrap_propose: applied to the proposer chosen above (e.g. to note each step's
            campaign before the policy acts).
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="jpo-evaluate-") as tmp:
        setup = _Setup.load(settings, constraints, catalog, frozen)
        names = select_workloads(setup.catalog, workloads, settings.split)
        if "jpo" in settings.methods and policy is None and propose is None:
            raise ConfigError("method 'jpo' needs a policy: pass --policy PATH")
        folder = Path(workdir) if workdir is not None else Path(tmp)
        plugins = _Plugins(suggest_settings, propose, policy_source, wrap_propose)
        chosen = _proposer(settings, policy, policy_path, folder, plugins)
        rows = _evaluate_rows(settings, setup, names, chosen, progress)
    version = policy.version if policy is not None else None
    return EvaluationResult(rows, settings, tuple(names), policy_path, version, set_name)


def evaluation_oracle_settings(settings: EvaluationSettings) -> OracleSettings:
    """Return the oracle's settings under ``settings`` (the one every score is judged by)."""
    from jpo.sim.yardstick import judged_oracle_settings

    # The oracle holds validation loss to the quality bar's tolerance (unless configured
    # otherwise), so that its improvement is one a method may reach without failing the bar.
    return judged_oracle_settings(settings.val_loss_tolerance, settings.oracle_val_loss_tolerance)


def _catalog() -> dict[str, WorkloadProfile]:
    from jpo.sim.response import load_catalog

    return load_catalog()


@dataclass(frozen=True)
class _Plugins:
    """The plug-in points of :func:`evaluate` (each None: the shipped piece)."""

    suggest_settings: SuggestSettings | None
    propose: Proposer | None
    policy_source: PolicySource | None
    wrap_propose: Callable[[Proposer], Proposer] | None


def _proposer(
    settings: EvaluationSettings,
    policy: LocalPolicy | None,
    policy_path: str | None,
    workdir: Path,
    plugins: _Plugins,
) -> Proposer | None:
    """Return method ``"jpo"``'s proposer: the caller's, else the ``[jpo] path``'s."""
    propose = plugins.propose
    if propose is None and policy is not None and settings.jpo_path == "suggest":
        if policy_path is None:
            raise ConfigError("the suggest path needs the policy's artifact folder (policy_path)")
        propose = suggest_proposer(
            policy_path, workdir, plugins.suggest_settings, plugins.policy_source
        )
    elif propose is None and policy is not None:
        propose = jpo_proposer(policy)
    if propose is not None and plugins.wrap_propose is not None:
        propose = plugins.wrap_propose(propose)
    return propose


@dataclass(frozen=True)
class _Setup:
    """What every workload of one evaluation shares: profiles, constraints, yardsticks."""

    catalog: Mapping[str, WorkloadProfile]
    constraints: Constraints
    frozen: Mapping[str, Sequence[str]]
    weights: Any
    conditions: Any
    oracle_settings: OracleSettings
    rules: CampaignRules
    shifted: Any
    """The conditions from ``settings.shift_round`` on (None: no shift)."""

    @classmethod
    def load(
        cls,
        settings: EvaluationSettings,
        constraints: Constraints | None,
        catalog: Mapping[str, WorkloadProfile] | None,
        frozen: Mapping[str, Sequence[str]] | None,
    ) -> _Setup:
        """Read the shipped pieces the caller did not give."""
        from jpo.learning.reward import load_reward_weights
        from jpo.sim.response import load_conditions
        from jpo.workload.constraints import load_constraints

        return cls(
            catalog=catalog if catalog is not None else _catalog(),
            constraints=constraints if constraints is not None else load_constraints(),
            frozen=frozen or {},
            weights=load_reward_weights(),
            conditions=load_conditions(None, **settings.conditions),
            oracle_settings=evaluation_oracle_settings(settings),
            rules=settings.rules,
            shifted=load_conditions(None, **{**settings.conditions, **settings.shift_conditions})
            if settings.shift_round > 0
            else None,
        )


@dataclass(frozen=True)
class _Yardstick:
    """One workload's noise-free yardstick: the default and the two oracles, scored."""

    scorer: _Scorer
    constraints: Constraints
    default_summary: RunSummary
    default_objective: float
    default_val_loss: float
    oracle_hp: Hyperparameters
    oracle_summary: RunSummary
    oracle_objective: float
    reach_objective: float
    box: dict[str, tuple[float, float]] | None

    @property
    def gap(self) -> float:
        """The global oracle's improvement over the default (the fraction's denominator)."""
        return self.oracle_objective - self.default_objective


def _yardstick(name: str, setup: _Setup, settings: EvaluationSettings) -> _Yardstick:
    """Score one workload's default and oracles (identical for every method and seed)."""
    from jpo.sim.oracle import reference_config

    profile = setup.catalog[name]
    default = profile.defaults
    cons = _workload_constraints(setup.constraints, setup.frozen.get(name, ()))
    _ref_hp, reference = reference_config(profile, setup.conditions)
    scorer = _Scorer(profile, setup.conditions, setup.weights, reference)
    default_summary = scorer.summary(default)
    default_obj = scorer.objective(default_summary)
    # The quality bar's "default's validation loss": the reference's when the default
    # itself fails (an OOM'd run has no meaningful final loss).
    default_val_loss = (
        default_summary.final_val_loss
        if default_summary.failure == "none"
        else reference.final_val_loss
    )
    oracle = _oracle_or_none(profile, cons, setup)
    oracle_hp = oracle.hp if oracle is not None else default
    oracle_summary = scorer.summary(oracle_hp)
    box = reach_box(cons, default, settings.rounds) if settings.search_space == "reach" else None
    return _Yardstick(
        scorer=scorer,
        constraints=cons,
        default_summary=default_summary,
        default_objective=default_obj,
        default_val_loss=default_val_loss,
        oracle_hp=oracle_hp,
        oracle_summary=oracle_summary,
        oracle_objective=scorer.objective(oracle_summary) if oracle else math.nan,
        reach_objective=_reach_objective(profile, cons, scorer, setup, settings.rounds),
        box=box,
    )


def _oracle_or_none(profile: WorkloadProfile, cons: Constraints, setup: _Setup) -> Any:
    """Return the global oracle's result, None when nothing inside the constraints trains."""
    from jpo.sim.oracle import best_config

    try:
        return best_config(
            profile, cons, setup.conditions, setup.weights, settings=setup.oracle_settings
        )
    except ConfigError:
        return None


def _reach_objective(
    profile: WorkloadProfile, cons: Constraints, scorer: _Scorer, setup: _Setup, rounds: int
) -> float:
    """Return the reach-box oracle's objective: the best within ``rounds`` trust-region steps."""
    from jpo.sim.oracle import best_config, reach_constraints

    try:
        reach = best_config(
            profile,
            reach_constraints(cons, profile.defaults, rounds),
            setup.conditions,
            setup.weights,
            settings=setup.oracle_settings,
        )
    except ConfigError:
        return math.nan
    return scorer.objective(scorer.summary(reach.hp))


def _evaluate_rows(
    settings: EvaluationSettings,
    setup: _Setup,
    names: Sequence[str],
    propose: Proposer | None,
    progress: bool,
) -> list[dict[str, Any]]:
    """Run every workload x seed x method campaign; return the rows in that order."""
    rows: list[dict[str, Any]] = []
    total = len(names) * settings.seeds * len(settings.methods) * settings.rounds
    with _progress(progress, total) as advance:
        for name in names:
            yardstick = _yardstick(name, setup, settings)
            for seed in range(settings.base_seed, settings.base_seed + settings.seeds):
                campaign = _campaign(name, seed, setup, yardstick, settings)
                for method in settings.methods:
                    rows.extend(_run_campaign(campaign, method, settings, propose, advance))
    return rows


def _campaign(
    name: str, seed: int, setup: _Setup, y: _Yardstick, settings: EvaluationSettings
) -> _Campaign:
    """Simulate one workload x seed's default runs; return what every method's campaign shares."""
    from jpo.sim.oracle import reference_config
    from jpo.sim.response import simulate_run

    # Keyed by name, not position: a workload's noise draws (and so its figures) do not
    # change when other workloads join or leave the evaluated set.
    w_index = workload_seed(name)
    profile = setup.catalog[name]
    default = profile.defaults
    start = 1.7e9  # a fixed wall-clock origin keeps runs reproducible
    sim0 = simulate_run(
        profile,
        default,
        setup.conditions,
        rng=_seed_for(seed, w_index, 0),
        run_id=f"{name}-s{seed}-r0",
        start=start,
        scrape_interval_s=settings.scrape_interval_s,
    )
    # The scoring rule's reference: the mean measured val loss of several default runs (a
    # recurring job's history has many); run 0 is one of them and stays the single-run
    # reading.
    extra_defaults = [
        simulate_run(
            profile,
            default,
            setup.conditions,
            rng=_seed_for(seed, w_index, 0, k),
            run_id=f"{name}-s{seed}-d{k}",
            start=start - k * 86_400.0,
            scrape_interval_s=settings.scrape_interval_s,
        ).summary.final_val_loss
        for k in range(1, settings.default_runs)
    ]
    shifted_scorer = None
    if setup.shifted is not None:  # the same values under the new conditions, their own yardstick
        _hp, shifted_reference = reference_config(profile, setup.shifted)
        shifted_scorer = _Scorer(profile, setup.shifted, setup.weights, shifted_reference)
    return _Campaign(
        name=name,
        w_index=w_index,
        seed=seed,
        profile=profile,
        constraints=y.constraints,
        conditions=setup.conditions,
        scorer=y.scorer,
        sim0=sim0,
        default_losses=(sim0.summary.final_val_loss, *extra_defaults),
        start=start,
        box=y.box,
        rules=setup.rules,
        common={
            "workload": name,
            "split": profile.split,
            "framework": profile.framework,
            "bottleneck": profile.bottleneck,
            "seed": seed,
            "default_objective": y.default_objective,
            "oracle_objective": y.oracle_objective,
            "oracle_gap": y.gap,
            "oracle_reach_objective": y.reach_objective,
            "oracle_reach_gap": y.reach_objective - y.default_objective,
            "default_val_loss": y.default_val_loss,
            "oracle_val_loss": y.oracle_summary.final_val_loss,
            "frozen": ",".join(y.constraints.frozen),
        },
        oracle_hp=y.oracle_hp,
        default_true=(y.default_summary, y.default_objective),
        shifted_scorer=shifted_scorer,
    )


def _workload_constraints(base: Constraints, frozen: Sequence[str]) -> Constraints:
    """Return ``base`` with the workload's frozen parameters (``[jpo] freeze``) held."""
    if not frozen:
        return base
    from jpo.workload.config_file import JpoSection

    tunable = tuple(n for n in base.tunable if n not in frozen)
    return base.for_workload(JpoSection(tunable=tunable, frozen=tuple(frozen)))


def load_workload_folder(
    directory: str | Path,
) -> tuple[dict[str, WorkloadProfile], dict[str, tuple[str, ...]]]:
    """Load every ``*.toml`` workload profile in a folder, with its ``[jpo] freeze`` list.

    The files use the catalog's format (``configs/workloads/``) plus an optional
    ``[jpo]`` section whose only key is ``freeze`` (parameters the workload's config.ini
    freezes, e.g. the depth of a fine-tuned pretrained model).

    Raises:
        ConfigError: a missing or empty folder, unreadable or invalid files, an unknown
            ``[jpo]`` key or parameter, or duplicate names; each names the file.
    """
    from jpo.sim.response import profile_from_dict

    folder = Path(directory)
    if not folder.is_dir():
        raise ConfigError(f"--catalog {folder}: not a folder; pass a folder of *.toml profiles")
    catalog: dict[str, WorkloadProfile] = {}
    frozen: dict[str, tuple[str, ...]] = {}
    for path in sorted(folder.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigError(f"{path}: cannot read workload profile: {err}") from err
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: invalid TOML: {err}; fix the syntax") from err
        jpo = data.pop("jpo", {})
        unknown = [k for k in jpo if k != "freeze"]
        names = jpo.get("freeze", [])
        bad = [n for n in names if n not in HYPERPARAMETER_NAMES]
        if unknown or bad or not isinstance(names, list):
            raise ConfigError(
                f"{path}: [jpo] may hold only freeze = [names from "
                f"{', '.join(HYPERPARAMETER_NAMES)}]; got keys {sorted(jpo)}"
            )
        profile = profile_from_dict(data, source=str(path))
        if profile.name in catalog:
            raise ConfigError(f"{path}: duplicate workload name {profile.name!r}")
        catalog[profile.name] = profile
        frozen[profile.name] = tuple(names)
    if not catalog:
        raise ConfigError(f"--catalog {folder}: no workload profiles (*.toml) found")
    return catalog, frozen


_REPO = REPO_ROOT


def load_set(
    settings: EvaluationSettings, name: str
) -> tuple[dict[str, WorkloadProfile], dict[str, tuple[str, ...]]]:
    """Return the workload profiles of ``[sets.NAME]`` and their frozen parameters.

    Raises:
        ConfigError: an unknown set name or source, or a set whose profiles do not load.
    """
    from jpo.sim.response import load_catalog

    spec = settings.sets.get(name)
    if spec is None:
        raise ConfigError(
            f"--set {name!r}: no [sets.{name}] in configs/evaluate.toml; known: "
            f"{', '.join(settings.sets) or 'none'}"
        )
    source = spec.get("source", "catalog")
    if source == "folder":
        return load_workload_folder(_REPO / str(spec["path"]))
    if source == "randomized":
        from jpo.sim.randomization import load_randomization, random_profiles

        randomization = load_randomization(seed=int(spec["seed"]))
        profiles = random_profiles(load_catalog(), int(spec["count"]), settings=randomization)
        catalog = {f"val-{p.name}": dataclasses.replace(p, name=f"val-{p.name}") for p in profiles}
        return catalog, {}
    if source == "catalog":
        full = load_catalog()
        split = str(spec.get("split", "all"))
        chosen = {n: p for n, p in full.items() if split == "all" or p.split == split}
        return chosen, {}
    raise ConfigError(
        f"configs/evaluate.toml [sets.{name}] source = {source!r}: use catalog, folder "
        "or randomized"
    )


@dataclass(frozen=True)
class _Campaign:
    """One workload x seed: what every method's campaign on it shares."""

    name: str
    w_index: int
    seed: int
    profile: Any
    constraints: Constraints
    conditions: Any
    scorer: _Scorer
    sim0: Any
    default_losses: tuple[float, ...]
    start: float
    box: dict[str, tuple[float, float]] | None
    rules: CampaignRules
    common: dict[str, Any]
    oracle_hp: Hyperparameters
    default_true: tuple[RunSummary, float]
    shifted_scorer: _Scorer | None = None
    """The yardstick under ``[shift] conditions`` (None: no shift)."""

    def shifted_objective(self, hp: Hyperparameters) -> float:
        """Return the noise-free objective of ``hp`` under the shifted conditions (NaN: none)."""
        if self.shifted_scorer is None:
            return math.nan
        return self.shifted_scorer.objective(self.shifted_scorer.summary(hp))

    @property
    def reference_loss(self) -> float:
        """The scoring rule's reference: the mean measured val loss of the default runs."""
        finite = [v for v in self.default_losses if math.isfinite(v)]
        return float(np.mean(finite)) if finite else math.nan

    def task(self, observed_default: float) -> TuningTask:
        """Return the task a method starts from (the measured default run 0)."""
        return TuningTask(
            workload=self.name,
            profile=self.profile,
            constraints=self.constraints,
            default=self.profile.defaults,
            default_summary=self.sim0.summary,
            seed=(self.seed * 1_000_003 + self.w_index) % 2**32,  # numpy/optuna range
            box=self.box,
            rules=self.rules,
            extra={
                "oracle_hp": self.oracle_hp,
                "default_objective": observed_default,
                "default_table": self.sim0.table,
            },
        )


def _holds(run: RunSummary, reference_loss: float, tolerance: float) -> bool:
    """Tell whether a measured run trained and held val loss within tolerance of a reference."""
    if run.failure != "none" or not math.isfinite(run.final_val_loss):
        return False
    if not math.isfinite(reference_loss):
        return True
    return run.final_val_loss <= reference_loss * (1.0 + tolerance)


@dataclass(frozen=True)
class _Incumbent:
    """A campaign's best run so far under the scoring rule (round 0: the default)."""

    hp: Hyperparameters
    observed: float
    round: int
    true_summary: RunSummary
    run: RunSummary


@dataclass(frozen=True)
class _Round:
    """One round of a campaign: what was proposed, what ran, measured and noise-free."""

    number: int
    proposal: Hyperparameters
    ran: Hyperparameters
    run: RunSummary
    true_summary: RunSummary
    observed: float
    true_objective: float
    problem: str = ""
    note: str = ""


@dataclass(frozen=True)
class _Bests:
    """A campaign's three readings of "best so far" (observed, noise-free objective pairs).

    ``incumbent`` follows the multi-default-run scoring rule (the oracle is exempt: its
    configuration holds quality by construction); ``ruled`` the same rule with no
    exemption; ``single`` the single-default-run rule.
    """

    incumbent: _Incumbent
    ruled: tuple[float, float]
    single: tuple[float, float]

    def after(self, r: _Round, holds: bool, holds_single: bool, exempt: bool) -> _Bests:
        """Return the bests once round ``r`` (whose run ``holds`` the rule, or not) is in."""
        incumbent, ruled, single = self.incumbent, self.ruled, self.single
        if r.observed > incumbent.observed and (holds or exempt):
            incumbent = _Incumbent(r.ran, r.observed, r.number, r.true_summary, r.run)
        if r.observed > ruled[0] and holds:
            ruled = (r.observed, r.true_objective)
        if r.observed > single[0] and (holds_single or exempt):
            single = (r.observed, r.true_objective)
        return _Bests(incumbent, ruled, single)


def _run_campaign(
    c: _Campaign,
    method: str,
    settings: EvaluationSettings,
    propose: Proposer | None,
    advance: Callable[[], None],
) -> list[dict[str, Any]]:
    """Run one method's campaign on one workload x seed; return its rows (round 0..R)."""
    scorer, run0, tol = c.scorer, c.sim0.summary, settings.val_loss_tolerance
    default = c.profile.defaults
    default_true_summary, default_true = c.default_true
    default_observed = scorer.objective(run0)
    single_ref = run0.final_val_loss if run0.failure == "none" else math.nan
    multi_ref = c.reference_loss if run0.failure == "none" else math.nan
    tuner = _make_tuner(method, c.task(default_observed), settings, propose)
    common = dict(c.common, method=method)
    first = _Round(0, default, default, run0, default_true_summary, default_observed, default_true)
    bests = _Bests(
        _Incumbent(default, default_observed, 0, default_true_summary, run0),
        (default_observed, default_true),
        (default_observed, default_true),
    )
    row = _row(common, first, bests.incumbent, scorer, settings)
    row["oracle_fraction_ruled"] = row["oracle_fraction_incumbent"]
    row["oracle_fraction_single"] = row["oracle_fraction_incumbent"]
    row |= {"harmful": False, "rule_break": False, "reference_val_loss": multi_ref}
    row |= _shift_fields(c, settings, 0, default)
    rows = [row]
    current = default
    for rnd in range(1, settings.rounds + 1):
        r = _play_round(c, tuner, rnd, current, settings)
        current = r.ran
        holds = _holds(r.run, multi_ref, tol)
        holds_single = _holds(r.run, single_ref, tol)
        bests = bests.after(r, holds, holds_single, exempt=method == "oracle")
        row = _row(common, r, bests.incumbent, scorer, settings)
        row["note"] = r.note
        row["oracle_fraction_ruled"] = _fraction(bests.ruled[1], default_true, common, settings)
        row["oracle_fraction_single"] = _fraction(bests.single[1], default_true, common, settings)
        row["harmful"] = bool(r.true_objective < default_true - 1e-9)
        row["rule_break"] = bool(r.run.failure == "none" and not holds)
        row["reference_val_loss"] = multi_ref
        row |= _shift_fields(c, settings, rnd, r.ran)
        rows.append(row)
        advance()
    return rows


def _shift_fields(
    c: _Campaign, settings: EvaluationSettings, rnd: int, ran: Hyperparameters
) -> dict[str, Any]:
    """Return a row's shift columns: whether its run was shifted, its values' shifted score."""
    return {
        "shifted": settings.shifted(rnd),
        "objective_shifted_true": c.shifted_objective(ran),
        "default_objective_shifted": c.shifted_objective(c.profile.defaults),
    }


def _play_round(
    c: _Campaign, tuner: Tuner, rnd: int, current: Hyperparameters, settings: EvaluationSettings
) -> _Round:
    """Ask the tuner, validate, simulate the run (an invalid proposal reruns ``current``), tell."""
    from jpo.sim.response import simulate_run

    proposal = tuner.ask()
    previous = tuner.anchor if tuner.uses_trust_region else None
    problem = _validate(c.constraints, proposal, previous)
    if problem:
        tuner.reject(proposal)
    ran = current if problem else proposal
    conditions = c.conditions
    if settings.shifted(rnd) and c.shifted_scorer is not None:
        conditions = c.shifted_scorer.conditions  # the cluster changed mid-campaign
    sim = simulate_run(
        c.profile,
        ran,
        conditions,
        rng=_seed_for(c.seed, c.w_index, rnd),
        run_id=f"{c.name}-s{c.seed}-r{rnd}",
        start=c.start + rnd * 86_400.0,
        scrape_interval_s=settings.scrape_interval_s,
    )
    observed = c.scorer.objective(sim.summary)
    true_summary = c.scorer.summary(ran)
    true_obj = c.scorer.objective(true_summary)
    note = tuner.last_note
    tuner.tell(ran, sim.summary, observed, sim.table)
    return _Round(rnd, proposal, ran, sim.summary, true_summary, observed, true_obj, problem, note)


def _finite_or(value: float, fallback: float) -> float:
    return value if math.isfinite(value) else fallback


def _fraction(
    obj: float, default: float, common: Mapping[str, Any], settings: EvaluationSettings
) -> float:
    """Return the fraction of the global oracle's improvement, NaN when the gap is negligible."""
    return _fraction_of(obj, default, float(common["oracle_gap"]), settings)


def _fraction_of(obj: float, default: float, gap: float, settings: EvaluationSettings) -> float:
    """Return the fraction of an improvement ``gap``, NaN when the gap is negligible."""
    if not gap > settings.min_oracle_gap:
        return math.nan
    return (obj - default) / gap


def _row(
    common: dict[str, Any],
    r: _Round,
    inc: _Incumbent,
    scorer: _Scorer,
    settings: EvaluationSettings,
) -> dict[str, Any]:
    """Build one Parquet row: round ``r`` of a campaign whose incumbent is ``inc``."""
    inc_obj = scorer.objective(inc.true_summary)
    default_obj = common["default_objective"]
    row: dict[str, Any] = dict(common)
    row |= {"round": r.number, "note": ""}
    row |= {f"hp_{k}": v for k, v in r.proposal.as_dict().items()}
    row |= _summary_fields(r.run)
    row |= {
        "valid": not r.problem,
        "invalid_reason": r.problem,
        "oom": r.run.failure == "oom",
        "objective_observed": r.observed,
        "objective_true": r.true_objective,
        "true_val_loss": float(r.true_summary.final_val_loss),
        "true_failure": r.true_summary.failure,
        "incumbent_round": inc.round,
        "incumbent_objective_true": inc_obj,
        "incumbent_val_loss_true": float(inc.true_summary.final_val_loss),
        "incumbent_failure_true": inc.true_summary.failure,
        **{f"incumbent_{k}": v for k, v in _summary_fields(inc.run).items() if k != "failure"},
        **{f"incumbent_hp_{k}": v for k, v in inc.hp.as_dict().items()},
        "oracle_fraction_incumbent": _fraction(inc_obj, default_obj, common, settings),
        "oracle_fraction_last": _fraction(r.true_objective, default_obj, common, settings),
    }
    reach_gap = float(common.get("oracle_reach_gap", math.nan))
    row["oracle_reach_fraction_incumbent"] = _fraction_of(inc_obj, default_obj, reach_gap, settings)
    row["oracle_reach_fraction_last"] = _fraction_of(
        r.true_objective, default_obj, reach_gap, settings
    )
    row["oracle_fraction"] = row[f"oracle_fraction_{settings.score}"]
    row["oracle_reach_fraction"] = row[f"oracle_reach_fraction_{settings.score}"]
    return row


class _NullProgress:
    def __enter__(self) -> Callable[[], None]:
        return lambda: None

    def __exit__(self, *exc: object) -> None:
        return None


class _RichProgress:
    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("evaluating"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._total = total

    def __enter__(self) -> Callable[[], None]:
        self._progress.__enter__()
        task = self._progress.add_task("rounds", total=self._total)
        return lambda: self._progress.advance(task)

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(None, None, None)


def _progress(enabled: bool, total: int) -> _NullProgress | _RichProgress:
    return _RichProgress(total) if enabled else _NullProgress()


# --------------------------------------------------------------------------- summaries


def _final_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Return each (workload, seed, method)'s row of its last round."""
    last = frame["round"].max()
    return frame[frame["round"] == last]


def workload_summary(result: EvaluationResult) -> pd.DataFrame:
    """Return one row per workload and method: before/after, oracle fraction, failures."""
    frame = result.frame()
    tol = result.settings.val_loss_tolerance
    before = frame[frame["round"] == 0]
    after = _final_rows(frame)
    tuning = frame[frame["round"] > 0]
    keys = ["workload", "method"]
    agg_after = after.groupby(keys, sort=False).agg(
        oracle_fraction=("oracle_fraction", "mean"),
        oracle_fraction_last=("oracle_fraction_last", "mean"),
        oracle_fraction_incumbent=("oracle_fraction_incumbent", "mean"),
        oracle_fraction_single=("oracle_fraction_single", "mean"),
        oracle_reach_fraction=("oracle_reach_fraction", "mean"),
        objective=("incumbent_objective_true", "mean"),
        oracle_objective=("oracle_objective", "first"),
        oracle_reach_objective=("oracle_reach_objective", "first"),
        default_objective=("default_objective", "first"),
        gpu_util_after=("incumbent_gpu_util_mean", "mean"),
        cpu_util_after=("incumbent_cpu_util_mean", "mean"),
        mem_util_after=("incumbent_mem_util_mean", "mean"),
        throughput_after=("incumbent_throughput", "mean"),
        duration_s_after=("incumbent_duration_s", "mean"),
        gpu_hours_after=("incumbent_gpu_hours", "mean"),
        val_loss_after=("incumbent_val_loss_true", "mean"),
        default_val_loss=("default_val_loss", "first"),
    )
    agg_before = before.groupby(keys, sort=False).agg(
        gpu_util_before=("gpu_util_mean", "mean"),
        cpu_util_before=("cpu_util_mean", "mean"),
        mem_util_before=("mem_util_mean", "mean"),
        throughput_before=("throughput", "mean"),
        duration_s_before=("duration_s", "mean"),
        gpu_hours_before=("gpu_hours", "mean"),
    )
    agg_tuning = tuning.groupby(keys, sort=False).agg(
        invalid_configs=("valid", lambda v: int((~v.astype(bool)).sum())),
        oom_runs=("oom", lambda v: int(v.astype(bool).sum())),
        diverged_runs=("failure", lambda v: int((v == "diverged").sum())),
        failed_runs=("failure", lambda v: int(v.isin(["oom", "diverged", "failed"]).sum())),
        harmful_runs=("harmful", lambda v: int(v.astype(bool).sum())),
        rule_breaks=("rule_break", lambda v: int(v.astype(bool).sum())),
        tuning_runs=("round", "size"),
        tuning_gpu_hours=("gpu_hours", "sum"),
    )
    out = agg_after.join(agg_before).join(agg_tuning).reset_index()
    out["val_loss_ok"] = out["val_loss_after"] <= out["default_val_loss"] * (1.0 + tol)
    return out


def method_summary(result: EvaluationResult) -> pd.DataFrame:
    """Return one row per method over all workloads (means; counts are sums)."""
    per = workload_summary(result)
    grouped = per.groupby("method", sort=False)
    out = grouped.agg(
        workloads=("workload", "nunique"),
        oracle_fraction_mean=("oracle_fraction", "mean"),
        oracle_fraction_median=("oracle_fraction", "median"),
        oracle_fraction_last_mean=("oracle_fraction_last", "mean"),
        oracle_fraction_single_mean=("oracle_fraction_single", "mean"),
        oracle_reach_fraction_mean=("oracle_reach_fraction", "mean"),
        oracle_reach_fraction_median=("oracle_reach_fraction", "median"),
        val_loss_ok_share=("val_loss_ok", "mean"),
        invalid_configs=("invalid_configs", "sum"),
        oom_runs=("oom_runs", "sum"),
        diverged_runs=("diverged_runs", "sum"),
        failed_runs=("failed_runs", "sum"),
        harmful_runs=("harmful_runs", "sum"),
        rule_breaks=("rule_breaks", "sum"),
        tuning_runs=("tuning_runs", "sum"),
        gpu_util_before=("gpu_util_before", "mean"),
        gpu_util_after=("gpu_util_after", "mean"),
        cpu_util_before=("cpu_util_before", "mean"),
        cpu_util_after=("cpu_util_after", "mean"),
        mem_util_before=("mem_util_before", "mean"),
        mem_util_after=("mem_util_after", "mean"),
        throughput_before=("throughput_before", "mean"),
        throughput_after=("throughput_after", "mean"),
        duration_s_before=("duration_s_before", "mean"),
        duration_s_after=("duration_s_after", "mean"),
        gpu_hours_before=("gpu_hours_before", "mean"),
        gpu_hours_after=("gpu_hours_after", "mean"),
        tuning_gpu_hours=("tuning_gpu_hours", "sum"),
    )
    order = [m for m in result.settings.methods if m in out.index]
    return out.loc[order].reset_index()


def gain_by_round(result: EvaluationResult) -> pd.DataFrame:
    """Return the mean oracle fraction and validation loss per method and round."""
    frame = result.frame()
    return (
        frame.groupby(["method", "round"], sort=False)
        .agg(
            oracle_fraction=("oracle_fraction", "mean"),
            oracle_fraction_last=("oracle_fraction_last", "mean"),
            incumbent_val_loss_rel=(
                "incumbent_val_loss_true",
                lambda v: float(
                    np.nanmean(
                        v.to_numpy(dtype=float)
                        / frame.loc[v.index, "default_val_loss"].to_numpy(dtype=float)
                    )
                ),
            ),
        )
        .reset_index()
    )


@dataclass(frozen=True)
class QualityBar:
    """The issue-8 quality bar for JPO, measured: each check with its figure."""

    oracle_fraction: float
    val_loss_ok_share: float
    invalid_configs: int
    oom_runs: int
    beats: dict[str, bool]
    passed: dict[str, bool]
    oracle_reach_fraction: float = math.nan
    """Fraction of the reach-box oracle's improvement (reported; the bar uses the global one)."""
    oracle_ceiling: float = math.nan
    """The oracle's own fraction under the methods' measured-quality rule (reported only)."""

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(self.passed.values())


def quality_bar(result: EvaluationResult, method: str = "jpo") -> QualityBar | None:
    """Return the quality bar's checks for ``method``, or None when it was not evaluated."""
    summary = method_summary(result).set_index("method")
    if method not in summary.index:
        return None
    s = result.settings
    row = summary.loc[method]
    beats = {
        other: bool(row["oracle_fraction_mean"] > summary.loc[other, "oracle_fraction_mean"])
        for other in s.must_beat
        if other in summary.index and other != method
    }
    passed = {
        f"oracle fraction >= {s.oracle_fraction_min:.0%}": bool(
            row["oracle_fraction_mean"] >= s.oracle_fraction_min
        ),
        f"val loss <= default x {1 + s.val_loss_tolerance:g} on >= "
        f"{s.val_loss_ok_share_min:.0%} of workloads": bool(
            row["val_loss_ok_share"] >= s.val_loss_ok_share_min
        ),
        "zero invalid configs": int(row["invalid_configs"]) == 0,
        "zero OOM suggestions": int(row["oom_runs"]) == 0,
        **{f"beats {k}": v for k, v in beats.items()},
    }
    return QualityBar(
        oracle_fraction=float(row["oracle_fraction_mean"]),
        val_loss_ok_share=float(row["val_loss_ok_share"]),
        invalid_configs=int(row["invalid_configs"]),
        oom_runs=int(row["oom_runs"]),
        beats=beats,
        passed=passed,
        oracle_reach_fraction=float(row.get("oracle_reach_fraction_mean", math.nan)),
        oracle_ceiling=oracle_ceiling(result),
    )


def oracle_ceiling(result: EvaluationResult) -> float:
    """Return the oracle's mean fraction when its runs must pass every method's quality rule.

    Every method's incumbent must have a MEASURED validation loss within the tolerance of
    the MEASURED default run; the oracle is exempt (its configuration holds quality in
    truth). With measurement noise as large as the tolerance, the oracle's own runs fail
    that rule now and then: this is the fraction the oracle's configuration reaches under
    the rule (column ``oracle_fraction_ruled``; NaN without oracle rows), i.e. the ceiling
    of any method.
    """
    final = _final_rows(result.frame())
    oracle = final[final["method"] == "oracle"]
    if oracle.empty:
        return math.nan
    return float(oracle.groupby("workload")["oracle_fraction_ruled"].mean().mean())


@dataclass(frozen=True)
class PairedDifference:
    """A method's oracle fraction minus another's, paired by workload and seed."""

    method: str
    other: str
    mean: float
    se_seeds: float
    """Standard error over seeds (each seed's mean over workloads)."""
    se_workloads: float
    """Standard error over workloads (each workload's mean over seeds)."""
    seeds: int
    workloads: int


def _se(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    if values.size < 2:
        return math.nan
    return float(np.std(values, ddof=1) / math.sqrt(values.size))


def paired_difference(result: EvaluationResult, method: str, other: str) -> PairedDifference:
    """Return ``method``'s oracle fraction minus ``other``'s after the last round, paired."""
    final = _final_rows(result.frame())
    pivot = final[final["method"].isin([method, other])].pivot_table(
        index=["workload", "seed"], columns="method", values="oracle_fraction", aggfunc="mean"
    )
    if method not in pivot.columns or other not in pivot.columns:
        return PairedDifference(method, other, math.nan, math.nan, math.nan, 0, 0)
    diff = (pivot[method] - pivot[other]).dropna()
    per_seed = diff.groupby(level="seed").mean().to_numpy(dtype=float)
    per_workload = diff.groupby(level="workload").mean().to_numpy(dtype=float)
    return PairedDifference(
        method,
        other,
        float(per_workload.mean()) if per_workload.size else math.nan,
        _se(per_seed),
        _se(per_workload),
        int(per_seed.size),
        int(per_workload.size),
    )


def best_honest_baseline(result: EvaluationResult) -> str | None:
    """Return the honest baseline with the highest mean oracle fraction (None: none ran)."""
    summary = method_summary(result).set_index("method")
    names = [m for m in HONEST_BASELINES if m in summary.index]
    if not names:
        return None
    return max(names, key=lambda m: float(summary.loc[m, "oracle_fraction_mean"]))


@dataclass(frozen=True)
class BaselineBar:
    """Issue 25's bar for JPO on one set: beat the best honest baseline, safely."""

    baseline: str
    difference: PairedDifference
    oracle_fraction: float
    absolute_min: float | None
    oom_runs: int
    harmful_runs: int
    baseline_harmful_runs: int
    val_loss_ok_share: float
    passed: dict[str, bool]

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(self.passed.values())


def baseline_bar(
    result: EvaluationResult, method: str = "jpo", absolute_min: float | None = None
) -> BaselineBar | None:
    """Return issue 25's bar for ``method`` (None when it or no honest baseline ran)."""
    summary = method_summary(result).set_index("method")
    baseline = best_honest_baseline(result)
    if baseline is None or method not in summary.index:
        return None
    s = result.settings
    row, other = summary.loc[method], summary.loc[baseline]
    diff = paired_difference(result, method, baseline)
    passed = {
        f"beats {baseline} by >= {s.margin_min:g}": bool(diff.mean >= s.margin_min),
        "zero OOM runs": int(row["oom_runs"]) == 0,
        f"harmful runs <= {baseline}'s": int(row["harmful_runs"]) <= int(other["harmful_runs"]),
        f"val loss ok on >= {s.val_loss_ok_share_min:.0%} of workloads": bool(
            row["val_loss_ok_share"] >= s.val_loss_ok_share_min
        ),
    }
    if absolute_min is not None:
        passed[f"oracle fraction >= {absolute_min:g}"] = bool(
            row["oracle_fraction_mean"] >= absolute_min
        )
    return BaselineBar(
        baseline=baseline,
        difference=diff,
        oracle_fraction=float(row["oracle_fraction_mean"]),
        absolute_min=absolute_min,
        oom_runs=int(row["oom_runs"]),
        harmful_runs=int(row["harmful_runs"]),
        baseline_harmful_runs=int(other["harmful_runs"]),
        val_loss_ok_share=float(row["val_loss_ok_share"]),
        passed=passed,
    )


# --------------------------------------------------------------------------- report
# report.md, rounds.parquet, summary.json and the plots: jpo/evaluation/report.py.


def bundled_policy_path() -> Path:
    """Return the bundled policy folder (``jpo/data/policy``); PolicyError when it is missing."""
    folder = BUNDLED_POLICY_DIR
    if not folder.exists():
        from jpo.errors import PolicyError

        raise PolicyError(
            f"no bundled policy at {folder}: pass --policy PATH to an exported artifact, "
            "or leave 'jpo' out of --methods"
        )
    return folder


__all__ += [
    "HONEST_BASELINES",
    "HYPERPARAMETER_NAMES",
    "ROLES",
    "BaselineBar",
    "PairedDifference",
    "baseline_bar",
    "best_honest_baseline",
    "bundled_policy_path",
    "gain_by_round",
    "load_set",
    "load_tuner_class",
    "load_workload_folder",
    "paired_difference",
    "tuner_methods",
]
