"""One policy step: a policy's action for an observation -> the constrained next values.

The CI stage (:func:`jpo.stage.suggest.suggest`), Serve (:class:`jpo.serving.api.PolicyService`)
and evaluation's direct path (:func:`jpo.evaluation.evaluate.jpo_proposer`) map an action
to hyperparameters here, and only here, so that they answer alike for the same input:

1. a non-finite action is refused with :class:`jpo.errors.PolicyError` (exit 5), never
   replaced by 0; a finite one is clipped to [-1, 1] (:func:`checked_action`);
2. its entries are ordered by the policy's action names (manifest ``action.names``) into
   the constraints' tunable order: a tunable parameter the policy does not act on gets 0
   (keep), an entry for a frozen one is dropped;
3. :meth:`jpo.workload.constraints.Constraints.apply_action` maps the ordered vector with
   the learning-rate/batch coupling the policy was trained with (manifest
   ``action.learning_rate_follows_batch``).

:func:`policy_step` runs a loaded policy and does all three; :func:`constrained_step` does
2 and 3 (after checking again) for an action a :class:`jpo.policy.source.PolicySource`
already returned (the CI stage's local artifact or Serve endpoint). Imports nothing from
the other ``jpo.policy`` modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from jpo.errors import PolicyError
from jpo.workload.types import HYPERPARAMETER_NAMES, Hyperparameters

if TYPE_CHECKING:
    from jpo.workload.constraints import Constraints

__all__ = ["Actor", "PolicyStep", "checked_action", "constrained_step", "policy_step"]


class Actor(Protocol):
    """A loaded policy (:class:`jpo.policy.artifact.LocalPolicy` is one)."""

    @property
    def version(self) -> int:
        """The policy version."""
        ...

    @property
    def action_names(self) -> tuple[str, ...]:
        """The hyperparameter each action entry changes, in vector order."""
        ...

    @property
    def learning_rate_follows_batch(self) -> float:
        """The learning-rate/batch coupling the policy was trained with."""
        ...

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Return the deterministic action for one observation."""
        ...


@dataclass(frozen=True, slots=True)
class PolicyStep:
    """A policy's action and the constrained next hyperparameters it maps to."""

    action: tuple[float, ...]
    """The checked action in [-1, 1]^k, in the policy's order (``action_names``)."""
    action_names: tuple[str, ...]
    """The hyperparameter each ``action`` entry changes."""
    vector: tuple[float, ...]
    """What ``apply_action`` got: one entry per tunable parameter, in the constraints' order."""
    learning_rate_follows_batch: float
    """The coupling ``apply_action`` applied (the policy's)."""
    hyperparameters: Hyperparameters
    """The constrained next values (trust region, bounds, rounding, frozen keys held)."""


def checked_action(raw: Any, source: str) -> tuple[float, ...]:
    """Return a policy's raw action as floats clipped to [-1, 1]; PolicyError if not finite."""
    try:
        action = np.asarray(raw, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise PolicyError(f"{source}: the policy's action is not a numeric vector") from err
    if action.size == 0:
        raise PolicyError(f"{source}: the policy returned an empty action")
    if not np.all(np.isfinite(action)):
        raise PolicyError(f"{source}: the policy returned a non-finite action {action.tolist()}")
    return tuple(float(a) for a in np.clip(action, -1.0, 1.0))


def _tunable_vector(
    constraints: Constraints, action: Sequence[float], action_names: Sequence[str] | None
) -> list[float]:
    """Order a policy's action entries as the constraints' tunable parameters expect.

    A policy names its action entries (manifest ``action.names``); without names the
    entries follow ``HYPERPARAMETER_NAMES``. A tunable parameter the policy does not act on
    gets 0 (keep), an entry for a non-tunable (frozen) one is dropped.
    """
    names = tuple(action_names) if action_names else HYPERPARAMETER_NAMES[: len(action)]
    if len(names) != len(action):
        raise PolicyError(
            f"the policy returned {len(action)} action entries for {len(names)} names "
            f"({', '.join(names)}); re-export the policy"
        )
    by_name = dict(zip(names, action, strict=True))
    return [float(by_name.get(name, 0.0)) for name in constraints.tunable]


def constrained_step(
    constraints: Constraints,
    current: Hyperparameters,
    action: Sequence[float],
    *,
    action_names: Sequence[str] | None,
    learning_rate_follows_batch: float,
    source: str,
) -> PolicyStep:
    """Map a policy's returned action to the constrained next hyperparameters.

    Args:
        constraints: the workload's constraints (its frozen keys included).
        current: the values the workload runs with now.
        action: the policy's action, in the order of ``action_names``.
        action_names: the policy's manifest ``action.names`` (None: ``HYPERPARAMETER_NAMES``).
        learning_rate_follows_batch: the policy's coupling, handed to ``apply_action``.
        source: where the action came from, named in errors (``file:<path>``, a URL).

    Raises:
        PolicyError: a non-finite or empty action, or as many names as entries missing.
        ConstraintViolation: current values the constraints cannot step from.
    """
    checked = checked_action(action, source)
    vector = _tunable_vector(constraints, checked, action_names)
    names = tuple(action_names) if action_names else HYPERPARAMETER_NAMES[: len(checked)]
    hyperparameters = constraints.apply_action(
        current,
        np.asarray(vector, dtype=np.float64),
        learning_rate_follows_batch=learning_rate_follows_batch,
    )
    return PolicyStep(
        action=checked,
        action_names=names,
        vector=tuple(vector),
        learning_rate_follows_batch=learning_rate_follows_batch,
        hyperparameters=hyperparameters,
    )


def policy_step(
    policy: Actor,
    observation: np.ndarray,
    constraints: Constraints,
    current: Hyperparameters,
    *,
    source: str,
) -> PolicyStep:
    """Run ``policy`` on ``observation`` and map its action to the constrained next values.

    Raises:
        PolicyError: the policy refuses the observation or returns a non-finite action.
        ConstraintViolation: current values the constraints cannot step from.
    """
    return constrained_step(
        constraints,
        current,
        checked_action(policy.act(observation), source),
        action_names=policy.action_names,
        learning_rate_follows_batch=float(policy.learning_rate_follows_batch),
        source=source,
    )
