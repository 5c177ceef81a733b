"""Continuous learning: refresh history, resume, train a budget, evaluate, promote.

``jpo train --continuous`` (or ``python -m jpo.train --continuous``) runs cycles of:

1. **Pull** new history from Prometheus (``continuous.prometheus_url``) since the last
   pull (state in ``<storage>/continuous_state.json``) with
   :class:`jpo.telemetry.PrometheusSource` and append it to the Parquet store
   (:func:`jpo.history.append_history`, deduplicated).
2. **Degraded runs**: every suggestion the feedback log (``continuous.audit_log``) marks
   as degraded must be in the history, because that is where the env sees it: replayed,
   its worse validation loss earns the reward's degradation penalty
   (:func:`jpo.reward.compute_reward`). A degraded run missing from the store is fetched
   by run id (:meth:`MetricSource.run_table`) and appended.
3. **Refresh the env's data**: when the store holds runs, the env replays it
   (``source: parquet``); otherwise it keeps its configured source (the catalog).
4. **Resume** from the latest checkpoint and **train** ``budget_iterations`` more.
5. **Evaluate** the candidate actor against the current promoted policy on held-out
   replay episodes (``env.eval_config``, e.g. ``split: holdout``): the same seeded
   episodes for both, deterministic actions through the numpy artifact
   (:class:`jpo.policy.LocalPolicy`, the code CI runs). This is an off-policy check: the
   episodes replay recorded runs through the response model; no real job is launched.
6. **Promote** (export as ``<policy_dir>/v<version>``, bump the version, point
   ``LATEST`` at it; Serve reloads the newest) only if the candidate's mean return is not
   worse than the current one's by more than ``tolerance``.

Every number above lives in ``configs/train.yaml`` under ``continuous:``.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jpo.errors import ConfigError, JpoError, PolicyError, TelemetryError

if TYPE_CHECKING:
    from jpo.policy import LocalPolicy
    from jpo.telemetry import MetricSource
    from jpo.train import Storage, TrainConfig

__all__ = [
    "ContinuousConfig",
    "CycleReport",
    "evaluate_policy",
    "run_continuous",
    "run_cycle",
]

logger = logging.getLogger("jpo.continuous")

STATE_FILE = "continuous_state.json"


class ContinuousConfig(BaseModel):
    """The ``continuous:`` section of the training config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prometheus_url: str | None = None
    """Prometheus to pull new history from; None: use the store as it is."""
    history_path: str = ".jpo/history"
    """Parquet history store the env replays (jpo.history layout)."""
    audit_log: str | None = None
    """Suggestion/feedback log (JSONL); degraded runs found there must be in the history."""
    lookback_s: float = Field(default=7 * 86400.0, gt=0)
    """First pull: this far back (s)."""
    step_s: float = Field(default=15.0, gt=0)
    """Range-query resolution (s); match the scrape interval."""
    budget_iterations: int = Field(default=20, ge=1)
    """Training iterations per cycle."""
    eval_episodes: int = Field(default=16, ge=1)
    """Held-out episodes per policy in the promotion check."""
    eval_seed: int = 12345
    """Seed of the first evaluation episode (episode i uses eval_seed + i)."""
    tolerance: float = Field(default=0.0, ge=0.0)
    """Promote when candidate mean return >= current mean return - tolerance."""
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
        return float(np.mean(returns))
    finally:
        env.close()


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
    from jpo.history import append_history

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
    from jpo.audit import read_log
    from jpo.feedback import outcome_degraded, record_key, record_outcome
    from jpo.history import append_history, read_history

    degraded = []
    for record in read_log(conf.audit_log).records:
        outcome = record_outcome(record)
        if outcome_degraded(outcome) and outcome and outcome.get("run_id"):
            degraded.append((record_key(record), str(outcome["run_id"])))
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


def _current_policy(conf: ContinuousConfig) -> LocalPolicy | None:
    from jpo.policy import LocalPolicy

    root = Path(conf.policy_dir)
    if not root.is_dir():
        return None
    try:
        return LocalPolicy.load(root)
    except PolicyError as err:
        if "holds no policy artifact" in str(err):
            return None
        raise


def run_cycle(
    cfg: TrainConfig,
    conf: ContinuousConfig,
    storage: Storage,
    *,
    cycle: int,
    source: MetricSource | None = None,
) -> CycleReport:
    """Run one pull → train → evaluate → promote cycle (see the module docstring)."""
    from jpo.policy import LocalPolicy, set_latest, write_artifact
    from jpo.train import _make_env, export_latest, train

    state = _read_state(storage)
    pulled = _pull(source, conf, state)
    n_degraded, n_added = _degraded_runs(conf, source)

    env_config = dict(cfg.env.config)
    if _store_has_runs(conf.history_path):
        env_config.update(conf.env_overrides_with_history)
        env_config["history_path"] = str(Path(conf.history_path).resolve())
    cycle_cfg = cfg.model_copy(update={"env": cfg.env.model_copy(update={"config": env_config})})
    latest = storage.latest_checkpoint()
    done = int(storage.read_marker(latest).get("iteration", 0)) if latest else 0
    result = train(cycle_cfg, resume=True, stop_iterations=done + conf.budget_iterations)

    current = _current_policy(conf)
    version = (current.version if current is not None else 0) + 1
    env_section = cycle_cfg.env.model_dump()
    eval_overrides = dict(cycle_cfg.env.eval_config)

    def make_eval_env() -> Any:
        return _make_env(env_section, eval_overrides)

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
        cand_return = evaluate_policy(
            candidate.act, make_eval_env, episodes=conf.eval_episodes, seed=conf.eval_seed
        )
        cur_return = None
        if current is not None:
            if current.observation_names != candidate.observation_names or (
                current.action_names != candidate.action_names
            ):
                logger.warning(
                    "current policy %s has other inputs/outputs: replacing it", current.path
                )
            else:
                cur_return = evaluate_policy(
                    current.act, make_eval_env, episodes=conf.eval_episodes, seed=conf.eval_seed
                )
        promote = cur_return is None or cand_return >= cur_return - conf.tolerance
        policy_path = None
        if promote:
            root = Path(conf.policy_dir)
            name = f"v{version:06d}"
            with np.load(candidate_dir / candidate.manifest.weights_file) as npz:
                weights = {k: np.asarray(npz[k]) for k in npz.files}
            manifest = candidate.manifest.model_dump(mode="json")
            for key in ("format_version", "weights_file", "weights_sha256"):
                manifest.pop(key)
            manifest["training_data"] = {
                **manifest["training_data"],
                "eval_return": cand_return,
                "eval_return_previous": cur_return,
                "eval_episodes": conf.eval_episodes,
                "eval_config": eval_overrides,
            }
            write_artifact(root / name, weights, manifest)
            set_latest(root, name)
            policy_path = str(root / name)
            logger.info(
                "promoted policy v%d (held-out return %.4g vs %s) to %s",
                version,
                cand_return,
                "none" if cur_return is None else f"{cur_return:.4g}",
                policy_path,
            )
        else:
            logger.info(
                "kept policy v%d: candidate return %.4g < current %.4g - tolerance %.3g",
                version - 1,
                cand_return,
                cur_return,
                conf.tolerance,
            )
    state["cycles"] = int(state.get("cycles", 0)) + 1
    _write_state(storage, state)
    return CycleReport(
        cycle=cycle,
        pulled_rows=pulled,
        degraded_runs=n_degraded,
        degraded_added=n_added,
        env_source=str(env_config.get("source", "catalog")),
        iterations=result.iterations,
        checkpoint=result.checkpoint,
        candidate_return=cand_return,
        current_return=cur_return,
        promoted=promote,
        policy_version=version if promote else (current.version if current else None),
        policy_path=policy_path,
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
    from jpo.train import Storage

    conf = load_continuous_config(cfg)
    storage = Storage(storage_path or cfg.storage.path)
    if source is None and conf.prometheus_url:
        from jpo.telemetry import PrometheusSource

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
