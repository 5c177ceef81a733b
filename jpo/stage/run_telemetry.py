"""The CI stage's telemetry plumbing, shared by ``jpo suggest`` and ``jpo feedback``.

Where Prometheus is (``--prometheus``, ``$JPO_PROMETHEUS_URL``, ``[telemetry]
prometheus_url``), how a run's table becomes a :class:`~jpo.telemetry.schema.RunSummary`
with its GPU count, whether a run has finished, what the memory guard reads of a run, and
where the history store is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from jpo.stage.settings import SuggestSettings
from jpo.workload.types import Device, WorkloadKey

if TYPE_CHECKING:
    import pyarrow as pa

    from jpo.telemetry.schema import RunSummary
    from jpo.telemetry.sources import MetricSource

__all__ = [
    "PROMETHEUS_ENV",
    "history_root",
    "memory_inputs",
    "prometheus_source",
    "resolve_under",
    "run_finished",
    "run_summary",
]

PROMETHEUS_ENV = "JPO_PROMETHEUS_URL"


def resolve_under(config: Path, value: str | Path) -> Path:
    """Return ``value`` as a path, relative to ``config``'s folder when not absolute."""
    path = Path(value)
    return path if path.is_absolute() else config.resolve().parent / path


def history_root(config: Path, settings: SuggestSettings) -> Path:
    """Return the history store (``[paths] history_root``, beside config.ini if relative)."""
    return resolve_under(config, settings.paths.history_root)


def prometheus_source(
    url: str | None, metrics_path: Path | None, settings: SuggestSettings
) -> MetricSource:
    """Return the CI stage's Prometheus source (URL: given, $JPO_PROMETHEUS_URL, settings).

    The metric catalog is ``metrics_path`` when given, else configs/metrics.toml.
    """
    from jpo.telemetry.promql import load_catalog
    from jpo.telemetry.sources import PrometheusSource

    url = url or os.environ.get(PROMETHEUS_ENV) or settings.telemetry.prometheus_url
    return PrometheusSource.from_url(url, load_catalog(metrics_path) if metrics_path else None)


def run_summary(
    metric_source: MetricSource,
    key: WorkloadKey,
    run_id: str,
    table: pa.Table,
    device: Device,
) -> tuple[RunSummary, int, str]:
    """Return (summary, GPUs, note) of a run; the note is set when 1 GPU is only a default.

    A GPU workload's count comes from its pods' ``nvidia_com_gpu`` limits (``[gpus]`` in
    configs/metrics.toml) and GPU-hours are the run's duration times it; a cpu-device
    workload (``[jpo] device = cpu``) counts its pod as its one device.
    """
    from jpo.learning.features import MissingMetricError, summarize_run

    if device == "cpu":
        return summarize_run(table, device="cpu"), 1, ""
    gpus = metric_source.run_gpus(key, run_id)
    try:
        summary = summarize_run(table, gpus=gpus or 1)
    except MissingMetricError as err:
        if gpus is None and err.metric in ("gpu_util", "gpu_mem_util"):
            # No DCGM series and no GPU limit: most likely a CPU-only workload.
            raise MissingMetricError(
                f"{err}; its pods have no nvidia_com_gpu limit either: if the workload "
                "trains without a GPU, add `device = cpu` to the [jpo] section of its "
                "config.ini (docs/user-guide.md, section 'CPU workloads')",
                metric=err.metric,
            ) from err
        raise
    if gpus is not None:
        return summary, gpus, ""
    note = (
        f"GPU count of run {run_id!r} unknown (no kube_pod_container_resource_limits"
        '{resource="nvidia_com_gpu"} for its pods, see [gpus] in configs/metrics.toml): '
        "gpu_hours assume 1 GPU"
    )
    return summary, 1, note


def run_finished(table: pa.Table) -> bool:
    """Whether the run's latest ``run_status`` sample says it is over (not 0, running).

    Without a (finite) ``run_status`` sample it is not called running: summarize_run then
    names the missing or non-finite metric.
    """
    from jpo.telemetry.sources import RUNNING, run_status_of

    return run_status_of(table) != RUNNING


def memory_inputs(table: pa.Table, summary: RunSummary) -> tuple[float | None, float | None]:
    """Return (peak GPU-memory fraction, GPU memory total MiB) of a run, or Nones."""
    import numpy as np

    metric = np.asarray(table.column("metric").to_pylist(), dtype=object)
    value = table.column("value").to_numpy()
    totals = value[(metric == "gpu_mem_total_mib") & np.isfinite(value)]
    total = float(totals.max()) if totals.size else None
    fraction = summary.gpu_mem_util_p95
    if total is None and not (fraction > 0):
        return None, None
    return fraction, total
