"""Typed values shared by every stage: the workload key and its hyperparameters."""

from __future__ import annotations

from dataclasses import asdict, dataclass
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
