"""A tiny policy artifact whose deterministic action is fixed, whatever the observation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jpo.learning.features import FEATURE_SPEC_VERSION, OBSERVATION_NAMES
from jpo.policy.artifact import write_artifact
from jpo.workload.types import HYPERPARAMETER_NAMES


def fixed_action_policy(
    folder: Path, action: tuple[float, ...], version: int = 1, coupling: float | None = None
) -> Path:
    """Write to ``folder`` an artifact that always answers ``action`` (``coupling``: lr rule)."""
    n_obs, n_act = len(OBSERVATION_NAMES), len(HYPERPARAMETER_NAMES)
    bias = np.concatenate([np.arctanh(np.asarray(action)), np.zeros(n_act)]).astype("f4")
    return write_artifact(
        folder,
        {"w": np.zeros((2 * n_act, n_obs), "f4"), "b": bias},
        {
            "policy_version": version,
            "feature_spec_version": FEATURE_SPEC_VERSION,
            "observation": {
                "names": list(OBSERVATION_NAMES),
                "mean": [0.0] * n_obs,
                "std": [1.0] * n_obs,
            },
            "action": {
                "names": list(HYPERPARAMETER_NAMES),
                **({} if coupling is None else {"learning_rate_follows_batch": coupling}),
            },
            "network": {"layers": [{"weight": "w", "bias": "b", "activation": "linear"}]},
        },
    )
