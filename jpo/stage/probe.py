"""Probes: the CI stage learns from the campaign's own runs when the policy stops paying.

One run's telemetry cannot tell whether the learning rate or the epochs are off; only a
run with changed values can (issue 25). The SAC policy stays the proposer: a probe is made
only when the policy's step is refused or asks for nothing (the guards leave the current
values: a step that degraded or scored lower before is remembered, the memory guard
refuses more batch or depth, the hysteresis keeps a small step). Then the stage tries, from
the current values (the campaign's best run after a return to it), the first of
:data:`PROBES` that the campaign has not run yet and that no remembered failure forbids:

    epochs_down   epochs one trust-region step down (converged runs waste GPU-hours)
    lr_up         learning rate x ``lr_factor`` (a learning rate below its best trains slowly)
    lr_down       learning rate / ``lr_factor`` (one above its best raises the loss floor)

The runs verify each probe with what the stage already has: a probe that degraded val
loss is rolled back and remembered, one that scored lower than the best run sends the
stage back to the best (configs/suggest.toml [incumbent]) and is remembered as "worse",
so the next probe is the next one; a probe that paid is kept and, the policy stalling
again, probed further from there. Frozen parameters never move; batch size and depth are
never probed, so a probe cannot run out of memory where the current values fit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from jpo.errors import ConstraintViolation
from jpo.stage.guards import FailedConfig, check_failed_configs, relative_change
from jpo.workload.constraints import Constraints
from jpo.workload.types import Hyperparameters

__all__ = ["PROBES", "Probe", "probe_step"]

PROBES: tuple[str, ...] = ("epochs_down", "lr_up", "lr_down")
"""Probe moves, in the order they are tried (module docstring)."""


@dataclass(frozen=True)
class Probe:
    """A probe the CI stage proposes: the values and a note for the audit log."""

    hyperparameters: Hyperparameters
    name: str
    note: str


def _move(
    name: str, current: Hyperparameters, constraints: Constraints, lr_factor: float
) -> dict[str, float]:
    """Return the target values of one probe move from ``current``."""
    if name == "epochs_down":
        return {"epochs": current.epochs / constraints.params["epochs"].trust_region}
    if name == "lr_up":
        return {"learning_rate": current.learning_rate * lr_factor}
    return {"learning_rate": current.learning_rate / lr_factor}


def _near_any(hp: Hyperparameters, runs: Iterable[Hyperparameters], near: float) -> bool:
    """Tell whether ``hp`` repeats a configuration the campaign already ran."""
    for ran in runs:
        x, y = hp.as_dict(), ran.as_dict()
        if all(relative_change(float(y[n]), float(x[n])) <= near for n in x):
            return True
    return False


def probe_step(
    constraints: Constraints,
    current: Hyperparameters,
    failures: Sequence[FailedConfig],
    ran: Sequence[Hyperparameters],
    *,
    lr_factor: float = 2.0,
    near: float = 0.05,
) -> Probe | None:
    """Return the first probe from ``current`` not yet run nor forbidden, or None.

    ``ran`` holds every configuration the campaign ran (its audit log); ``failures`` the
    failed-config memory (failed, degraded, worse runs). A probe is clamped into
    the constraints and the trust region; one that equals ``current`` (a frozen or
    bounded parameter), repeats a run within ``near`` or is refused by the memory is
    skipped.
    """
    for name in PROBES:
        try:
            hp = constraints.clamp(current, _move(name, current, constraints, lr_factor))
        except ConstraintViolation:
            continue
        if hp == current or _near_any(hp, ran, near):
            continue
        if check_failed_configs(current, hp, failures, near=near).hyperparameters != hp:
            continue
        changed = ", ".join(
            f"{k} {current.as_dict()[k]:g} -> {v:g}"
            for k, v in hp.as_dict().items()
            if v != current.as_dict()[k]
        )
        note = (
            f"probe {name}: the policy's step was kept back, so the campaign's runs test "
            f"{changed} (configs/suggest.toml [probe])"
        )
        return Probe(hp, name, note)
    return None
