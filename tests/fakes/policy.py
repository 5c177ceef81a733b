"""Tiny policy artifacts for tests: a fixed action, or a random two-layer network.

The one place tests write a policy artifact (tests/policy/test_policy.py keeps its own
five-feature artifact: it checks the forward pass by hand against other names).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jpo.learning.features import FEATURE_SPEC_VERSION, OBSERVATION_NAMES
from jpo.policy.artifact import write_artifact
from jpo.workload.types import HYPERPARAMETER_NAMES

RUN_SUMMARY: dict[str, object] = {
    "cpu_util_mean": 0.4,
    "cpu_util_p95": 0.5,
    "mem_util_mean": 0.3,
    "mem_util_p95": 0.35,
    "gpu_util_mean": 0.5,
    "gpu_util_p95": 0.6,
    "gpu_mem_util_mean": 0.3,
    "gpu_mem_util_p95": 0.35,
    "throughput": 900.0,
    "final_val_loss": 0.6,
    "duration_s": 600.0,
    "gpu_hours": 0.17,
    "failure": "none",
}
"""One run's summary as a policy is asked with it (RunSummary fields; Serve's request body)."""


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


def random_policy(
    folder: Path,
    *,
    seed: int = 0,
    hidden: int = 16,
    activation: str = "relu",
    version: int = 7,
    note: str = "random weights for tests",
) -> Path:
    """Write to ``folder`` a random two-layer artifact with the running feature spec."""
    n, k, h = len(OBSERVATION_NAMES), len(HYPERPARAMETER_NAMES), hidden
    rng = np.random.default_rng(seed)
    weights = {
        "l0.weight": rng.normal(0, 0.3, (h, n)).astype("f4"),
        "l0.bias": np.zeros(h, "f4"),
        "l1.weight": rng.normal(0, 0.3, (2 * k, h)).astype("f4"),
        "l1.bias": np.zeros(2 * k, "f4"),
    }
    manifest = {
        "policy_version": version,
        "feature_spec_version": FEATURE_SPEC_VERSION,
        "observation": {"names": list(OBSERVATION_NAMES), "mean": [0.0] * n, "std": [1.0] * n},
        "action": {"names": list(HYPERPARAMETER_NAMES)},
        "network": {
            "layers": [
                {"weight": "l0.weight", "bias": "l0.bias", "activation": activation},
                {"weight": "l1.weight", "bias": "l1.bias", "activation": "linear"},
            ]
        },
        "constraints_sha256": "0" * 64,
        "training_data": {"note": note},
    }
    return write_artifact(folder, weights, manifest)
