"""The CI stage's settings (``configs/suggest.toml``), one pydantic model per table.

``jpo suggest`` and ``jpo feedback`` share them. Every key is optional (the defaults are
the shipped values; the file comments each one); unknown keys, wrong types and negative
or non-finite numbers are :class:`~jpo.errors.ConfigError` naming the file, the table and
the key (:func:`jpo.settings.load_settings`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, StrictBool, StrictStr

from jpo.settings import Settings, load_settings

__all__ = [
    "ApprovalSettings",
    "EndpointSettings",
    "FailedConfigSettings",
    "FallbackSettings",
    "HysteresisSettings",
    "IncumbentSettings",
    "MemorySettings",
    "PathSettings",
    "ProbeSettings",
    "RollbackSettings",
    "SuggestSettings",
    "TelemetrySettings",
    "load_suggest_settings",
]

SETTINGS_FILE = "suggest.toml"

Amount = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
"""A finite number >= 0 (an int is accepted, a bool or a string is not)."""
Count = Annotated[int, Field(strict=True, ge=0)]
"""A whole number >= 0."""


class TelemetrySettings(Settings):
    """``[telemetry]``: where Prometheus is when ``--prometheus`` is not given."""

    prometheus_url: StrictStr = "http://127.0.0.1:9090"


class EndpointSettings(Settings):
    """``[endpoint]``: asking a Serve endpoint (``--endpoint``)."""

    timeout_s: Amount = 2.0
    retries: Count = 1
    backoff_s: Amount = 0.2


class FallbackSettings(Settings):
    """``[fallback]``: use the local artifact when the endpoint fails."""

    local: StrictBool = True


class HysteresisSettings(Settings):
    """``[hysteresis]``: tiny nudges and batch steps that buy too little are dropped."""

    min_relative_change: Amount = 0.05
    min_predicted_gain: Amount = 0.02


class MemorySettings(Settings):
    """``[memory]``: the memory guard's limit and model."""

    max_gpu_memory_fraction: Amount = 0.90
    activation_fraction: Amount = 1.0


class ApprovalSettings(Settings):
    """``[approval]``: changes above this size need ``--approve``."""

    max_relative_change: Amount = 1.0


class RollbackSettings(Settings):
    """``[rollback]``: when a run's outcome sends the stage back (:mod:`jpo.stage.rollback`)."""

    val_loss_tolerance: Amount = 0.05
    recover_failures: StrictBool = True


class FailedConfigSettings(Settings):
    """``[failed_configs]``: the failed-config memory and its retry (:mod:`jpo.stage.retry`)."""

    remember_degraded: StrictBool = True
    repeat_tolerance: Amount = 0.05
    retry_more_epochs: StrictBool = True


class IncumbentSettings(Settings):
    """``[incumbent]``: the return to the campaign's best run (:mod:`jpo.stage.incumbent`)."""

    enabled: StrictBool = True
    margin: Amount = 0.05
    window: Count = 20
    remember_worse: StrictBool = True
    restart_on_shift: StrictBool = False
    shift_margin: Amount = 0.05
    shift_reruns: Annotated[int, Field(strict=True, ge=1)] = 1
    shift_keeps_worse: StrictBool = False
    shift_rejudges: StrictBool = False


class PathSettings(Settings):
    """``[paths]``: the history store, relative to config.ini's folder."""

    history_root: StrictStr = ".jpo/history"


class ProbeSettings(Settings):
    """``[probe]``: probes when the policy's step is kept back (:mod:`jpo.stage.probe`)."""

    enabled: StrictBool = False
    lr_factor: Amount = 2.0


class SuggestSettings(Settings):
    """The CI stage's tunable numbers: ``configs/suggest.toml``, table by table."""

    telemetry: TelemetrySettings = TelemetrySettings()
    endpoint: EndpointSettings = EndpointSettings()
    fallback: FallbackSettings = FallbackSettings()
    hysteresis: HysteresisSettings = HysteresisSettings()
    memory: MemorySettings = MemorySettings()
    approval: ApprovalSettings = ApprovalSettings()
    rollback: RollbackSettings = RollbackSettings()
    failed_configs: FailedConfigSettings = FailedConfigSettings()
    incumbent: IncumbentSettings = IncumbentSettings()
    paths: PathSettings = PathSettings()
    probe: ProbeSettings = ProbeSettings()

    def updated(self, changes: Mapping[str, Mapping[str, Any]]) -> SuggestSettings:
        """Return these settings with ``{table: {key: value}}`` changed (validated)."""
        data = self.model_dump()
        for table, values in changes.items():
            data[table] = {**data.get(table, {}), **values}
        return SuggestSettings.model_validate(data)


def load_suggest_settings(path: str | Path | None = None) -> SuggestSettings:
    """Load ``configs/suggest.toml`` (or ``path``); unknown keys and bad types are errors."""
    return load_settings(SuggestSettings, SETTINGS_FILE, path, missing_ok=True)
