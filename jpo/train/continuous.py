"""Continuous learning: refresh history, resume, train a budget, evaluate, promote.

``jpo train --continuous`` (or ``python -m jpo.train --continuous``) runs cycles of:

1. **Pull** new history from Prometheus (``continuous.prometheus_url``) since the last
   pull (state in ``<storage>/continuous_state.json``) with
   :class:`jpo.telemetry.sources.PrometheusSource` and append it to the Parquet store
   (:func:`jpo.telemetry.history.append_history`, deduplicated).
2. **Degraded runs**: every suggestion the feedback log (``continuous.audit_log``) marks
   as degraded must be in the history, because that is where the env sees it: replayed,
   its worse validation loss earns the reward's degradation penalty
   (:func:`jpo.learning.reward.compute_reward`). A degraded run missing from the store is fetched
   by run id (:meth:`MetricSource.run_table`) and appended.
3. **Refresh the env's data**: when the store holds runs, the env replays it
   (``source: parquet``); otherwise it keeps its configured source (the catalog).
   With history, the teacher of the BC term (``env.config.teacher``) steps towards the
   oracle of the profiles CALIBRATED from that history (:mod:`jpo.sim.calibration`,
   :mod:`jpo.sim.teacher`): a teacher real history supports.
4. **Resume** from the latest checkpoint and **train** ``budget_iterations`` more. The
   first cycle (no checkpoint yet) starts its actor from the SERVED policy's weights
   (``warm_start``), so a cycle refines what the served policy knows instead of
   relearning it from scratch. Fine-tuning terms (:mod:`jpo.train.sac_bc`,
   benchmarks/train/RESULTS.md §9): ``critic_warmup_updates`` keeps the actor frozen
   while the first cycle's fresh critics learn (later cycles resume them);
   ``actor_updates`` bounds the actor's updates per cycle (after the warm-up; critics and
   alpha learn on), i.e. how far a cycle moves it; ``actor_from_served`` starts every
   cycle's actor (not only the first's) from the served policy, so a refused candidate's
   drift is not carried into the next cycle; ``actor_lr`` sets the actor's rate;
   ``anchor_weight`` pulls the actor towards the served policy's actions (distillation).
5. **Evaluate** the candidate against the policy actually being SERVED (the newest
   promoted version in ``policy_dir``, else the bundled ``jpo/data/policy``) on the same
   seeded episodes of two sets: ``cluster`` (the env this cycle trained on: the history's
   workloads) and ``validation`` (``env.config`` + ``env.eval_config``: the no-forgetting
   check; shipped: configs/evaluate.toml's validation set, 24 synthetic profiles drawn
   around the training workloads with their own seed). Not the catalog's held-out split:
   that is a test set, read only to report what a promoted policy does
   (benchmarks/train/continuous_live.py measures it beside the cycles). Actions are
   deterministic, through the numpy artifact (:class:`jpo.policy.artifact.LocalPolicy`,
   the code CI runs). This is an off-policy check: the episodes replay recorded runs
   through the response model; no real job is launched.
6. **Promote** (export as ``<policy_dir>/v<version>`` with version = served + 1, point
   ``LATEST`` at it; Serve reloads the newest) only if the candidate is not worse on
   EITHER set. Rule: with ``d_i`` = candidate - served return of paired episode ``i``,
   promote iff ``mean(d) >= -margin`` on both sets, ``margin = max(tolerance, noise_z *
   SE(d))`` (SE = standard error of the paired differences). Shipped: tolerance 0 and
   noise_z 0, so a candidate that measured worse on average on either set is never
   promoted; noise_z 1 would also accept one within a standard error of the served
   policy (too lenient at 16 episodes: benchmarks/train/RESULTS.md §8). Every cycle logs
   and the manifest records both sets' differences and SEs.

Every number above lives in ``configs/train.yaml`` under ``continuous:``.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, ValidationError

from jpo.errors import ConfigError, JpoError, PolicyError, TelemetryError
from jpo.settings import Settings

if TYPE_CHECKING:
    from jpo.policy.artifact import LocalPolicy
    from jpo.telemetry.sources import MetricSource
    from jpo.train.trainer import Storage, TrainConfig

__all__ = [
    "Comparison",
    "ContinuousConfig",
    "CycleReport",
    "compare",
    "episode_returns",
    "evaluate_policy",
    "run_continuous",
    "run_cycle",
]

logger = logging.getLogger("jpo.train.continuous")

STATE_FILE = "continuous_state.json"
NO_FORGETTING_SET = "validation"
"""Name of the promotion check's second set (``env.eval_config``) in reports and manifests."""


class ContinuousConfig(Settings):
    """The ``continuous:`` section of the training config (jpo.settings: frozen, no extras)."""

    prometheus_url: str | None = None
    """Prometheus to pull new history from; None: use the store as it is."""
    history_path: str = ".jpo/history"
    """Parquet history store the env replays (jpo.telemetry.history layout)."""
    audit_log: str | None = None
    """Suggestion/feedback log (JSONL); degraded runs found there must be in the history."""
    lookback_s: float = Field(default=7 * 86400.0, gt=0)
    """First pull: this far back (s)."""
    step_s: float = Field(default=15.0, gt=0)
    """Range-query resolution (s); match the scrape interval."""
    budget_iterations: int = Field(default=20, ge=1)
    """Training iterations per cycle."""
    eval_episodes: int = Field(default=16, ge=1)
    """Episodes per policy and set in the promotion check."""
    eval_seed: int = 12345
    """Seed of the first evaluation episode (episode i uses eval_seed + i)."""
    tolerance: float = Field(default=0.0, ge=0.0)
    """Smallest margin (return per episode) a candidate may fall short by and be promoted."""
    noise_z: float = Field(default=0.0, ge=0.0)
    """Margin = max(tolerance, noise_z x standard error of the paired differences)."""
    warm_start: bool = True
    """First cycle (no checkpoint): start the actor from the served policy's weights."""
    critic_warmup_updates: int = Field(default=0, ge=0)
    """First cycle (fresh critics): updates with the actor frozen while the critics learn."""
    actor_updates: int | None = Field(default=None, ge=1)
    """Every cycle: gradient updates (after the warm-up) in which the actor learns; later ones
    train critics and alpha only. Bounds how far a cycle moves the actor; None: no bound."""
    actor_from_served: bool = False
    """Every cycle (not only the first) starts its actor from the SERVED policy's weights,
    the critics from the last checkpoint: a refused candidate's drift is dropped, so with
    actor_updates a candidate stays that many updates from what is served."""
    actor_lr: float | None = Field(default=None, gt=0)
    """Actor learning rate of the cycles; None: sac.actor_lr."""
    anchor_weight: float = Field(default=0.0, ge=0.0)
    """Weight of the distillation term towards the served policy's actions; 0: off."""
    served_policy: str | None = None
    """Served when policy_dir holds no version; None: the bundled jpo/data/policy."""
    policy_dir: str = "runs/jpo-sac/policies"
    """Folder of promoted versions (v000001, ...) and the LATEST pointer."""
    interval_s: float = Field(default=3600.0, ge=0.0)
    """Pause between cycles (s)."""
    max_cycles: int | None = Field(default=None, ge=1)
    """Stop after this many cycles; None: run until interrupted."""
    env_overrides_with_history: dict[str, Any] = Field(
        default_factory=lambda: {"source": "parquet"}
    )
    """Env config keys set when the store holds runs (plus history_path)."""


@dataclass(frozen=True)
class Comparison:
    """Candidate vs served policy on the same seeded episodes of one set."""

    episodes: int
    candidate: float
    served: float | None
    mean_difference: float | None
    standard_error: float | None
    margin: float | None
    not_worse: bool


@dataclass(frozen=True)
class CycleReport:
    """What one cycle did."""

    cycle: int
    pulled_rows: int
    degraded_runs: int
    degraded_added: int
    env_source: str
    iterations: int
    checkpoint: str | None
    candidate_return: float
    current_return: float | None
    promoted: bool
    policy_version: int | None
    policy_path: str | None
    served_version: int | None = None
    served_path: str | None = None
    comparisons: dict[str, Comparison] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (NaN as None)."""
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in asdict(self).items()
        }


def load_continuous_config(cfg: TrainConfig) -> ContinuousConfig:
    """Validate the ``continuous:`` section of a training config."""
    try:
        return ContinuousConfig.model_validate(cfg.continuous)
    except ValidationError as err:
        problems = "; ".join(
            f"continuous.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"training config: {problems}") from err


# --------------------------------------------------------------------------- evaluation


def evaluate_policy(
    act: Callable[[np.ndarray], np.ndarray],
    make_env: Callable[[], Any],
    *,
    episodes: int,
    seed: int,
) -> float:
    """Mean undiscounted return of deterministic ``act`` over seeded episodes of ``make_env``."""
    return float(np.mean(episode_returns(act, make_env, episodes=episodes, seed=seed)))


def episode_returns(
    act: Callable[[np.ndarray], np.ndarray],
    make_env: Callable[[], Any],
    *,
    episodes: int,
    seed: int,
) -> list[float]:
    """Undiscounted return of deterministic ``act`` in each seeded episode of ``make_env``."""
    env = make_env()
    try:
        returns = []
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            total, done = 0.0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(
                    np.asarray(act(obs), dtype=np.float32)
                )
                total += float(reward)
                done = bool(terminated or truncated)
            returns.append(total)
        return returns
    finally:
        env.close()


def compare(
    candidate: Sequence[float], served: Sequence[float] | None, conf: ContinuousConfig
) -> Comparison:
    """Apply the promotion rule (module docstring) to paired episode returns."""
    cand = float(np.mean(candidate))
    if served is None:
        return Comparison(len(candidate), cand, None, None, None, None, True)
    d = np.asarray(candidate, dtype=np.float64) - np.asarray(served, dtype=np.float64)
    se = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else 0.0
    margin = max(conf.tolerance, conf.noise_z * se)
    mean_d = float(d.mean())
    return Comparison(
        len(candidate), cand, float(np.mean(served)), mean_d, se, margin, mean_d >= -margin
    )


# --------------------------------------------------------------------------- state


def _read_state(storage: Storage) -> dict[str, Any]:
    path = f"{storage.base}/{STATE_FILE}"
    try:
        with storage.fs.open_input_stream(path) as src:
            return dict(json.loads(src.read().decode()))
    except (FileNotFoundError, OSError):
        return {}


def _write_state(storage: Storage, state: Mapping[str, Any]) -> None:
    with storage.fs.open_output_stream(f"{storage.base}/{STATE_FILE}") as out:
        out.write(json.dumps(dict(state), sort_keys=True).encode())


# --------------------------------------------------------------------------- steps


def _pull(source: MetricSource | None, conf: ContinuousConfig, state: dict[str, Any]) -> int:
    if source is None:
        return 0
    from jpo.telemetry.history import append_history

    now = time.time()
    since = float(state.get("last_pull_s", now - conf.lookback_s))
    table = source.history(since, now, conf.step_s)
    added = append_history(conf.history_path, table)
    state["last_pull_s"] = now
    logger.info("pulled %d new history rows (%d fetched) since %.0f", added, table.num_rows, since)
    return added


def _degraded_runs(conf: ContinuousConfig, source: MetricSource | None) -> tuple[int, int]:
    """Return (degraded runs in the feedback log, how many had to be added to history)."""
    if not conf.audit_log or not Path(conf.audit_log).is_file():
        return 0, 0
    from jpo.stage.audit import read_log
    from jpo.stage.record import suggestion_records
    from jpo.telemetry.history import append_history, read_history

    degraded = []
    for record in suggestion_records(read_log(conf.audit_log).records):
        outcome = record.outcome
        if outcome is not None and outcome.degraded and outcome.run_id:
            degraded.append((record.key, outcome.run_id))
    if not degraded:
        return 0, 0
    history = read_history(conf.history_path) if Path(conf.history_path).is_dir() else None
    present: set[tuple[str, str]] = set()
    if history is not None and history.num_rows:
        keys = zip(
            history.column("dataset").to_pylist(),
            history.column("model").to_pylist(),
            history.column("framework").to_pylist(),
            history.column("run_id").to_pylist(),
            strict=True,
        )
        present = {(f"{d}.{m}.{f}", r) for d, m, f, r in keys}
    added = 0
    for key, run_id in degraded:
        if (key.slug(), run_id) in present:
            continue
        if source is None:
            logger.warning(
                "degraded run %s of %s is not in %s and no Prometheus is configured to fetch it",
                run_id,
                key.slug(),
                conf.history_path,
            )
            continue
        try:
            table = source.run_table(key, run_id)
        except TelemetryError as err:
            logger.warning("cannot fetch degraded run %s of %s: %s", run_id, key.slug(), err)
            continue
        if append_history(conf.history_path, table):
            added += 1
    logger.info("%d degraded runs in the feedback log, %d added to history", len(degraded), added)
    return len(degraded), added


def _store_has_runs(path: str) -> bool:
    root = Path(path)
    return root.is_dir() and any(root.rglob("part-*.parquet"))


def _served_policy(conf: ContinuousConfig) -> LocalPolicy | None:
    """Return the policy being served: the newest promoted version, else the fallback."""
    from jpo.policy.artifact import LocalPolicy
    from jpo.policy.source import default_policy_path

    root = Path(conf.policy_dir)
    if root.is_dir():
        try:
            return LocalPolicy.load(root)
        except PolicyError as err:
            if "holds no policy artifact" not in str(err):
                raise
    fallback = Path(conf.served_policy) if conf.served_policy else default_policy_path()
    try:
        return LocalPolicy.load(fallback)
    except PolicyError as err:
        logger.warning("served policy %s cannot be loaded (%s): comparing with none", fallback, err)
        return None


def _cycle_config(cfg: TrainConfig, conf: ContinuousConfig) -> TrainConfig:
    """The training config of this cycle: the env replays the store once it holds runs."""
    env_config = dict(cfg.env.config)
    if _store_has_runs(conf.history_path):
        env_config.update(conf.env_overrides_with_history)
        env_config["history_path"] = str(Path(conf.history_path).resolve())
    return cfg.model_copy(update={"env": cfg.env.model_copy(update={"config": env_config})})


def _fine_tuning(
    cycle_cfg: TrainConfig, conf: ContinuousConfig, served: LocalPolicy | None, fresh: bool
) -> TrainConfig:
    """Set the cycle's fine-tuning terms: warm-up (fresh critics), actor bound and rate, anchor."""
    update: dict[str, Any] = {
        "critic_warmup_updates": conf.critic_warmup_updates if fresh else 0,
        "actor_updates": conf.actor_updates,  # per cycle: each run's learner counts from 0
        "anchor_weight": conf.anchor_weight if served is not None else 0.0,
        "anchor_policy": str(served.path) if served is not None else None,
    }
    if conf.actor_lr is not None:
        update["actor_lr"] = conf.actor_lr
    return cycle_cfg.model_copy(update={"sac": cycle_cfg.sac.model_copy(update=update)})


def _eval_sets(cfg: TrainConfig, cycle_cfg: TrainConfig) -> dict[str, Callable[[], Any]]:
    """The episode sets of the promotion check (env factories, teacher off: not needed)."""
    from jpo.train.trainer import make_env

    no_teacher = {"teacher": False}
    sets: dict[str, Callable[[], Any]] = {
        "cluster": lambda: make_env(cycle_cfg.env.model_dump(), no_teacher),
    }
    if cfg.env.eval_config:
        retain = {**cfg.env.eval_config, **no_teacher}
        sets[NO_FORGETTING_SET] = lambda: make_env(cfg.env.model_dump(), retain)
    return sets


def _compare_all(
    candidate: LocalPolicy,
    served: LocalPolicy | None,
    sets: Mapping[str, Callable[[], Any]],
    conf: ContinuousConfig,
) -> dict[str, Comparison]:
    out = {}
    for name, make_env in sets.items():
        kwargs = {"episodes": conf.eval_episodes, "seed": conf.eval_seed}
        cand = episode_returns(candidate.act, make_env, **kwargs)
        cur = episode_returns(served.act, make_env, **kwargs) if served is not None else None
        out[name] = compare(cand, cur, conf)
        c = out[name]
        logger.info(
            "evaluation %s (%d episodes): candidate %.4g, served %s, difference %s",
            name,
            c.episodes,
            c.candidate,
            "none" if c.served is None else f"{c.served:.4g}",
            "n/a"
            if c.mean_difference is None
            else f"{c.mean_difference:+.4g} (margin {c.margin:.3g}, SE {c.standard_error:.3g})",
        )
    return out


def _promote(
    candidate_dir: Path,
    candidate: LocalPolicy,
    conf: ContinuousConfig,
    version: int,
    comparisons: Mapping[str, Comparison],
    served: LocalPolicy | None,
    eval_config: Mapping[str, Any],
) -> str:
    """Write the candidate as ``<policy_dir>/v<version>`` and point LATEST at it."""
    from jpo.policy.artifact import set_latest, write_artifact

    root = Path(conf.policy_dir)
    name = f"v{version:06d}"
    with np.load(candidate_dir / candidate.manifest.weights_file) as npz:
        weights = {k: np.asarray(npz[k]) for k in npz.files}
    manifest = candidate.manifest.model_dump(mode="json")
    for key in ("format_version", "weights_file", "weights_sha256"):
        manifest.pop(key)
    first = next(iter(comparisons.values()))
    manifest["training_data"] = {
        **manifest["training_data"],
        "eval_return": first.candidate,
        "eval_return_previous": first.served,
        "eval_episodes": conf.eval_episodes,
        "eval_config": dict(eval_config),
        "previous_policy_version": served.version if served is not None else None,
        "comparisons": {k: asdict(v) for k, v in comparisons.items()},
    }
    write_artifact(root / name, weights, manifest)
    set_latest(root, name)
    return str(root / name)


def run_cycle(
    cfg: TrainConfig,
    conf: ContinuousConfig,
    storage: Storage,
    *,
    cycle: int,
    source: MetricSource | None = None,
) -> CycleReport:
    """Run one pull → train → evaluate → promote cycle (see the module docstring)."""
    from jpo.policy.artifact import LocalPolicy
    from jpo.train.trainer import export_latest, train

    state = _read_state(storage)
    logger.info("cycle %d: pulling history", cycle)
    pulled = _pull(source, conf, state)
    n_degraded, n_added = _degraded_runs(conf, source)
    cycle_cfg = _cycle_config(cfg, conf)
    env_source = str(cycle_cfg.env.config.get("source", "catalog"))
    served = _served_policy(conf)
    latest = storage.latest_checkpoint()
    done = int(storage.read_marker(latest).get("iteration", 0)) if latest else 0
    cycle_cfg = _fine_tuning(cycle_cfg, conf, served, fresh=latest is None)
    logger.info(
        "cycle %d: training %d iterations on %s (served policy %s)",
        cycle,
        conf.budget_iterations,
        env_source,
        "none" if served is None else f"v{served.version} {served.path}",
    )
    result = train(
        cycle_cfg,
        resume=True,
        stop_iterations=done + conf.budget_iterations,
        storage_path=storage.uri,
        init_actor=served.path if (served is not None and conf.warm_start) else None,
        init_actor_on_resume=conf.actor_from_served,
    )
    version = (served.version if served is not None else 0) + 1
    with tempfile.TemporaryDirectory(prefix="jpo-candidate-") as tmp:
        candidate_dir = export_latest(
            cycle_cfg,
            storage,
            Path(tmp) / "candidate",
            checkpoint=result.checkpoint,
            policy_version=version,
            extra_training_data={"cycle": cycle, "pulled_rows": pulled},
        )
        candidate = LocalPolicy.load(candidate_dir)
        if served is not None and (
            served.observation_names != candidate.observation_names
            or served.action_names != candidate.action_names
        ):
            logger.warning("served policy %s has other inputs/outputs: replacing it", served.path)
            served = None
        comparisons = _compare_all(candidate, served, _eval_sets(cfg, cycle_cfg), conf)
        promote = all(c.not_worse for c in comparisons.values())
        policy_path = None
        if promote:
            policy_path = _promote(
                candidate_dir, candidate, conf, version, comparisons, served, cfg.env.eval_config
            )
            logger.info("cycle %d: promoted policy v%d to %s", cycle, version, policy_path)
        else:
            worse = [k for k, c in comparisons.items() if not c.not_worse]
            logger.info(
                "cycle %d: kept v%d: the candidate is worse on %s by more than the margin",
                cycle,
                version - 1,
                ", ".join(worse),
            )
    state["cycles"] = int(state.get("cycles", 0)) + 1
    _write_state(storage, state)
    first = next(iter(comparisons.values()))
    return CycleReport(
        cycle=cycle,
        pulled_rows=pulled,
        degraded_runs=n_degraded,
        degraded_added=n_added,
        env_source=env_source,
        iterations=result.iterations,
        checkpoint=result.checkpoint,
        candidate_return=first.candidate,
        current_return=first.served,
        promoted=promote,
        policy_version=version if promote else (served.version if served else None),
        policy_path=policy_path,
        served_version=served.version if served is not None else None,
        served_path=str(served.path) if served is not None else None,
        comparisons=dict(comparisons),
    )


def run_continuous(
    cfg: TrainConfig,
    *,
    storage_path: str | None = None,
    max_cycles: int | None = None,
    source: MetricSource | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[CycleReport]:
    """Run cycles until ``max_cycles`` (argument, else ``continuous.max_cycles``) or Ctrl-C."""
    from jpo.train.trainer import Storage

    conf = load_continuous_config(cfg)
    storage = Storage(storage_path or cfg.storage.path)
    if source is None and conf.prometheus_url:
        from jpo.telemetry.sources import PrometheusSource

        source = PrometheusSource.from_url(conf.prometheus_url)
    limit = max_cycles if max_cycles is not None else conf.max_cycles
    reports: list[CycleReport] = []
    cycle = 0
    try:
        while limit is None or cycle < limit:
            cycle += 1
            try:
                reports.append(run_cycle(cfg, conf, storage, cycle=cycle, source=source))
            except TelemetryError as err:
                # Prometheus down: skip this cycle's training rather than train on stale
                # data silently; the next cycle tries again.
                logger.error("cycle %d skipped: %s", cycle, err)
            if limit is None or cycle < limit:
                sleep(conf.interval_s)
    except KeyboardInterrupt:
        logger.info("continuous learning interrupted after %d cycles", cycle)
    except JpoError:
        raise
    return reports
