"""``jpo evaluate``: JPO against Optuna TPE, random search, no tuning and the oracle.

Protocol (issue 8, item 1). For each workload of the chosen set and each seed:

1. Run the workload's default configuration once (round 0). Every method starts from this
   same measured run.
2. For each method, for rounds 1..R: the method proposes a configuration (``ask``); the
   proposal is validated by the constraints (an invalid one is counted and never runs:
   the workload reruns its current configuration); the run is simulated by the response
   model (:func:`envs.response.simulate_run`: time-varying co-tenant contention and
   measurement noise); the method is told the measured run (``tell``).
   Every method sees the same noise draw in the same round (common random numbers).
3. Scoring. Every run is scored with the oracle's objective (:func:`envs.oracle.objective`:
   the reward of :mod:`jpo.reward` with no previous run, reference loss and per-GPU
   throughput from the workload's reference configuration, i.e. its default, or the
   default made to train when it fails), so every method and the oracle optimize the same
   thing. Methods choose with the objective they
   OBSERVE (noisy); results are scored with the noise-free objective of the same
   configuration (:func:`envs.response.predict` at the mean contention). The fraction of
   the oracle's improvement after round r is
   ``(obj(config_r) - obj(default)) / (obj(oracle) - obj(default))``, where
   ``config_r`` is the method's incumbent (the best observed so far among the runs that
   trained and whose measured validation loss held the quality bar against the measured
   default run, the default included: the same constraint the oracle obeys) or its
   round-r configuration (``[run] score`` in ``configs/evaluate.toml``; both are stored).
   Two oracles: the global one (:func:`envs.oracle.best_config` over the whole
   constraint box; ``oracle_fraction``, the quality bar's figure) and the reach-box one
   (the same search restricted to what a trust-region method reaches from the default in
   R steps, :func:`envs.oracle.reach_constraints`; ``oracle_reach_fraction``, reported).

Outputs (:func:`write_report`): ``report.md``, ``rounds.parquet`` (one row per workload,
seed, method and round), ``summary.json`` and PNG plots under ``plots/``.
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

from jpo.errors import ConfigError, ConstraintViolation, JpoError
from jpo.evaluate_report import ReportPaths
from jpo.schema import RunSummary
from jpo.tuners import (
    JpoPolicyTuner,
    NoTuning,
    OptunaTuner,
    OracleTuner,
    Proposal,
    RandomSearchTuner,
    Tuner,
    TuningTask,
    reach_box,
)
from jpo.workload import HYPERPARAMETER_NAMES, Hyperparameters

if TYPE_CHECKING:
    import pandas as pd

    from envs.oracle import OracleSettings
    from envs.response import WorkloadProfile
    from jpo.constraints import Constraints
    from jpo.policy import LocalPolicy

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
    "write_report",
]

EVALUATE_CONFIG_PATH = Path(__file__).resolve().parent.parent / "configs" / "evaluate.toml"

METHODS: tuple[str, ...] = ("jpo", "optuna_tpe", "random", "no_tuning", "oracle")
"""Method names ``jpo evaluate`` knows, in default report order."""

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

    def __post_init__(self) -> None:
        problems = []
        if self.rounds < 1:
            problems.append(f"rounds must be >= 1, got {self.rounds}")
        if self.seeds < 1:
            problems.append(f"seeds must be >= 1, got {self.seeds}")
        if self.split not in _SPLITS:
            problems.append(f"split must be one of {_SPLITS}, got {self.split!r}")
        if self.score not in _SCORES:
            problems.append(f"score must be one of {_SCORES}, got {self.score!r}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            problems.append(f"methods must be a non-empty subset of {METHODS}, got {unknown}")
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


def load_evaluation_settings(path: str | Path | None = None) -> EvaluationSettings:
    """Read ``configs/evaluate.toml`` (or ``path``) into :class:`EvaluationSettings`."""
    file = Path(path) if path is not None else EVALUATE_CONFIG_PATH
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{file}: cannot read evaluation settings: {err}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{file}: invalid TOML: {err}; fix the syntax") from err
    sections = {
        "run": ("rounds", "seeds", "base_seed", "split", "methods", "score", "scrape_interval_s"),
        "baselines": ("search_space", "random_trust_region", "optuna_startup_trials"),
        "jpo": ("path",),
        "scoring": ("min_oracle_gap", "oracle_val_loss_tolerance"),
        "quality_bar": (
            "oracle_fraction_min",
            "val_loss_tolerance",
            "val_loss_ok_share_min",
            "must_beat",
        ),
    }
    values: dict[str, Any] = {}
    for section, keys in sections.items():
        table = raw.get(section, {})
        for key in table:
            if key not in keys:
                raise ConfigError(f"{file}: unknown key {key!r} in [{section}]; known: {keys}")
        values.update({("jpo_path" if section == "jpo" else k): v for k, v in table.items()})
    values["conditions"] = dict(raw.get("conditions", {}))
    for key in ("methods", "must_beat"):
        if key in values:
            values[key] = tuple(values[key])
    try:
        return EvaluationSettings(**values)
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


def jpo_proposer(policy: LocalPolicy) -> Callable[..., Proposal]:
    """Return the bare policy mapping: features -> action -> constraints (no guards).

    It computes the observation with :func:`jpo.features.build_observation` (the CI
    stage's feature code), asks the policy for an action and maps it through
    :meth:`jpo.constraints.Constraints.apply_action` (trust region, rounding, frozen
    keys). ``[jpo] path = "direct"`` selects it; the default drives the whole CI stage
    (:func:`suggest_proposer`).
    """
    from jpo.features import build_observation, context_from_runs

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
        action = np.asarray(policy.act(obs), dtype=np.float64)
        coupling = policy.learning_rate_follows_batch
        hp = task.constraints.apply_action(current, action, learning_rate_follows_batch=coupling)
        return hp, "direct"

    return propose


def suggest_proposer(policy_path: str | Path, workdir: Path) -> Callable[..., Proposal]:
    """Return a proposer that runs the CI stage itself, :func:`jpo.suggest.suggest`.

    Each campaign (workload x seed) gets its own ``config.ini`` and audit log under
    ``workdir``; each round hands ``suggest`` the last simulated run's telemetry through
    an in-memory :class:`jpo.telemetry.MetricSource`, and the local policy artifact. So
    the policy's proposals go through exactly what CI applies: features, action,
    constraints, guards (failed-config memory, memory guard, hysteresis), feedback and
    rollback. ``--approve`` is implied (evaluation has no human in the loop).
    """
    from jpo.policy_source import LocalPolicySource
    from jpo.suggest import SuggestOptions, SuggestStatus, load_suggest_settings, suggest

    source = LocalPolicySource(Path(policy_path))
    settings = load_suggest_settings()
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
            _write_config_ini(folder / "config.ini", task.profile, current)
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


def _write_config_ini(path: Path, profile: Any, hp: Hyperparameters) -> None:
    """Write a workload's config.ini (the catalog profile's labels, ``hp``)."""
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
    path.write_text("\n".join(lines), encoding="utf-8")


def _memory_source_class() -> type:
    """Build the in-memory MetricSource class lazily (jpo.telemetry imports pyarrow)."""
    from jpo.telemetry import MetricSource

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

    def frame(self) -> pd.DataFrame:
        """Return the rounds as a pandas DataFrame (one row per workload/seed/method/round)."""
        import pandas as pd

        return pd.DataFrame(self.rows)


@dataclass(frozen=True)
class _Scorer:
    """One workload's yardstick, the same for every method, seed and round.

    The objective is the oracle's (:func:`envs.oracle.objective`: the reward with no
    previous run, ``L*`` and ``ρ_ref`` from the workload's reference configuration, i.e.
    its default, or the default made to train when it fails), so "fraction of the
    oracle's improvement" compares like with like.
    """

    profile: Any
    conditions: Any
    weights: Any
    reference: RunSummary

    def summary(self, hp: Hyperparameters) -> RunSummary:
        """Return the noise-free run of ``hp`` (:func:`envs.response.predict`)."""
        from envs.response import predict

        return predict(self.profile, hp, self.conditions)

    def objective(self, summary: RunSummary) -> float:
        """Return the objective of a run (noise-free or measured)."""
        from envs.oracle import objective

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
    raise ConfigError(f"unknown method {method!r}; known: {', '.join(METHODS)}")


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
) -> EvaluationResult:
    """Run the evaluation protocol (module docstring) and return every round.

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
            synthetic validation profiles from :func:`envs.randomization.random_profiles`.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="jpo-evaluate-") as tmp:
        return _evaluate(
            settings,
            workloads=workloads,
            policy=policy,
            policy_path=policy_path,
            constraints=constraints,
            progress=progress,
            workdir=Path(workdir) if workdir is not None else Path(tmp),
            catalog=catalog,
        )


def evaluation_oracle_settings(settings: EvaluationSettings) -> OracleSettings:
    """Return the oracle's settings under ``settings`` (the one every score is judged by)."""
    from envs.oracle import load_oracle_settings

    # The oracle holds validation loss to the quality bar's tolerance (unless configured
    # otherwise), so that its improvement is one a method may reach without failing the bar.
    tolerance = settings.oracle_val_loss_tolerance
    if tolerance is None:
        tolerance = settings.val_loss_tolerance
    return dataclasses.replace(load_oracle_settings(), tolerance=tolerance)


def _evaluate(
    settings: EvaluationSettings,
    *,
    workloads: Sequence[str] | None,
    policy: LocalPolicy | None,
    policy_path: str | None,
    constraints: Constraints | None,
    progress: bool,
    workdir: Path,
    catalog: Mapping[str, WorkloadProfile] | None = None,
) -> EvaluationResult:
    """Body of :func:`evaluate` (``workdir`` exists)."""
    from envs.oracle import best_config, reach_constraints, reference_config
    from envs.response import load_catalog, load_conditions, simulate_run
    from jpo.constraints import load_constraints
    from jpo.reward import load_reward_weights

    if catalog is None:
        catalog = load_catalog()
    names = select_workloads(catalog, workloads, settings.split)
    base_constraints = constraints if constraints is not None else load_constraints()
    weights = load_reward_weights()
    conditions = load_conditions(None, **settings.conditions)
    oracle_settings = evaluation_oracle_settings(settings)
    if "jpo" in settings.methods and policy is None:
        raise ConfigError("method 'jpo' needs a policy: pass --policy PATH")
    propose: Callable[..., Proposal] | None = None
    if policy is not None and settings.jpo_path == "suggest":
        if policy_path is None:
            raise ConfigError("the suggest path needs the policy's artifact folder (policy_path)")
        propose = suggest_proposer(policy_path, workdir)
    elif policy is not None:
        propose = jpo_proposer(policy)

    rows: list[dict[str, Any]] = []
    total = len(names) * settings.seeds * len(settings.methods) * settings.rounds
    with _progress(progress, total) as advance:
        for name in names:
            # Keyed by name, not position: a workload's noise draws (and so its figures)
            # do not change when other workloads join or leave the evaluated set.
            w_index = workload_seed(name)
            profile = catalog[name]
            default = profile.defaults
            cons = base_constraints
            _ref_hp, reference = reference_config(profile, conditions)
            scorer = _Scorer(profile, conditions, weights, reference)
            # Noise-free scoring, identical for every method and seed of this workload.
            default_true_summary = scorer.summary(default)
            default_true = scorer.objective(default_true_summary)
            # The quality bar's "default's validation loss": the reference's when the
            # default itself fails (an OOM'd run has no meaningful final loss).
            default_val_loss = (
                default_true_summary.final_val_loss
                if default_true_summary.failure == "none"
                else reference.final_val_loss
            )
            try:
                oracle = best_config(profile, cons, conditions, weights, settings=oracle_settings)
            except ConfigError:
                oracle = None  # nothing inside the constraints trains: no oracle
            oracle_hp = oracle.hp if oracle is not None else default
            oracle_true_summary = scorer.summary(oracle_hp)
            oracle_obj = scorer.objective(oracle_true_summary) if oracle else math.nan
            gap = oracle_obj - default_true
            # The reach-box oracle: the best any method can do within `rounds` trust-region
            # steps from the default (reported next to the global oracle's fraction).
            try:
                reach_oracle = best_config(
                    profile,
                    reach_constraints(cons, default, settings.rounds),
                    conditions,
                    weights,
                    settings=oracle_settings,
                )
                reach_obj = scorer.objective(scorer.summary(reach_oracle.hp))
            except ConfigError:
                reach_obj = math.nan
            box = (
                reach_box(cons, default, settings.rounds)
                if settings.search_space == "reach"
                else None
            )
            for seed in range(settings.base_seed, settings.base_seed + settings.seeds):
                start = 1.7e9  # a fixed wall-clock origin keeps runs reproducible
                sim0 = simulate_run(
                    profile,
                    default,
                    conditions,
                    rng=_seed_for(seed, w_index, 0),
                    run_id=f"{name}-s{seed}-r0",
                    start=start,
                    scrape_interval_s=settings.scrape_interval_s,
                )
                run0 = sim0.summary
                observe = scorer.objective  # measured run, same yardstick
                default_observed = observe(run0)
                for method in settings.methods:
                    task = TuningTask(
                        workload=name,
                        profile=profile,
                        constraints=cons,
                        default=default,
                        default_summary=run0,
                        seed=(seed * 1_000_003 + w_index) % 2**32,  # numpy/optuna range
                        box=box,
                        extra={
                            "oracle_hp": oracle_hp,
                            "default_objective": default_observed,
                            "default_table": sim0.table,
                        },
                    )
                    tuner = _make_tuner(method, task, settings, propose)
                    common = {
                        "workload": name,
                        "split": profile.split,
                        "framework": profile.framework,
                        "bottleneck": profile.bottleneck,
                        "method": method,
                        "seed": seed,
                        "default_objective": default_true,
                        "oracle_objective": oracle_obj,
                        "oracle_gap": gap,
                        "oracle_reach_objective": reach_obj,
                        "oracle_reach_gap": reach_obj - default_true,
                        "default_val_loss": default_val_loss,
                        "oracle_val_loss": oracle_true_summary.final_val_loss,
                    }
                    incumbent = (default, default_observed, 0, default_true_summary, run0)
                    # The incumbent under the measured val-loss rule, for every method; it
                    # differs from `incumbent` only for the oracle (see oracle_ceiling).
                    ruled = (default_observed, default_true)
                    row = _row(
                        common,
                        0,
                        default,
                        run0,
                        default_true_summary,
                        default_observed,
                        default_true,
                        "",
                        incumbent,
                        scorer,
                        gap,
                        settings,
                    )
                    row["oracle_fraction_ruled"] = row["oracle_fraction_incumbent"]
                    rows.append(row)
                    current = default
                    for rnd in range(1, settings.rounds + 1):
                        proposal = tuner.ask()
                        previous = current if tuner.uses_trust_region else None
                        problem = _validate(cons, proposal, previous)
                        if problem:
                            tuner.reject(proposal)
                            proposal_ran = current
                        else:
                            proposal_ran = proposal
                        sim = simulate_run(
                            profile,
                            proposal_ran,
                            conditions,
                            rng=_seed_for(seed, w_index, rnd),
                            run_id=f"{name}-s{seed}-r{rnd}",
                            start=start + rnd * 86_400.0,
                            scrape_interval_s=settings.scrape_interval_s,
                        )
                        run = sim.summary
                        observed = observe(run)
                        true_summary = scorer.summary(proposal_ran)
                        true_obj = scorer.objective(true_summary)
                        note = tuner.last_note
                        if problem:
                            tuner.tell(current, run, observed, sim.table)
                        else:
                            tuner.tell(proposal_ran, run, observed, sim.table)
                            current = proposal_ran
                        # The oracle's configuration holds quality by construction (noise-free).
                        holds = _holds_quality(run, run0, settings)
                        if observed > incumbent[1] and (holds or method == "oracle"):
                            incumbent = (proposal_ran, observed, rnd, true_summary, run)
                        if observed > ruled[0] and holds:
                            ruled = (observed, true_obj)
                        row = _row(
                            common,
                            rnd,
                            proposal,
                            run,
                            true_summary,
                            observed,
                            true_obj,
                            problem,
                            incumbent,
                            scorer,
                            gap,
                            settings,
                        )
                        row["note"] = note
                        ruled_fraction = _fraction(ruled[1], default_true, gap, settings)
                        row["oracle_fraction_ruled"] = ruled_fraction
                        rows.append(row)
                        advance()
    version = policy.version if policy is not None else None
    return EvaluationResult(rows, settings, tuple(names), policy_path, version)


def _holds_quality(run: RunSummary, default_run: RunSummary, settings: EvaluationSettings) -> bool:
    """Tell whether a measured run may become the incumbent.

    It must have trained, and its measured validation loss must hold the quality bar
    against the measured default run (any successful run qualifies when the default failed).
    """
    if run.failure != "none" or not math.isfinite(run.final_val_loss):
        return False
    if default_run.failure != "none" or not math.isfinite(default_run.final_val_loss):
        return True
    return run.final_val_loss <= default_run.final_val_loss * (1.0 + settings.val_loss_tolerance)


def _finite_or(value: float, fallback: float) -> float:
    return value if math.isfinite(value) else fallback


def _fraction(obj: float, default: float, gap: float, settings: EvaluationSettings) -> float:
    """Return the fraction of the oracle's improvement, NaN when the gap is negligible."""
    if not gap > settings.min_oracle_gap:
        return math.nan
    return (obj - default) / gap


def _row(
    common: dict[str, Any],
    rnd: int,
    proposal: Hyperparameters,
    run: RunSummary,
    true_summary: RunSummary,
    observed: float,
    true_obj: float,
    problem: str,
    incumbent: tuple[Hyperparameters, float, int, RunSummary, RunSummary],
    scorer: _Scorer,
    gap: float,
    settings: EvaluationSettings,
) -> dict[str, Any]:
    """Build one Parquet row."""
    inc_hp, _inc_obs, inc_round, inc_true, inc_run = incumbent
    inc_obj = scorer.objective(inc_true)
    default_obj = common["default_objective"]
    row: dict[str, Any] = dict(common)
    row |= {"round": rnd, "note": ""}
    row |= {f"hp_{k}": v for k, v in proposal.as_dict().items()}
    row |= _summary_fields(run)
    row |= {
        "valid": not problem,
        "invalid_reason": problem,
        "oom": run.failure == "oom",
        "objective_observed": observed,
        "objective_true": true_obj,
        "true_val_loss": float(true_summary.final_val_loss),
        "true_failure": true_summary.failure,
        "incumbent_round": inc_round,
        "incumbent_objective_true": inc_obj,
        "incumbent_val_loss_true": float(inc_true.final_val_loss),
        "incumbent_failure_true": inc_true.failure,
        **{f"incumbent_{k}": v for k, v in _summary_fields(inc_run).items() if k != "failure"},
        **{f"incumbent_hp_{k}": v for k, v in inc_hp.as_dict().items()},
        "oracle_fraction_incumbent": _fraction(inc_obj, default_obj, gap, settings),
        "oracle_fraction_last": _fraction(true_obj, default_obj, gap, settings),
    }
    reach_gap = float(common.get("oracle_reach_gap", math.nan))
    row["oracle_reach_fraction_incumbent"] = _fraction(inc_obj, default_obj, reach_gap, settings)
    row["oracle_reach_fraction_last"] = _fraction(true_obj, default_obj, reach_gap, settings)
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
        oracle_reach_fraction_mean=("oracle_reach_fraction", "mean"),
        oracle_reach_fraction_median=("oracle_reach_fraction", "median"),
        val_loss_ok_share=("val_loss_ok", "mean"),
        invalid_configs=("invalid_configs", "sum"),
        oom_runs=("oom_runs", "sum"),
        diverged_runs=("diverged_runs", "sum"),
        failed_runs=("failed_runs", "sum"),
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


# --------------------------------------------------------------------------- report
# report.md, rounds.parquet, summary.json and the plots: jpo/evaluate_report.py.


def write_report(result: EvaluationResult, out_dir: str | Path) -> ReportPaths:
    """Write report.md, rounds.parquet, summary.json and plots/*.png into ``out_dir``."""
    from jpo.evaluate_report import write_report as _write_report

    return _write_report(result, out_dir)


def run_from_cli(
    *,
    policy_path: str | None,
    workloads: Sequence[str] | None,
    split: str | None,
    rounds: int | None,
    seeds: int | None,
    methods: Sequence[str] | None,
    out: str,
    config: str | None = None,
    progress: bool = True,
) -> tuple[EvaluationResult, ReportPaths]:
    """Load settings and the policy, evaluate, and write the report (``jpo evaluate``)."""
    settings = load_evaluation_settings(config).with_overrides(
        split=split,
        rounds=rounds,
        seeds=seeds,
        methods=tuple(methods) if methods else None,
    )
    policy = None
    if "jpo" in settings.methods:
        from jpo.policy import LocalPolicy

        path = policy_path or str(_bundled_policy())
        policy = LocalPolicy.load(path)
        policy_path = path
    try:
        result = evaluate(
            settings, workloads=workloads, policy=policy, policy_path=policy_path, progress=progress
        )
    except JpoError:
        raise
    return result, write_report(result, out)


def _bundled_policy() -> Path:
    """Return the bundled policy folder (``jpo/data/policy``)."""
    folder = Path(__file__).resolve().parent / "data" / "policy"
    if not folder.exists():
        from jpo.errors import PolicyError

        raise PolicyError(
            f"no bundled policy at {folder}: pass --policy PATH to an exported artifact, "
            "or leave 'jpo' out of --methods"
        )
    return folder


__all__ += ["HYPERPARAMETER_NAMES", "ReportPaths", "gain_by_round", "run_from_cli"]
