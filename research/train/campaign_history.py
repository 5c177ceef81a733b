"""The campaign-history input of round 12's research students: this run and the one before.

Why: one run's telemetry cannot show a workload's best learning rate or epoch count
(research/evaluate/RESULTS.md, rounds 8-11). Two consecutive runs of one campaign at
different configurations can: the change in validation loss, throughput and memory
between them is a finite difference along the step the policy took. This module is the
one definition of that input, shared by the trainer (``imitate.py --history``) and the
scorer (``diagnose.py history``), so the student is scored on what it was trained on.

The input is the feature-spec observation of the latest run, then the observation of
the campaign's run before it (zeros on a campaign's first run), then ``has_previous``
(1.0 when there is a run before). It is research only: the CI stage builds the
spec-1 observation, so a policy with this input is scored on the direct path.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jpo.learning.features import FEATURE_SPEC_VERSION
from jpo.policy.artifact import LocalPolicy, latest_artifact

PREVIOUS_PREFIX = "prev_"
HAS_PREVIOUS = "has_previous"
HISTORY_SPEC_VERSION = f"{FEATURE_SPEC_VERSION}+history"
"""The feature spec a history student's manifest claims: not the CI stage's, so the
product's loader refuses it unless asked for this version (:func:`load_policy`)."""


def load_policy(path: str | Path) -> LocalPolicy:
    """Load a product policy or a history student, by the spec its manifest claims."""
    manifest = json.loads((latest_artifact(path) / "manifest.json").read_text())
    if manifest.get("feature_spec_version") == HISTORY_SPEC_VERSION:
        return LocalPolicy.load(path, expected_feature_spec_version=HISTORY_SPEC_VERSION)
    return LocalPolicy.load(path)


def history_names(names: Sequence[str]) -> tuple[str, ...]:
    """Return the input names of a history student whose observation names are ``names``."""
    return (*names, *(PREVIOUS_PREFIX + n for n in names), HAS_PREVIOUS)


def is_history_input(names: Sequence[str]) -> bool:
    """Return whether a policy's input names are :func:`history_names` of some observation."""
    n = (len(names) - 1) // 2
    return (
        len(names) == 2 * n + 1
        and n > 0
        and names[-1] == HAS_PREVIOUS
        and tuple(names[n : 2 * n]) == tuple(PREVIOUS_PREFIX + x for x in names[:n])
    )


def with_history(obs: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
    """Return the history input: ``obs``, the previous run's observation (or zeros), the flag."""
    obs = np.asarray(obs, dtype=np.float32)
    if previous is None:
        return np.concatenate([obs, np.zeros_like(obs), np.zeros(1, np.float32)])
    previous = np.asarray(previous, dtype=np.float32)
    if previous.shape != obs.shape:
        raise ValueError(f"previous observation has shape {previous.shape}, expected {obs.shape}")
    return np.concatenate([obs, previous, np.ones(1, np.float32)])
