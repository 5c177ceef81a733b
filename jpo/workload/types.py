"""Typed values shared by every stage: the workload key and its hyperparameters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal

Device = Literal["gpu", "cpu"]
"""What a workload trains on (``[jpo] device`` in config.ini; default ``gpu``)."""

DEVICES: tuple[Device, ...] = ("gpu", "cpu")

HYPERPARAMETER_NAMES: tuple[str, ...] = ("batch_size", "learning_rate", "num_layers", "epochs")
"""The tunable hyperparameters, in the fixed order used by action and feature vectors."""


@dataclass(frozen=True, slots=True)
class WorkloadKey:
    """Identity of a recurring workload: the pod labels dataset, model and framework."""

    dataset: str
    model: str
    framework: str

    def slug(self) -> str:
        """Return a filesystem- and label-safe id, e.g. ``cifar10.resnet18.pytorch``."""
        return f"{self.dataset}.{self.model}.{self.framework}"


@dataclass(frozen=True, slots=True)
class Hyperparameters:
    """One setting of the tunable hyperparameters of a training run."""

    batch_size: int
    learning_rate: float
    num_layers: int
    epochs: int

    def as_dict(self) -> dict[str, float | int]:
        """Return the values keyed by name, in HYPERPARAMETER_NAMES order."""
        return asdict(self)

    @classmethod
    def from_mapping(cls, values: dict[str, float | int]) -> Hyperparameters:
        """Build from a name -> value mapping (ints are coerced where integral)."""
        return cls(
            batch_size=int(values["batch_size"]),
            learning_rate=float(values["learning_rate"]),
            num_layers=int(values["num_layers"]),
            epochs=int(values["epochs"]),
        )


@dataclass(frozen=True, slots=True)
class ParamLimits:
    """Per-workload narrowing of one parameter (from config.ini ``[jpo]``); None = keep."""

    min: float | None = None
    max: float | None = None
    trust_region: float | None = None
    power_of_two: bool | None = None
    multiple_of: int | None = None


@dataclass(frozen=True, slots=True)
class JpoSection:
    """The optional ``[jpo]`` section: what may be tuned and per-workload limits."""

    tunable: tuple[str, ...] = HYPERPARAMETER_NAMES
    frozen: tuple[str, ...] = ()
    limits: Mapping[str, ParamLimits] = field(default_factory=dict)
    source: str = "config.ini"
    device: Device = "gpu"
