"""The shapes data takes between stages: the history table and a run's summary.

History (Parquet, Arrow) is a long table, one row per sample::

    timestamp  timestamp[ms, tz=UTC]   scrape time
    dataset    string                  workload label
    model      string                  workload label
    framework  string                  workload label
    run_id     string                  one execution of the workload (one pipeline run)
    metric     string                  a name from METRICS below
    value      float64                 in the unit METRICS gives

On disk it is hive-partitioned by ``dataset``/``model``/``framework``. Both the live
Prometheus path (CI) and the Parquet/simulator path (training) produce this table, and
one function (:func:`jpo.learning.features.summarize_run`) condenses a run from it, so that the
features seen in training and in CI are computed by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

HISTORY_SCHEMA = pa.schema(
    [
        pa.field("timestamp", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("framework", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
    ]
)
"""Arrow schema of the telemetry history (see module docstring)."""

PARTITION_COLUMNS: tuple[str, ...] = ("dataset", "model", "framework")

METRICS: dict[str, str] = {
    "cpu_util": "CPU cores used / CPU limit of the pod's training container (fraction)",
    "mem_util": "memory working set / memory limit (fraction)",
    "gpu_util": "DCGM_FI_DEV_GPU_UTIL / 100 (fraction of time the GPU was busy)",
    "gpu_mem_util": "DCGM FB_USED / (FB_USED + FB_FREE) (fraction)",
    "gpu_mem_used_mib": "DCGM_FI_DEV_FB_USED (MiB)",
    "gpu_mem_total_mib": "DCGM FB_USED + FB_FREE (MiB): the device's memory",
    "throughput": "training samples per second, exported by the workload",
    "samples_total": "training samples processed since the run started (counter), exported",
    "val_loss": "validation loss after the latest epoch, exported by the workload",
    "epoch": "epochs completed, exported by the workload",
    "elapsed_s": "seconds the run has trained since it started, exported by the workload (its"
    " own clock; a simulated pod's simulated time): the run's duration when present",
    "run_status": "0 running, 1 succeeded, 2 failed OOM, 3 failed diverged, 4 failed other",
    "hp_batch_size": "batch size the run used (exported by the workload)",
    "hp_learning_rate": "learning rate the run used",
    "hp_num_layers": "number of layers the run used",
    "hp_epochs": "epochs the run was configured for",
}
"""Canonical metric names in the history table, with their units."""

RUN_STATUS_CODES: dict[int, str] = {0: "running", 1: "ok", 2: "oom", 3: "diverged", 4: "failed"}

Failure = Literal["none", "oom", "diverged", "failed"]


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One execution of a workload, condensed: what features and rewards are made of.

    Utilizations are fractions in [0, 1] (NaN never appears: a summary with missing data
    is not built; the telemetry layer raises instead). ``throughput`` is samples/s over
    the run; ``duration_s`` its duration (the workload's own ``elapsed_s`` when it exports
    it, else the span of the samples' timestamps); ``gpu_hours`` GPU-seconds / 3600.
    """

    cpu_util_mean: float
    cpu_util_p95: float
    mem_util_mean: float
    mem_util_p95: float
    gpu_util_mean: float
    gpu_util_p95: float
    gpu_mem_util_mean: float
    gpu_mem_util_p95: float
    throughput: float
    final_val_loss: float
    duration_s: float
    gpu_hours: float
    failure: Failure = "none"
