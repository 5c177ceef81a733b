"""The oracle teacher of the imitation trainers (imitate.py, minimal_sac.py's BC term).

In a state of the replay env, the teacher's action moves the current configuration as far
towards the workload's oracle configuration as one trust-region step allows
(:meth:`jpo.constraints.Constraints.action_towards`). The oracle is
:func:`envs.oracle.best_config` with the settings every score is judged by
(:func:`jpo.evaluate.evaluation_oracle_settings`); its search takes ~0.6 s per profile, so
the configurations are cached in a JSON file keyed by the env config and the files the
oracle reads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from envs.oracle import best_config
from envs.response import WorkloadProfile, load_conditions
from jpo.constraints import Constraints
from jpo.errors import ConfigError
from jpo.evaluate import evaluation_oracle_settings, load_evaluation_settings
from jpo.reward import load_reward_weights
from jpo.workload import Hyperparameters


def oracle_configs(
    profiles: Sequence[WorkloadProfile], constraints: Constraints
) -> dict[str, Hyperparameters]:
    """Return each profile's oracle configuration (profiles with none are left out)."""
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


def _cache_key(env_config: Mapping[str, Any]) -> str:
    """Key of the oracle cache: the env config and the files the oracle depends on."""
    repo = Path(__file__).resolve().parents[2] / "configs"
    files = ("constraints.toml", "oracle.toml", "evaluate.toml", "reward.toml", "cluster.toml")
    h = hashlib.sha256(json.dumps(dict(env_config), sort_keys=True, default=str).encode())
    for name in files:
        h.update((repo / name).read_bytes())
    return h.hexdigest()


def cached_oracle_configs(
    env: Any, env_config: Mapping[str, Any], cache: Path | None
) -> dict[str, Hyperparameters]:
    """Return the env's oracle configurations, from ``cache`` when it was built for them."""
    key = _cache_key(env_config)
    if cache is not None and cache.exists():
        data = json.loads(cache.read_text())
        if data.get("key") == key:
            return {n: Hyperparameters(**hp) for n, hp in data["oracles"].items()}
    oracles = oracle_configs(env.profiles, env.constraints)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        payload = {"key": key, "oracles": {n: hp.as_dict() for n, hp in oracles.items()}}
        cache.write_text(json.dumps(payload))
    return oracles


def teacher_action(env: Any, target: Hyperparameters, hold: Sequence[str]) -> np.ndarray:
    """Return the teacher's action in the env's current state (towards ``target``)."""
    return env.constraints.action_towards(env.hyperparameters, target, hold=hold)
