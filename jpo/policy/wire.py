"""The wire models of the policy endpoint, shared by its server and its client.

The Serve app (:mod:`jpo.serving.api`) validates requests and builds answers with them; the
CI stage's endpoint client (:class:`jpo.policy.source.EndpointPolicySource`) validates the
answers with the same models. They live in the policy layer so that the client imports
nothing from serving (and no FastAPI): pydantic only, every model strict (unknown fields,
NaN and Inf are errors) and frozen.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from jpo.workload.types import HYPERPARAMETER_NAMES, Hyperparameters, WorkloadKey

__all__ = [
    "LABEL_PATTERN",
    "MAX_FEATURES",
    "Health",
    "HyperparameterValues",
    "PolicyInfo",
    "RunSummaryModel",
    "SuggestRequest",
    "SuggestResponse",
    "WorkloadLabels",
    "hyperparameters_from_wire",
]

LABEL_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"
"""A Kubernetes label value (SPEC §2): <= 63 chars, alphanumeric at both ends."""

MAX_FEATURES = 512
"""Upper bound on the observation length a client may send (the real spec is far shorter)."""

Label = Annotated[str, StringConstraints(pattern=LABEL_PATTERN, max_length=63)]
FiniteNonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class _Strict(BaseModel):
    """Base of every wire model: unknown fields, NaN and Inf are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class WorkloadLabels(_Strict):
    """The workload's pod labels."""

    dataset: Label
    model: Label
    framework: Label

    def key(self) -> WorkloadKey:
        """Return the workload key."""
        return WorkloadKey(self.dataset, self.model, self.framework)


class HyperparameterValues(_Strict):
    """One setting of the tunable hyperparameters (the client's current values)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, strict=True)

    batch_size: Annotated[int, Field(ge=1, le=1_000_000)]
    learning_rate: Annotated[float, Field(gt=0.0, le=1e3)]
    num_layers: Annotated[int, Field(ge=1, le=100_000)]
    epochs: Annotated[int, Field(ge=1, le=1_000_000)]

    def to_hyperparameters(self) -> Hyperparameters:
        """Return the shared dataclass."""
        return Hyperparameters(self.batch_size, self.learning_rate, self.num_layers, self.epochs)

    @classmethod
    def of(cls, hp: Hyperparameters) -> HyperparameterValues:
        """Build from the shared dataclass."""
        return cls(**hp.as_dict())  # type: ignore[arg-type]


class RunSummaryModel(_Strict):
    """A finished run's telemetry summary (mirrors :class:`jpo.telemetry.schema.RunSummary`)."""

    cpu_util_mean: FiniteNonNegative
    cpu_util_p95: FiniteNonNegative
    mem_util_mean: FiniteNonNegative
    mem_util_p95: FiniteNonNegative
    gpu_util_mean: FiniteNonNegative
    gpu_util_p95: FiniteNonNegative
    gpu_mem_util_mean: FiniteNonNegative
    gpu_mem_util_p95: FiniteNonNegative
    throughput: FiniteNonNegative
    final_val_loss: FiniteNonNegative
    duration_s: FiniteNonNegative
    gpu_hours: FiniteNonNegative
    failure: Literal["none", "oom", "diverged", "failed"] = "none"

    def to_summary(self) -> Any:
        """Return a :class:`jpo.telemetry.schema.RunSummary`."""
        from jpo.telemetry.schema import RunSummary

        return RunSummary(**self.model_dump())


class SuggestRequest(_Strict):
    """Body of ``POST /v1/suggest``: features OR a raw telemetry summary (or both)."""

    workload: WorkloadLabels
    hyperparameters: HyperparameterValues
    features: (
        Annotated[
            list[Annotated[float, Field(allow_inf_nan=False)]],
            Field(min_length=1, max_length=MAX_FEATURES),
        ]
        | None
    ) = None
    feature_spec_version: Annotated[str, StringConstraints(max_length=32)] | None = None
    summary: RunSummaryModel | None = None
    baseline_throughput: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None
    """With ``summary``: the workload's reference throughput (default: the run's own)."""
    best_val_loss: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    """With ``summary``: the workload's best loss so far (default: the run's own)."""

    @model_validator(mode="after")
    def _features_or_summary(self) -> SuggestRequest:
        if self.features is None and self.summary is None:
            raise ValueError("give `features` (with `feature_spec_version`) or `summary`")
        if self.features is not None and self.feature_spec_version is None:
            raise ValueError("`features` needs `feature_spec_version` (jpo.learning.features)")
        return self


class SuggestResponse(_Strict):
    """Answer of ``POST /v1/suggest``."""

    hyperparameters: HyperparameterValues
    action: Annotated[
        list[Annotated[float, Field(ge=-1.0, le=1.0, allow_inf_nan=False)]],
        Field(min_length=1, max_length=len(HYPERPARAMETER_NAMES)),
    ]
    action_names: Annotated[
        list[Literal["batch_size", "learning_rate", "num_layers", "epochs"]],
        Field(min_length=1, max_length=len(HYPERPARAMETER_NAMES)),
    ]
    predicted_gain: Annotated[float, Field(allow_inf_nan=False)] | None
    policy_version: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    feature_spec_version: Annotated[str, StringConstraints(max_length=32)]
    learning_rate_follows_batch: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    """Action mapping's learning-rate/batch coupling (the client applies ``action`` with it)."""


class PolicyInfo(_Strict):
    """Answer of ``GET /v1/policy``."""

    version: str
    manifest: dict[str, Any]


class Health(_Strict):
    """Answer of ``GET /healthz``."""

    status: Literal["ok"]
    policy_version: str


def hyperparameters_from_wire(values: dict[str, Any]) -> Hyperparameters:
    """Validate a wire hyperparameter mapping and return the dataclass (raises ValueError)."""
    model = HyperparameterValues.model_validate(values)
    hp = model.to_hyperparameters()
    if not all(math.isfinite(float(v)) for v in hp.as_dict().values()):
        raise ValueError("non-finite hyperparameter")
    return hp
