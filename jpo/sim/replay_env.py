"""The Gymnasium replay env: recorded Prometheus history as hyperparameter-tuning episodes.

Registered as ``jpo/PrometheusReplay-v0`` (see :mod:`envs`); the class docstring below is
the env's spec.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any

import gymnasium as gym
import numpy as np
import pyarrow as pa
from gymnasium import spaces
from pydantic import Field, StrictBool, StrictInt, StrictStr

from jpo.errors import ConfigError, JpoError
from jpo.learning.features import (
    OBSERVATION_NAMES,
    WorkloadContext,
    build_observation,
    context_from_runs,
    observation_bounds,
    run_hyperparameters,
    summarize_run,
)
from jpo.learning.reward import (
    RewardWeights,
    compute_reward,
    load_reward_weights,
    per_gpu_throughput,
)
from jpo.settings import Settings, config_file, read_config, validate_settings
from jpo.sim.progress import ProgressLog
from jpo.sim.response import (
    ClusterConditions,
    WorkloadProfile,
    conditions_from_run,
    load_catalog,
    load_conditions,
    predict,
)
from jpo.sim.teacher import TEACHER_ACTION, teacher_action, unvaried_hyperparameters
from jpo.telemetry.schema import HISTORY_SCHEMA, PARTITION_COLUMNS, RunSummary
from jpo.workload.constraints import Constraints, load_constraints
from jpo.workload.types import HYPERPARAMETER_NAMES, Hyperparameters, WorkloadKey

__all__ = ["ENV_ID", "EnvConfig", "PrometheusReplayEnv", "load_env_config"]

ENV_ID = "jpo/PrometheusReplay-v0"

_SOURCES = ("catalog", "parquet", "table")
_SPLITS = ("train", "holdout", "all")

logger = logging.getLogger("jpo.sim.replay_env")


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class EnvConfig:
    """Validated env config (defaults in ``configs/env.toml``, which documents each key).

    Attributes:
        source: ``catalog``, ``parquet`` or ``table``: where the recorded runs come from.
        history_path: Parquet history root (source ``parquet``).
        table: in-memory HISTORY_SCHEMA table (source ``table``).
        split: catalog split, ``train``, ``holdout`` or ``all``.
        workloads: catalog names or ``dataset.model.framework`` slugs; empty = all.
        episode_length: executions per episode (>= 1).
        reward_weights_path: reward weights TOML ("" = configs/reward.toml).
        constraints_path: constraints TOML ("" = configs/constraints.toml).
        cluster_path: cluster conditions TOML ("" = configs/cluster.toml).
        catalog_path: workload profiles directory ("" = configs/workloads).
        tunable: hyperparameters the agent may change (empty = the constraints' tunable).
        calibrate: fit profiles to recorded runs (jpo.sim.calibration) for history sources.
        rollback_on_failure: after a failed run, continue from the last good config.
        noise: relative std of seeded per-step noise.
        residual_clip: clip of the recording's residual factors.
        step_info: return the full info dict from reset/step (False: empty dicts, faster
            in vector envs, e.g. for training).
        seed: seed of the synthetic catalog history.
        catalog_runs_per_workload: recorded runs simulated per workload.
        catalog_start: start of the first recorded run (s since the epoch).
        catalog_max_samples_per_run: scrapes kept per simulated run at most (0 = all);
            longer runs are sampled at a wider multiple of the scrape interval.
        randomized_profiles: synthetic training profiles added to the catalog source
            (domain randomization, :mod:`jpo.sim.randomization`); 0 = none.
        randomization_path: randomization settings TOML ("" = configs/randomization.toml).
        randomization_seed: seed of the synthetic profiles' sampler (-1 = the randomization
            file's ``[sampling] seed``); another seed draws another set, e.g. a validation set.
        catalog_profiles: replay the catalog's profiles of the split; False: only the
            randomized ones (a set of synthetic draws, such as configs/evaluate.toml's
            validation set).
        teacher: put the oracle teacher's action for the next step in every info, as
            ``teacher_action`` (:mod:`jpo.sim.teacher`; NaN for a workload without an oracle),
            for SAC's behaviour-cloning term (:mod:`jpo.train.sac_bc`).
        teacher_hold: hyperparameters the teacher leaves to the action mapping.
        teacher_hold_unvaried: history sources only: the teacher also holds, per workload,
            every hyperparameter that all of its successful recorded runs used at one value
            (the history gives no evidence on it).
        teacher_cache: JSON cache of the oracle configurations ("" = none).
    """

    source: str = "catalog"
    history_path: str = ""
    table: pa.Table | None = field(default=None, compare=False, repr=False)
    split: str = "train"
    workloads: tuple[str, ...] = ()
    episode_length: int = 16
    reward_weights_path: str = ""
    constraints_path: str = ""
    cluster_path: str = ""
    catalog_path: str = ""
    tunable: tuple[str, ...] = ()
    calibrate: bool = True
    rollback_on_failure: bool = True
    noise: float = 0.01
    residual_clip: float = 1.5
    step_info: bool = True
    seed: int = 0
    catalog_runs_per_workload: int = 24
    catalog_start: float = 1767225600.0
    catalog_max_samples_per_run: int = 0
    randomized_profiles: int = 0
    randomization_path: str = ""
    randomization_seed: int = -1
    catalog_profiles: bool = True
    teacher: bool = False
    teacher_hold: tuple[str, ...] = ("learning_rate", "epochs")
    teacher_hold_unvaried: bool = False
    teacher_cache: str = ""


_ENV = EnvConfig()
"""The defaults (configs/env.toml states them too)."""
_Float = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A finite number (an int is accepted, a bool is not)."""


class _EnvCatalogTable(Settings):
    """``[catalog]`` of env.toml (the synthetic catalog history)."""

    runs_per_workload: StrictInt = _ENV.catalog_runs_per_workload
    start: _Float = _ENV.catalog_start
    max_samples_per_run: StrictInt = _ENV.catalog_max_samples_per_run


class _EnvFile(Settings):
    """The whole of env.toml; ``load_env_config`` overlays the caller's overrides."""

    source: StrictStr = _ENV.source
    history_path: StrictStr = _ENV.history_path
    split: StrictStr = _ENV.split
    workloads: tuple[StrictStr, ...] = _ENV.workloads
    episode_length: StrictInt = _ENV.episode_length
    reward_weights_path: StrictStr = _ENV.reward_weights_path
    constraints_path: StrictStr = _ENV.constraints_path
    cluster_path: StrictStr = _ENV.cluster_path
    catalog_path: StrictStr = _ENV.catalog_path
    tunable: tuple[StrictStr, ...] = _ENV.tunable
    calibrate: StrictBool = _ENV.calibrate
    rollback_on_failure: StrictBool = _ENV.rollback_on_failure
    noise: _Float = _ENV.noise
    residual_clip: _Float = _ENV.residual_clip
    step_info: StrictBool = _ENV.step_info
    seed: StrictInt = _ENV.seed
    randomized_profiles: StrictInt = _ENV.randomized_profiles
    randomization_path: StrictStr = _ENV.randomization_path
    randomization_seed: StrictInt = _ENV.randomization_seed
    catalog_profiles: StrictBool = _ENV.catalog_profiles
    teacher: StrictBool = _ENV.teacher
    teacher_hold: tuple[StrictStr, ...] = _ENV.teacher_hold
    teacher_hold_unvaried: StrictBool = _ENV.teacher_hold_unvaried
    teacher_cache: StrictStr = _ENV.teacher_cache
    catalog: _EnvCatalogTable = _EnvCatalogTable()


def _file_values(file: Path) -> dict[str, Any]:
    """Return the values env.toml sets (flattened: ``[catalog] start`` -> ``catalog_start``)."""
    raw = validate_settings(_EnvFile, read_config(file), file)
    values = raw.model_dump(exclude_unset=True, exclude={"catalog"})
    catalog = raw.catalog.model_dump(exclude_unset=True)
    return values | {f"catalog_{k}": v for k, v in catalog.items()}


def _flatten(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Flatten ``[catalog] key`` into ``catalog_key``."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "catalog" and isinstance(value, Mapping):
            for sub, v in value.items():
                flat[f"catalog_{sub}"] = v
        else:
            flat[key] = value
    return flat


def _check_type(name: str, value: Any, default: Any, where: str) -> Any:
    """Coerce and check one config value against the type of its default."""
    bad = f"{where}: env config key {name!r} = {value!r} "
    if name == "table":
        if value is not None and not isinstance(value, pa.Table):
            raise ConfigError(
                bad + "must be a pyarrow.Table in jpo.telemetry.schema.HISTORY_SCHEMA"
            )
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(bad + "must be true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise ConfigError(bad + "must be an integer")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(bad + "must be a number")
        if not math.isfinite(value):
            raise ConfigError(bad + "must be finite")
        return float(value)
    if isinstance(default, tuple):
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ConfigError(bad + "must be a list of strings")
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(bad + "must be a list of strings")
        return tuple(value)
    if not isinstance(value, str | Path):
        raise ConfigError(bad + "must be a string")
    return str(value)


def load_env_config(
    overrides: Mapping[str, Any] | None = None, path: str | Path | None = None
) -> EnvConfig:
    """Return the env config: ``configs/env.toml`` (or ``path``) overlaid with ``overrides``.

    ``overrides`` may hold a ``config_path`` key naming another base TOML file.

    Raises:
        ConfigError: unreadable file, unknown key, wrong type or an invalid value.
    """
    over = dict(overrides or {})
    base_path = config_file("env.toml", over.pop("config_path", None) or path)
    values = _file_values(base_path)
    defaults = EnvConfig()
    known = {f for f in EnvConfig.__dataclass_fields__}
    for key, value in _flatten(over, "config").items():
        if key not in known:
            raise ConfigError(
                f"config: unknown env config key {key!r}; known keys: {', '.join(sorted(known))}"
            )
        values[key] = _check_type(key, value, getattr(defaults, key), "config")
    cfg = replace(defaults, **values)
    _validate(cfg)
    return cfg


def _validate(cfg: EnvConfig) -> None:
    """Raise ConfigError for values no env can be built from."""
    if cfg.source not in _SOURCES:
        raise ConfigError(f"env config: source = {cfg.source!r}; use one of {_SOURCES}")
    if cfg.split not in _SPLITS:
        raise ConfigError(f"env config: split = {cfg.split!r}; use one of {_SPLITS}")
    if cfg.episode_length < 1:
        raise ConfigError(
            f"env config: episode_length = {cfg.episode_length}; it must be an integer >= 1 "
            "(executions per episode; 1 = one execution per episode)"
        )
    if cfg.source == "parquet" and not cfg.history_path:
        raise ConfigError(
            "env config: source = 'parquet' needs history_path (the Parquet history root "
            "written by `jpo history pull`)"
        )
    if cfg.source == "table" and cfg.table is None:
        raise ConfigError(
            "env config: source = 'table' needs key 'table' (a HISTORY_SCHEMA pyarrow.Table)"
        )
    for key in ("tunable", "teacher_hold"):
        bad = [n for n in getattr(cfg, key) if n not in HYPERPARAMETER_NAMES]
        if bad:
            raise ConfigError(
                f"env config: {key} has unknown hyperparameter(s) {bad}; known: "
                f"{', '.join(HYPERPARAMETER_NAMES)}"
            )
    if cfg.noise < 0 or cfg.noise > 0.5:
        raise ConfigError(f"env config: noise = {cfg.noise}; use a relative std in [0, 0.5]")
    if cfg.residual_clip < 1.0:
        raise ConfigError(f"env config: residual_clip = {cfg.residual_clip}; it must be >= 1")
    _validate_randomization(cfg)
    if cfg.catalog_max_samples_per_run < 0:
        raise ConfigError(
            f"env config: [catalog] max_samples_per_run = {cfg.catalog_max_samples_per_run}; "
            "use 0 (every scrape) or a positive number of scrapes"
        )
    if cfg.catalog_runs_per_workload < 1:
        raise ConfigError(
            f"env config: [catalog] runs_per_workload = {cfg.catalog_runs_per_workload}; "
            "it must be >= 1"
        )


def _validate_randomization(cfg: EnvConfig) -> None:
    """Raise ConfigError for synthetic-profile settings no env can be built from."""
    if cfg.randomized_profiles < 0:
        raise ConfigError(
            f"env config: randomized_profiles = {cfg.randomized_profiles}; it must be >= 0"
        )
    if cfg.randomized_profiles and cfg.source != "catalog":
        raise ConfigError(
            "env config: randomized_profiles needs source = 'catalog' (synthetic profiles "
            "have no recorded history)"
        )
    if cfg.randomized_profiles and cfg.split == "holdout":
        raise ConfigError(
            "env config: randomized_profiles are training profiles; use split = 'train' "
            "(or 'all'), not 'holdout'"
        )
    if not cfg.catalog_profiles and not (cfg.source == "catalog" and cfg.randomized_profiles):
        raise ConfigError(
            "env config: catalog_profiles = false leaves only the randomized profiles; set "
            "source = 'catalog' and randomized_profiles > 0, or catalog_profiles = true"
        )
    if cfg.randomization_seed < -1:
        raise ConfigError(
            f"env config: randomization_seed = {cfg.randomization_seed}; use -1 (the "
            "randomization file's seed) or a seed >= 0"
        )


# --------------------------------------------------------------------------- replay data

# Indices of the RunSummary fields a recording's residual pattern scales.
_UTIL_FIELDS = (
    "cpu_util_mean",
    "cpu_util_p95",
    "mem_util_mean",
    "mem_util_p95",
    "gpu_util_mean",
    "gpu_util_p95",
    "gpu_mem_util_mean",
    "gpu_mem_util_p95",
)
_SCALED_FIELDS = (*_UTIL_FIELDS, "throughput", "final_val_loss")


@dataclass(frozen=True, slots=True)
class Recording:
    """One recorded run, precomputed: what the env replays at each step."""

    run_id: str
    hp: Hyperparameters
    summary: RunSummary
    conditions: ClusterConditions
    residual: tuple[float, ...]
    """recorded / predicted, per field of _SCALED_FIELDS (1.0 where a run failed)."""


@dataclass(frozen=True)
class WorkloadReplay:
    """A workload's profile, its recordings in time order and its fixed context."""

    name: str
    key: WorkloadKey
    profile: WorkloadProfile
    recordings: tuple[Recording, ...]
    context: WorkloadContext
    reference_throughput: float
    """ρ_ref of the reward: the workload's baseline per-GPU throughput (samples/s/GPU)."""
    reference_gpu_hours: float
    """G_ref of the reward: the workload's baseline GPU-hours per run."""


def _residual(recorded: RunSummary, predicted: RunSummary, clip: float) -> tuple[float, ...]:
    """Return recorded/predicted per scaled field, clipped to [1/clip, clip]."""
    if recorded.failure != "none" or predicted.failure != "none":
        return (1.0,) * len(_SCALED_FIELDS)
    out = []
    for name in _SCALED_FIELDS:
        r = getattr(recorded, name)
        p = getattr(predicted, name)
        f = r / p if p > 0 and r > 0 and math.isfinite(r / p) else 1.0
        out.append(min(max(f, 1.0 / clip), clip))
    return tuple(out)


def _baseline_run(
    profile: WorkloadProfile, hp: Hyperparameters, cond: ClusterConditions
) -> RunSummary:
    """Return the run the model predicts at ``hp`` with the batch halved until it fits."""
    for _ in range(16):
        s = predict(profile, hp, cond)
        if s.failure != "oom" or hp.batch_size <= 1:
            break
        hp = replace(hp, batch_size=max(1, hp.batch_size // 2))
    if s.failure == "oom":
        raise ConfigError(
            f"workload {profile.name!r}: every recorded run failed and even batch size 1 "
            "runs out of memory in the response model; fix its profile or drop it"
        )
    return s


def _build_workload(
    name: str,
    profile: WorkloadProfile,
    runs: Sequence[tuple[str, Hyperparameters, RunSummary]],
    base: ClusterConditions,
    residual_clip: float,
    reference: RunSummary | None = None,
) -> WorkloadReplay:
    """Precompute a workload's recordings (conditions, residuals) and context.

    ``reference`` (a successful run) sets ρ_ref and G_ref of the reward; without it they
    are the medians over the successful recorded runs (what a history source knows).
    """
    recs = []
    for run_id, hp, summary in runs:
        cond = conditions_from_run(profile, hp, summary, base)
        pred = predict(profile, hp, cond)
        recs.append(Recording(run_id, hp, summary, cond, _residual(summary, pred, residual_clip)))
    good = [r for r in recs if r.summary.failure == "none" and r.summary.throughput > 0]
    if good:
        baseline = statistics.median(r.summary.throughput for r in good)
        ref = statistics.median(per_gpu_throughput(r.summary) for r in good)
        ref_hours = statistics.median(r.summary.gpu_hours for r in good)
        best = min(r.summary.final_val_loss for r in good)
    else:
        # Every recording failed: the reference run (catalog source) or the model's run at
        # the first recording's settings, the batch halved until it fits, stands in.
        if reference is not None and reference.failure == "none" and reference.throughput > 0:
            fitted = reference
        else:
            fitted = _baseline_run(profile, recs[0].hp, recs[0].conditions)
        ref = per_gpu_throughput(fitted) if fitted.throughput > 0 else 1.0
        baseline = fitted.throughput if fitted.throughput > 0 else 1.0
        ref_hours = fitted.gpu_hours
        best = math.inf
    if reference is not None and reference.failure == "none" and reference.gpu_hours > 0:
        ref, ref_hours = per_gpu_throughput(reference), reference.gpu_hours
    context = WorkloadContext(
        baseline_throughput=baseline,
        best_val_loss=best,
        previous_failed=False,
        framework=profile.framework,
        model_params=None,  # CI cannot know it for arbitrary workloads: keep features equal
    )
    return WorkloadReplay(name, profile.key, profile, tuple(recs), context, ref, ref_hours)


def _select_profiles(cfg: EnvConfig, catalog: Mapping[str, WorkloadProfile]) -> list[str]:
    """Return the catalog names the config selects (split + workload filter)."""
    in_split = [n for n, p in catalog.items() if cfg.split == "all" or p.split == cfg.split]
    if not cfg.workloads:
        return in_split
    by_slug = {p.key.slug(): n for n, p in catalog.items()}
    chosen = []
    for w in cfg.workloads:
        name = w if w in catalog else by_slug.get(w)
        if name is None:
            raise ConfigError(
                f"env config: unknown workload {w!r}; known catalog workloads: "
                f"{', '.join(sorted(catalog))}"
            )
        chosen.append(name)
    return chosen


def _catalog_history(
    cfg: EnvConfig,
    profiles: Sequence[WorkloadProfile],
    base: ClusterConditions,
    runs: int | None = None,
    seed: int | None = None,
) -> pa.Table:
    """Simulate ``runs_per_workload`` consecutive past runs of each profile.

    Uses the simulator's history generator (:func:`jpo.sim.simulator.generate_runs`, the same
    as ``jpo simulate history``): hyperparameters vary around each workload's defaults as
    ``configs/cluster.toml`` ``[history]`` says.
    """
    from jpo.sim.simulator import generate_runs

    simulated = generate_runs(
        list(profiles),
        runs if runs is not None else cfg.catalog_runs_per_workload,
        seed=cfg.seed if seed is None else seed,
        conditions=base,
        start=cfg.catalog_start,
        max_samples_per_run=cfg.catalog_max_samples_per_run,
        progress=ProgressLog(logger, "simulating history: workloads", len(profiles)).step,
    )
    return pa.concat_tables([r.table for r in simulated])


def _runs_of(
    table: pa.Table, key: WorkloadKey, gpus: int
) -> list[tuple[str, Hyperparameters, RunSummary]]:
    """Return (run_id, hp, summary) of each run of a workload, in start-time order."""
    import pyarrow.compute as pc

    mask = pc.and_(
        pc.and_(pc.equal(table["dataset"], key.dataset), pc.equal(table["model"], key.model)),
        pc.equal(table["framework"], key.framework),
    )
    wl = table.filter(mask).sort_by([("run_id", "ascending"), ("timestamp", "ascending")])
    ids = np.asarray(wl.column("run_id").to_numpy(zero_copy_only=False), dtype=object)
    ts = wl.column("timestamp").cast(pa.int64()).to_numpy()
    cuts = [0, *(np.flatnonzero(ids[1:] != ids[:-1]) + 1).tolist(), len(ids)]
    # (start time, run_id, first row, rows) of each run, in start-time order
    spans = sorted((int(ts[a]), str(ids[a]), a, b - a) for a, b in pairwise(cuts) if b > a)
    out = []
    for _, run_id, offset, length in spans:
        rows = wl.slice(offset, length)
        try:
            out.append((run_id, run_hyperparameters(rows), summarize_run(rows, gpus=gpus)))
        except JpoError as err:
            raise ConfigError(
                f"history of {key.slug()} run {run_id!r} cannot be replayed: {err}"
            ) from err
    return out


def _history_keys(table: pa.Table) -> list[WorkloadKey]:
    """Return the distinct workload keys of a history table."""
    rows = table.select(list(PARTITION_COLUMNS)).group_by(list(PARTITION_COLUMNS)).aggregate([])
    return sorted((WorkloadKey(**r) for r in rows.to_pylist()), key=WorkloadKey.slug)


def _profile_for(
    key: WorkloadKey,
    runs: Sequence[tuple[str, Hyperparameters, RunSummary]],
    prior: WorkloadProfile | None,
    calibrate: bool,
    conditions: ClusterConditions,
) -> WorkloadProfile:
    """Return the response-model profile of a recorded workload (calibrated if asked).

    Calibration (:func:`jpo.sim.calibration.fit_profile`) needs a successful run; a workload
    whose recorded runs all failed keeps its catalog profile.
    """
    if calibrate and any(s.failure == "none" for _, _, s in runs):
        from jpo.sim.calibration import fit_profile

        pairs = [(hp, s) for _, hp, s in runs]
        return fit_profile(key, pairs, prior, conditions=conditions)
    if prior is None:
        why = "calibration is off" if not calibrate else "none of its recorded runs succeeded"
        raise ConfigError(
            f"history workload {key.slug()} has no catalog profile with the same dataset/"
            f"model/framework and {why}; add a profile to configs/workloads, or record a "
            "successful run and set calibrate = true"
        )
    return prior


def _read_parquet(cfg: EnvConfig) -> pa.Table:
    """Read the Parquet history store named by the config."""
    from jpo.telemetry.history import read_history

    root = Path(cfg.history_path)
    if not root.exists():
        raise ConfigError(
            f"env config: history_path {str(root)!r} does not exist; pull history first "
            "(`jpo history pull`) or use source = 'catalog'"
        )
    return read_history(root)


def _build_replays(cfg: EnvConfig) -> tuple[WorkloadReplay, ...]:
    """Load everything one env instance replays, precomputed (see PrometheusReplayEnv)."""
    start = time.monotonic()
    logger.info(
        "building replays: source %s, split %s%s",
        cfg.source,
        cfg.split,
        f", {cfg.randomized_profiles} randomized profiles" if cfg.randomized_profiles else "",
    )
    replays = _build_replays_of(cfg)
    logger.info("built replays of %d workloads in %.1f s", len(replays), time.monotonic() - start)
    return replays


def _build_replays_of(cfg: EnvConfig) -> tuple[WorkloadReplay, ...]:
    catalog = load_catalog(cfg.catalog_path or None)
    base = load_conditions(cfg.cluster_path or None)
    if cfg.source == "catalog":
        names = _select_profiles(cfg, catalog) if cfg.catalog_profiles else []
        if not names and cfg.catalog_profiles:
            raise ConfigError(
                f"env config: the catalog has no workload in split {cfg.split!r}; use "
                "split = 'all' or add profiles"
            )
        profiles = [catalog[n] for n in names]
        tables = [_catalog_history(cfg, profiles, base)] if profiles else []
        selected: list[tuple[str, WorkloadKey, WorkloadProfile | None]] = [
            (n, catalog[n].key, catalog[n]) for n in names
        ]
        if cfg.randomized_profiles:
            from jpo.sim.randomization import load_randomization, random_profiles

            seed = cfg.randomization_seed if cfg.randomization_seed >= 0 else None
            rs = load_randomization(cfg.randomization_path or None, seed)
            synthetic = random_profiles(
                catalog, cfg.randomized_profiles, settings=rs, conditions=base
            )
            # a seed of its own: the synthetic history does not repeat the catalog's draws
            tables.append(_catalog_history(cfg, synthetic, base, rs.runs_per_profile, cfg.seed + 1))
            selected += [(p.name, p.key, p) for p in synthetic]
        table = pa.concat_tables(tables)
    else:
        table = _read_parquet(cfg) if cfg.source == "parquet" else cfg.table
        assert table is not None
        missing = [c for c in HISTORY_SCHEMA.names if c not in table.column_names]
        if missing:
            raise ConfigError(
                f"env config: history table lacks column(s) {missing} of HISTORY_SCHEMA"
            )
        if table.num_rows == 0:
            raise ConfigError(
                f"env config: the history ({cfg.source}"
                f"{': ' + cfg.history_path if cfg.history_path else ''}) is empty; pull "
                "history first or use source = 'catalog'"
            )
        by_key = {p.key: (n, p) for n, p in catalog.items()}
        keys = _history_keys(table)
        if cfg.workloads:
            by_slug = {k.slug(): k for k in keys}
            by_name = {n: p.key for n, p in catalog.items()}
            wanted = []
            for w in cfg.workloads:
                key = by_slug.get(w) or by_name.get(w)
                if key is None or key not in keys:
                    raise ConfigError(
                        f"env config: unknown workload {w!r}: not in the history; it holds "
                        f"{', '.join(k.slug() for k in keys)}"
                    )
                wanted.append(key)
            keys = wanted
        elif cfg.split != "all":
            keys = [k for k in keys if k not in by_key or by_key[k][1].split == cfg.split]
        if not keys:
            raise ConfigError(
                f"env config: no workload of the history is in split {cfg.split!r}; use "
                "split = 'all' or name the workloads"
            )
        selected = [
            (by_key[k][0] if k in by_key else k.slug(), k, by_key[k][1] if k in by_key else None)
            for k in keys
        ]
    logger.info("history of %d workloads: %d rows; replaying each run", len(selected), len(table))
    progress = ProgressLog(logger, "building replays: workloads", len(selected))
    replays = []
    for name, key, prior in selected:
        gpus = prior.limits.gpus if prior is not None else 1
        runs = _runs_of(table, key, gpus)
        if not runs:
            raise ConfigError(f"env config: workload {name!r} has no recorded run")
        reference = None
        if cfg.source == "catalog" and prior is not None:
            profile = prior  # the simulated history's own ground-truth profile
            # ρ_ref and G_ref from the oracle's reference run (jpo.sim.oracle.reference_config),
            # so the env's reward scores like the oracle and `jpo evaluate`
            from jpo.sim.oracle import reference_config

            reference = reference_config(profile, base)[1]
        else:
            profile = _profile_for(key, runs, prior, cfg.calibrate, base)
        replays.append(_build_workload(name, profile, runs, base, cfg.residual_clip, reference))
        progress.step(len(replays))
    return tuple(replays)


@lru_cache(maxsize=8)
def _cached_replays(cfg: EnvConfig) -> tuple[WorkloadReplay, ...]:
    """Memoize :func:`_build_replays` of catalog configs (vector envs share the work)."""
    return _build_replays(cfg)


def _teacher_targets(
    cfg: EnvConfig, replays: Sequence[WorkloadReplay]
) -> dict[str, Hyperparameters]:
    """Return each replayed profile's oracle configuration (the teacher's targets)."""
    from jpo.sim.teacher import cached_oracle_configs

    cache = Path(cfg.teacher_cache) if cfg.teacher_cache else None
    oracles = cached_oracle_configs([r.profile for r in replays], _constraints(cfg), cache)
    # keyed by the replay's name, which the env looks up: a calibrated profile is named
    # "<slug>-calibrated" while its replay keeps the catalog name (history sources)
    return {r.name: oracles[r.profile.name] for r in replays if r.profile.name in oracles}


@lru_cache(maxsize=8)
def _cached_teacher(cfg: EnvConfig) -> dict[str, Hyperparameters]:
    """Memoize :func:`_teacher_targets` of catalog configs (vector envs share the work)."""
    return _teacher_targets(cfg, _cached_replays(cfg))


def _constraints(cfg: EnvConfig) -> Constraints:
    """Return the constraints of the config, restricted to its tunable set."""
    base = load_constraints(cfg.constraints_path or None)
    if not cfg.tunable:
        return base
    tunable = [n for n in cfg.tunable if n in base.tunable]
    if not tunable:
        raise ConfigError(
            f"env config: none of tunable {list(cfg.tunable)} is tunable in "
            f"{base.source}; the action space would be empty"
        )
    return Constraints(
        base.params,
        tunable,
        source=f"{base.source} (env tunable)",
        learning_rate_follows_batch=base.learning_rate_follows_batch,
    )


# --------------------------------------------------------------------------- env


class PrometheusReplayEnv(gym.Env[np.ndarray, np.ndarray]):
    """Tuning campaigns replayed from recorded telemetry (the env's spec, Gymnasium format).

    ## Description

    Tuning campaigns of recurring training workloads, replayed from recorded telemetry.
    Each step is ONE execution of a workload (one CI/CD pipeline run): the agent sets the
    next execution's hyperparameters, and the env answers with what that execution would
    have done. A recording cannot show what another batch size would have done, so the
    env uses the workload response model (:mod:`jpo.sim.response`; calibrated to the history
    by :mod:`jpo.sim.calibration` when available, else the catalog profile) to turn the
    recorded run into the counterfactual run at the new hyperparameters: the recording
    supplies the cluster conditions (the co-tenant contention inferred from its
    throughput, :func:`jpo.sim.response.conditions_from_run`) and its noise pattern (its
    residuals against the model, recorded / predicted per summary field), plus seeded
    noise. Consecutive steps replay the workload's consecutive recorded executions.

    ## Action Space

    ``Box(-1, 1, (k,), float32)``, one entry per tunable hyperparameter, in
    ``jpo.workload.types.HYPERPARAMETER_NAMES`` order restricted to the tunable set (default
    all four: batch_size, learning_rate, num_layers, epochs). Entry ``a`` moves its
    parameter inside the trust region of ``configs/constraints.toml``
    (:meth:`jpo.workload.constraints.Constraints.apply_action`): ``cur·f^a`` on log scales
    (batch size, learning rate), linearly towards the region's edge otherwise; then
    clamp, round, validate. 0 keeps the value. The learning rate's entry starts from
    ``lr·(B'/B)^c`` when the batch moves from B to B' (``[action]
    learning_rate_follows_batch`` = c in the constraints file; linear scaling rule).
    Frozen (non-tunable) parameters keep the recorded run's value.

    ## Observation Space

    ``Box(low, high, (24,), float32)``: the feature spec of :mod:`jpo.learning.features`
    (version ``FEATURE_SPEC_VERSION``, names ``OBSERVATION_NAMES``), the SAME function
    the CI stage applies to live Prometheus data: CPU, memory, GPU and GPU-memory
    utilization (mean, p95) of the last run, its throughput relative to the workload's
    baseline, its validation loss relative to the workload's best, failure one-hot,
    whether the run before it failed, the current hyperparameters normalized into their
    constrained ranges, framework one-hot and model size (unknown: CI cannot know it).
    The context (baseline throughput, best loss, previous failure) is CI's,
    :func:`jpo.learning.features.context_from_runs` over the runs observed earlier in the episode
    (none at its start, as in a fresh CI campaign).

    ## Rewards

    :func:`jpo.learning.reward.compute_reward` of the counterfactual run against the previous run
    of the episode and the workload's best loss so far, with the weights of
    ``configs/reward.toml``, and the workload's baseline per-GPU throughput as ρ_ref and
    GPU-hours as G_ref (catalog source: the oracle's reference run,
    :func:`jpo.sim.oracle.reference_config`, as ``jpo evaluate`` scores; history sources: the
    medians over the successful recorded runs): utilization
    efficiency + log per-GPU-throughput ratio + a small improvement bonus - a penalty for
    validation-loss degradation beyond a tolerance - log GPU-hours ratio; a failed run
    (OOM, divergence) scores ``-P_fail``. Within [-5, 3.5] per step with the defaults.

    ## Starting State

    ``reset`` picks a workload uniformly and one of its recorded runs uniformly (or the
    ones named by ``options={"workload": name, "start": index}``); the first
    observation is that recorded run, as recorded, at its own hyperparameters.

    ## Episode End

    No terminal state (a tuning campaign has no goal state): ``terminated`` is always
    False. The episode is truncated after ``episode_length`` executions.

    ## Arguments

    ``config`` (dict, optional; RLlib's ``env_config``): overrides of
    ``configs/env.toml`` (source ``catalog``/``parquet``/``table``, ``history_path``,
    ``table``, ``split``, ``workloads``, ``episode_length``, ``reward_weights_path``,
    ``constraints_path``, ``cluster_path``, ``tunable``, ``calibrate``,
    ``rollback_on_failure``, ``noise``, ``seed``,
    ``catalog``: {...},
    ``randomized_profiles``, ``randomization_path``, ``randomization_seed``,
    ``catalog_profiles``, ``teacher``, ``teacher_hold``, ``teacher_cache``). Invalid configs
    (empty history, unknown workload, episode_length < 1, unknown keys) raise
    :class:`jpo.errors.ConfigError` at construction.

    ``info`` of each step: ``workload``, ``run_id`` (the replayed recording),
    ``hyperparameters`` (of the executed run), ``summary`` (its RunSummary),
    ``reward`` (the RewardBreakdown) and ``rolled_back`` (empty with ``step_info=False``);
    with ``teacher`` on, also ``teacher_action`` (in both modes): the action of the oracle
    teacher (:mod:`jpo.sim.teacher`) from the state this observation shows.

    ## Version History

    * v0: initial version (feature spec 1, reward of configs/reward.toml).
    * v0 (same id): catalog rewards reference the oracle's reference run; optional
      domain-randomized training profiles (``randomized_profiles``).
    * v0 (same id): the opt-in ``rollback_on_degraded`` is gone again (measured as no
      gain, docs/design/training.md); the default behaviour is unchanged.
    * v0 (same id): opt-in ``teacher`` (the oracle teacher's action in each info).
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        render_mode: str | None = None,
        **overrides: Any,
    ):
        """Build the env from a config dict (see the class docstring, ``## Arguments``).

        Config keys may also come as keyword arguments (``gym.make(id, episode_length=4)``,
        as RLlib's ``gym.make_vec(id, **env_config)`` passes them); they win over ``config``.
        """
        if render_mode is not None:
            raise ConfigError(f"PrometheusReplayEnv has no render modes, got {render_mode!r}")
        self.render_mode = None
        cfg = load_env_config({**dict(config or {}), **overrides})
        self.config = cfg
        self._constraints = _constraints(cfg)
        # Observations normalize with the global constraints (same meaning for every
        # workload and for CI, whatever is tunable here).
        self._norm = load_constraints(cfg.constraints_path or None)
        self._weights: RewardWeights = load_reward_weights(cfg.reward_weights_path or None)
        self._replays = _cached_replays(cfg) if cfg.source == "catalog" else _build_replays(cfg)
        self._episode_length = cfg.episode_length
        self._rollback = cfg.rollback_on_failure
        self._noise = cfg.noise
        self._info = cfg.step_info
        low, high = observation_bounds()
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        k = len(self._constraints.tunable)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(k,), dtype=np.float32)
        self._names = {r.name: i for i, r in enumerate(self._replays)}
        self._holds = self._teacher_holds()
        self._teacher: dict[str, Hyperparameters] | None = None
        if cfg.teacher:
            self._teacher = (
                _cached_teacher(cfg)
                if cfg.source == "catalog"
                else _teacher_targets(cfg, self._replays)
            )
        self._w: WorkloadReplay | None = None
        self._t = 0
        self._start = 0

    @property
    def workloads(self) -> tuple[str, ...]:
        """Names of the workloads this env replays."""
        return tuple(r.name for r in self._replays)

    def teacher_hold(self, name: str) -> tuple[str, ...]:
        """Hyperparameters the teacher holds for workload ``name`` (``teacher_hold*`` keys)."""
        return self._holds[name]

    def _teacher_holds(self) -> dict[str, tuple[str, ...]]:
        """Each workload's held hyperparameters: teacher_hold, + the unvaried ones if asked."""
        cfg = self.config
        out = {}
        for w in self._replays:
            hold = cfg.teacher_hold
            if cfg.teacher_hold_unvaried and cfg.source != "catalog":
                good = [r.hp for r in w.recordings if r.summary.failure == "none"]
                hold = tuple(dict.fromkeys((*hold, *unvaried_hyperparameters(good))))
            out[w.name] = hold
        return out

    @property
    def observation_names(self) -> tuple[str, ...]:
        """Name of each observation entry (jpo.learning.features.OBSERVATION_NAMES)."""
        return OBSERVATION_NAMES

    @property
    def profiles(self) -> tuple[WorkloadProfile, ...]:
        """The response-model profile of each replayed workload (``workloads`` order)."""
        return tuple(r.profile for r in self._replays)

    @property
    def constraints(self) -> Constraints:
        """The limits actions are mapped through (tunable set included)."""
        return self._constraints

    @property
    def profile(self) -> WorkloadProfile:
        """The current campaign's workload profile (after ``reset``)."""
        if self._w is None:
            raise gym.error.ResetNeeded("call reset() before reading the campaign's profile")
        return self._w.profile

    @property
    def hyperparameters(self) -> Hyperparameters:
        """The configuration the next action moves from (after a rollback: the last good)."""
        if self._w is None:
            raise gym.error.ResetNeeded("call reset() before reading the configuration")
        return self._hp

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a campaign: pick a workload and a recorded run; observe that run."""
        super().reset(seed=seed)
        options = options or {}
        rng = self.np_random
        if "workload" in options:
            name = options["workload"]
            if name not in self._names:
                raise ConfigError(
                    f"reset option workload={name!r} is not replayed by this env; known: "
                    f"{', '.join(self._names)}"
                )
            w = self._replays[self._names[name]]
        else:
            w = self._replays[int(rng.integers(len(self._replays)))]
        n = len(w.recordings)
        start = int(options["start"]) % n if "start" in options else int(rng.integers(n))
        rec = w.recordings[start]
        self._w = w
        self._start = start
        self._t = 0
        prev_failed = start > 0 and w.recordings[start - 1].summary.failure != "none"
        ctx = replace(w.context, previous_failed=prev_failed)
        self._hp = rec.hp
        self._last_good = rec.hp if rec.summary.failure == "none" else self._first_good(w, rec)
        self._prev = rec.summary
        # The episode's noise factors (1 + noise·N(0, 1) per scaled field and step), drawn
        # at once from the seeded np_random: reproducible, and cheap in step().
        if self._noise > 0:
            draws = self.np_random.standard_normal((self._episode_length, len(_SCALED_FIELDS)))
            self._eps = (1.0 + self._noise * draws).tolist()
        # The observation's context is CI's (jpo.learning.features.context_from_runs): the runs
        # observed earlier in the campaign; at its start there are none, as in CI.
        self._seen: list[RunSummary] = [rec.summary]
        fw = w.profile.framework
        obs = build_observation(
            rec.summary, rec.hp, self._norm, context_from_runs(rec.summary, [], framework=fw)
        )
        self._ctx = ctx.after(rec.summary)
        if not self._info:
            return obs, self._teacher_info()
        info = {
            "workload": w.name,
            "run_id": rec.run_id,
            "hyperparameters": rec.hp,
            "summary": rec.summary,
            **self._teacher_info(),
        }
        return obs, info

    def _teacher_info(self) -> dict[str, Any]:
        """The teacher's action for the next step (``teacher`` on), else nothing."""
        if self._teacher is None or self._w is None:
            return {}
        target = self._teacher.get(self._w.name)
        if target is None:
            return {TEACHER_ACTION: np.full(self.action_space.shape, np.nan, np.float32)}
        action = teacher_action(self, target, self.teacher_hold(self._w.name))
        return {TEACHER_ACTION: action.astype(np.float32)}

    @staticmethod
    def _first_good(w: WorkloadReplay, rec: Recording) -> Hyperparameters:
        """Return a known-good config for rollback when the start recording failed."""
        for r in w.recordings:
            if r.summary.failure == "none":
                return r.hp
        return rec.hp

    def _counterfactual(self, rec: Recording, hp: Hyperparameters) -> RunSummary:
        """Predict the run at ``hp`` under ``rec``'s conditions, with its noise pattern."""
        w = self._w
        assert w is not None
        s = predict(w.profile, hp, rec.conditions)
        if s.failure != "none":
            return s
        res = rec.residual
        if self._noise > 0:
            eps = self._eps[(self._t - 1) % len(self._eps)]
            f: Sequence[float] = [res[i] * eps[i] for i in range(len(res))]
        else:
            f = res

        def u(x: float) -> float:
            return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x

        return RunSummary(
            cpu_util_mean=u(s.cpu_util_mean * f[0]),
            cpu_util_p95=u(s.cpu_util_p95 * f[1]),
            mem_util_mean=u(s.mem_util_mean * f[2]),
            mem_util_p95=u(s.mem_util_p95 * f[3]),
            gpu_util_mean=u(s.gpu_util_mean * f[4]),
            gpu_util_p95=u(s.gpu_util_p95 * f[5]),
            gpu_mem_util_mean=u(s.gpu_mem_util_mean * f[6]),
            gpu_mem_util_p95=u(s.gpu_mem_util_p95 * f[7]),
            throughput=max(s.throughput * f[8], 0.0),
            final_val_loss=max(s.final_val_loss * f[9], 0.0),
            duration_s=s.duration_s,
            gpu_hours=s.gpu_hours,
            failure=s.failure,
        )

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Run the next execution at the hyperparameters the action chooses."""
        w = self._w
        if w is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        hp = self._constraints.apply_action(self._hp, action)
        self._t += 1
        rec = w.recordings[(self._start + self._t) % len(w.recordings)]
        run = self._counterfactual(rec, hp)
        ctx = self._ctx
        reward = compute_reward(
            run,
            self._prev,
            ctx.best_val_loss,
            self._weights,
            reference_throughput=w.reference_throughput,
            reference_gpu_hours=w.reference_gpu_hours,
        )
        failed = run.failure != "none"
        rolled_back = False
        if not failed:
            self._last_good = hp
            self._hp = hp
        elif self._rollback:
            self._hp = self._last_good
            rolled_back = True
        else:
            self._hp = hp
        obs_ctx = context_from_runs(run, self._seen, framework=w.profile.framework)
        obs = build_observation(run, self._hp, self._norm, obs_ctx)
        self._seen.append(run)
        self._ctx = ctx.after(run)
        self._prev = run
        truncated = self._t >= self._episode_length
        if not self._info:
            return obs, reward.total, False, truncated, self._teacher_info()
        info = {
            "workload": w.name,
            "run_id": rec.run_id,
            "hyperparameters": hp,
            "summary": run,
            "reward": reward,
            "rolled_back": rolled_back,
            **self._teacher_info(),
        }
        return obs, reward.total, False, truncated, info
