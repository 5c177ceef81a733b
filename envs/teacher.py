"""The oracle teacher: the action that steps towards a profile's oracle configuration.

Used by the replay env's ``teacher`` option (the action in each step's info, for SAC's
behaviour-cloning term, :mod:`jpo.sac_bc`) and by the research trainers
(``benchmarks/train/imitate.py``, ``minimal_sac.py``). In a state of the replay env, the
teacher's action moves the current configuration as far towards the workload's oracle
configuration as one trust-region step allows
(:meth:`jpo.constraints.Constraints.action_towards`). The oracle is
:func:`envs.oracle.best_config` with the settings every score is judged by
(:func:`jpo.evaluate.evaluation_oracle_settings`); its search takes ~0.6 s per profile, so
the configurations are cached in a JSON file keyed by the profiles, the constraints and
the files the oracle reads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from envs.oracle import best_config
from envs.response import WorkloadProfile, load_conditions
from jpo.constraints import Constraints
from jpo.errors import ConfigError
from jpo.reward import load_reward_weights
from jpo.workload import Hyperparameters

if TYPE_CHECKING:
    from envs.replay_env import PrometheusReplayEnv

TEACHER_ACTION = "teacher_action"
"""Key of the teacher's action in the replay env's info (and SAC's train-batch column)."""


def oracle_configs(
    profiles: Sequence[WorkloadProfile], constraints: Constraints
) -> dict[str, Hyperparameters]:
    """Return each profile's oracle configuration (profiles with none are left out)."""
    from jpo.evaluate import evaluation_oracle_settings, load_evaluation_settings

    settings = load_evaluation_settings()
    conditions = load_conditions(None, **settings.conditions)
    oracle_settings = evaluation_oracle_settings(settings)
    weights = load_reward_weights()
    out = {}
    for profile in profiles:
        try:
            hp = best_config(profile, constraints, conditions, weights, settings=oracle_settings).hp
        except ConfigError:
            continue  # nothing inside the constraints trains: no teacher for this profile
        out[profile.name] = hp
    return out


def _cache_key(profiles: Sequence[WorkloadProfile], constraints: Constraints) -> str:
    """Key of the oracle cache: the profiles, the limits and the files the oracle reads."""
    configs = Path(__file__).resolve().parents[1] / "configs"
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
            return {n: Hyperparameters(**hp) for n, hp in data["oracles"].items()}
    oracles = oracle_configs(profiles, constraints)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        payload = {"key": key, "oracles": {n: hp.as_dict() for n, hp in oracles.items()}}
        tmp = cache.with_name(cache.name + ".tmp")
        tmp.write_text(json.dumps(payload))
        tmp.replace(cache)  # atomic: env runners may build the same cache side by side
    return oracles


def teacher_action(
    env: PrometheusReplayEnv, target: Hyperparameters, hold: Sequence[str]
) -> np.ndarray:
    """Return the teacher's action in the env's current state (towards ``target``)."""
    return env.constraints.action_towards(env.hyperparameters, target, hold=hold)
