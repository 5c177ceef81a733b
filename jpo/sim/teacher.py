"""The oracle teacher: the action that steps towards a profile's oracle configuration.

Used by the replay env's ``teacher`` option (the action in each step's info, for SAC's
behaviour-cloning term, :mod:`jpo.train.sac_bc`) and by the research trainers
(``research/train/imitate.py``, ``minimal_sac.py``). In a state of the replay env, the
teacher's action moves the current configuration as far towards the workload's oracle
configuration as one trust-region step allows
(:meth:`jpo.workload.constraints.Constraints.action_towards`). The oracle is
:func:`jpo.sim.oracle.best_config` with the settings every score is judged by
(:func:`jpo.evaluation.evaluate.evaluation_oracle_settings`); its search takes ~0.6 s per
profile, so
the configurations are cached in a JSON file keyed by the profiles, the constraints and
the files the oracle reads.

A variant aims the epochs at the critical-batch relation instead of the oracle's epochs
(``epochs_rule="critical_batch"``, :func:`progress_epochs`). Measured as a teacher with
``diagnose.py teacher`` (research/evaluate/RESULTS.md, round 10): no better than holding
the epochs, so training does not use it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jpo.errors import ConfigError
from jpo.learning.reward import load_reward_weights
from jpo.paths import config_dir
from jpo.sim.oracle import best_config
from jpo.sim.response import WorkloadProfile, load_conditions
from jpo.workload.constraints import Constraints
from jpo.workload.types import Hyperparameters

if TYPE_CHECKING:
    from jpo.sim.replay_env import PrometheusReplayEnv

TEACHER_ACTION = "teacher_action"
"""Key of the teacher's action in the replay env's info (and SAC's train-batch column)."""

logger = logging.getLogger("jpo.sim.teacher")

EPOCHS_RULES: tuple[str, ...] = ("oracle", "critical_batch")
"""Where the teacher's epochs target comes from: the oracle's configuration, or the
critical-batch relation applied to the step the teacher takes (:func:`progress_epochs`)."""


def oracle_configs(
    profiles: Sequence[WorkloadProfile], constraints: Constraints
) -> dict[str, Hyperparameters]:
    """Return each profile's oracle configuration (profiles with none are left out)."""
    from jpo.evaluation.evaluate import evaluation_oracle_settings, load_evaluation_settings

    settings = load_evaluation_settings()
    conditions = load_conditions(None, **settings.conditions)
    oracle_settings = evaluation_oracle_settings(settings)
    weights = load_reward_weights()
    out = {}
    start, last = time.monotonic(), time.monotonic()
    logger.info("oracle search of the teacher: %d profiles", len(profiles))
    for i, profile in enumerate(profiles, 1):
        if time.monotonic() - last >= 10.0 or i == len(profiles):
            last = time.monotonic()
            logger.info("oracle search %d/%d profiles (%.0f s)", i, len(profiles), last - start)
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


def convergence_epochs(profile: WorkloadProfile, hp: Hyperparameters) -> float:
    """Return the epochs ``hp`` needs to converge on ``profile`` (e_conv of jpo.sim.response)."""
    from jpo.sim.response import lr_ratio

    e_conv = profile.epochs_min * (1.0 + hp.batch_size / profile.b_noise)
    return e_conv / min(lr_ratio(profile, hp), 1.0)


def progress_epochs(
    profile: WorkloadProfile, current: Hyperparameters, proposed: Hyperparameters
) -> float:
    """Return the epochs that keep ``current``'s progress towards convergence at ``proposed``.

    Critical batch size (McCandlish et al., 2018, eq. 2.11): a run needs
    ``e_conv(B) = epochs_min (1 + B / B_noise)`` epochs, divided by ``lr / lr_best`` below
    the learning rate's sweet spot (jpo.sim.response). Scaling the epochs by
    ``e_conv(proposed) / e_conv(current)`` keeps ``epochs / e_conv`` and so the distance
    to the loss floor (before overfitting) where the current run left it.
    """
    ratio = convergence_epochs(profile, proposed) / convergence_epochs(profile, current)
    return current.epochs * ratio


def teacher_action(
    env: PrometheusReplayEnv,
    target: Hyperparameters,
    hold: Sequence[str],
    *,
    epochs_rule: str = "oracle",
) -> np.ndarray:
    """Return the teacher's action in the env's current state (towards ``target``)."""
    return action_towards_target(
        env.constraints, env.profile, env.hyperparameters, target, hold, epochs_rule=epochs_rule
    )


def action_towards_target(
    constraints: Constraints,
    profile: WorkloadProfile,
    current: Hyperparameters,
    target: Hyperparameters,
    hold: Sequence[str],
    *,
    epochs_rule: str = "oracle",
) -> np.ndarray:
    """Return the action one trust-region step towards ``target`` (epochs by ``epochs_rule``).

    With ``epochs_rule="critical_batch"`` the epochs entry aims at
    :func:`progress_epochs` of the step the other entries take, instead of the oracle's
    epochs (which ``hold`` must then not name).
    """
    if epochs_rule == "oracle":
        return constraints.action_towards(current, target, hold=hold)
    if epochs_rule != "critical_batch":
        raise ConfigError(f"epochs_rule {epochs_rule!r}: known: {', '.join(EPOCHS_RULES)}")
    if "epochs" in hold:
        raise ConfigError("epochs_rule 'critical_batch' moves the epochs: do not hold them")
    first = constraints.action_towards(current, target, hold=(*hold, "epochs"))
    proposed = constraints.apply_action(current, first)
    epochs = progress_epochs(profile, current, proposed)
    aim = dataclasses.replace(target, epochs=max(1, round(epochs)))
    return constraints.action_towards(current, aim, hold=hold)
