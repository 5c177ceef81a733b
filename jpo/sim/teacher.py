"""The oracle teacher: the action that steps towards a profile's oracle configuration.

Used by the replay env's ``teacher`` option (the action in each step's info, for SAC's
behaviour-cloning term, :mod:`jpo.train.sac_bc`) and by the research trainers
(``research/train/imitate.py``, ``minimal_sac.py``). In a state of the replay env, the
teacher's action moves the current configuration as far towards the workload's oracle
configuration as one trust-region step allows
(:meth:`jpo.workload.constraints.Constraints.action_towards`). The oracle is
:func:`jpo.sim.oracle.best_config` with the settings every score is judged by
(:func:`jpo.sim.yardstick.load_yardstick`, as ``jpo evaluate`` judges); its search takes ~0.6 s per
profile, so
the configurations are cached in a JSON file keyed by the profiles, the constraints and
the files the oracle reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from jpo.errors import ConfigError
from jpo.learning.reward import load_reward_weights
from jpo.paths import config_dir
from jpo.sim.oracle import best_config
from jpo.sim.progress import ProgressLog
from jpo.sim.response import WorkloadProfile
from jpo.workload.constraints import Constraints
from jpo.workload.types import HYPERPARAMETER_NAMES, Hyperparameters

TEACHER_ACTION = "teacher_action"
"""Key of the teacher's action in the replay env's info (and SAC's train-batch column)."""

logger = logging.getLogger("jpo.sim.teacher")


class SteppingEnv(Protocol):
    """What the teacher reads of an env (the replay env): its limits and current values."""

    @property
    def constraints(self) -> Constraints:
        """The workload's constraints."""

    @property
    def hyperparameters(self) -> Hyperparameters:
        """The values the workload runs with now."""


def oracle_configs(
    profiles: Sequence[WorkloadProfile], constraints: Constraints
) -> dict[str, Hyperparameters]:
    """Return each profile's oracle configuration (profiles with none are left out)."""
    from jpo.sim.yardstick import load_yardstick

    yardstick = load_yardstick()
    conditions, oracle_settings = yardstick.conditions, yardstick.oracle_settings
    weights = load_reward_weights()
    out = {}
    progress = ProgressLog(logger, "oracle search", len(profiles), unit=" profiles")
    logger.info("oracle search of the teacher: %d profiles", len(profiles))
    for i, profile in enumerate(profiles, 1):
        progress.step(i)
        try:
            hp = best_config(profile, constraints, conditions, weights, settings=oracle_settings).hp
        except ConfigError:
            continue  # nothing inside the constraints trains: no teacher for this profile
        out[profile.name] = hp
    return out


def _cache_key(profiles: Sequence[WorkloadProfile], constraints: Constraints) -> str:
    """Key of the oracle cache: the profiles, the limits and the files the oracle reads."""
    configs = config_dir()
    files = ("oracle.toml", "evaluate.toml", "reward.toml", "cluster.toml")
    h = hashlib.sha256(constraints.sha256().encode())
    for profile in profiles:
        h.update(json.dumps(profile.as_toml_dict(), sort_keys=True, default=str).encode())
    for name in files:
        h.update((configs / name).read_bytes())
    return h.hexdigest()


def cached_oracle_configs(
    profiles: Sequence[WorkloadProfile], constraints: Constraints, cache: Path | None
) -> dict[str, Hyperparameters]:
    """Return the profiles' oracle configurations, from ``cache`` when it was built for them."""
    key = _cache_key(profiles, constraints)
    if cache is not None and cache.exists():
        data = json.loads(cache.read_text())
        if data.get("key") == key:
            logger.info("oracle search: %d profiles from the cache %s", len(profiles), cache)
            return {n: Hyperparameters(**hp) for n, hp in data["oracles"].items()}
    oracles = oracle_configs(profiles, constraints)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        payload = {"key": key, "oracles": {n: hp.as_dict() for n, hp in oracles.items()}}
        tmp = cache.with_name(cache.name + ".tmp")
        tmp.write_text(json.dumps(payload))
        tmp.replace(cache)  # atomic: env runners may build the same cache side by side
    return oracles


def unvaried_hyperparameters(runs: Sequence[Hyperparameters]) -> tuple[str, ...]:
    """Hyperparameters that every one of ``runs`` used at one value (all of them if none)."""
    return tuple(n for n in HYPERPARAMETER_NAMES if len({getattr(hp, n) for hp in runs}) <= 1)


def teacher_action(env: SteppingEnv, target: Hyperparameters, hold: Sequence[str]) -> np.ndarray:
    """Return the teacher's action in the env's current state: one step towards ``target``."""
    return env.constraints.action_towards(env.hyperparameters, target, hold=hold)
