"""Run summaries and observation features: the ONE feature code path of training and CI.

Both the replay env (training, from Parquet history) and the CI stage (``jpo suggest``,
from live Prometheus) condense a run with :func:`summarize_run` and turn it into the
policy's input with :func:`build_observation`. Changing anything below changes what a
trained policy expects: bump :data:`FEATURE_SPEC_VERSION` (and ``spec_version`` in
``configs/features.toml``) and retrain.

Feature spec, version 1
=======================

Run summary (:func:`summarize_run`), from one run's long-format ``HISTORY_SCHEMA`` rows:

==================  ===================================================================
field               definition
==================  ===================================================================
``<u>_mean``        arithmetic mean of the run's samples of ``<u>`` for ``<u>`` in
                    ``cpu_util``, ``mem_util``, ``gpu_util``, ``gpu_mem_util`` (fractions
                    of what the pod reserved)
``<u>_p95``         95th percentile of the same samples, linear interpolation between
                    closest ranks (numpy's default; identical to PromQL's
                    ``quantile_over_time(0.95, ...)``)
``throughput``      samples processed / ``duration_s`` (samples/s): the ``samples_total``
                    counter's increase over the run (it starts at 0 with the run; a drop
                    is a restart, counted from 0 again) when the run exports it and lasts
                    more than one scrape; else the mean of the ``throughput`` samples,
                    which on a run of a few scrapes can be off by 2x
                    (docs/design/simulation.md)
``final_val_loss``  the ``val_loss`` sample with the latest timestamp
``duration_s``      the largest ``elapsed_s`` sample when the run exports its own training
                    time (``jpo_training_elapsed_seconds``: a simulated pod's simulated
                    time, a real job's own clock); else latest minus earliest timestamp
                    over all of the run's rows (s). Both agree on a run scraped in real
                    time; the first is right where the scrape clock is not the run's
``gpu_hours``       ``duration_s / 3600`` x GPUs per pod (the ``gpus`` argument, default
                    1: the history schema carries no GPU count; the pod's
                    ``nvidia_com_gpu`` limit or the workload profile gives it)
``failure``         from the latest ``run_status`` sample: 2 → ``oom``, 3 → ``diverged``,
                    4 → ``failed``, 0 (still running) or 1 (ok) → ``none``
==================  ===================================================================

Required metrics: the four utilizations, ``throughput`` (or ``samples_total``), ``val_loss``
and ``run_status``.

A workload that trains without a GPU (``[jpo] device = cpu`` in its config.ini;
``device="cpu"`` here) has no DCGM series. Its pod is its accelerator: ``gpu_util_*`` are
its ``cpu_util`` samples and ``gpu_mem_util_*`` its ``mem_util`` samples (the busy fraction
and the memory that an OOM is measured against, as on a GPU), and ``gpu_hours`` counts the
pod as one device (pod-hours). GPU samples of such a run are ignored. The observation's
layout and the policy are the same; the policy was trained on GPU workloads only, so its
suggestions for a CPU workload are an extrapolation that the CI stage's guards and
rollback keep in check (docs/user-guide.md, "CPU workloads").

A missing required metric raises :class:`MissingMetricError`; a NaN or infinite sample
raises :class:`NonFiniteMetricError`. Nothing is ever filled with 0, with two documented
exceptions for runs whose ``run_status`` says they FAILED (the reward ignores both values
for failed runs): a failed run without any throughput sample has ``throughput = 0``
(it processed nothing measurable), and a failed run whose loss is missing or non-finite
(divergence) has ``final_val_loss = inf``.

Observation (:func:`build_observation`, ``float32``, names in :data:`OBSERVATION_NAMES`):

=====  ========================  ===========================================================
index  name                      definition (clip bounds from ``configs/features.toml``)
=====  ========================  ===========================================================
0-7    ``<u>_mean``/``<u>_p95``  the summary's utilizations, clipped to [0, 1.5]
8      ``throughput_rel``        throughput / context.baseline_throughput, clipped to [0, 4]
9      ``val_loss_rel``          (final_val_loss - best) / best, best =
                                 context.best_val_loss, clipped to [-1, 4]; 0 when no best
                                 is known yet; 4 for an infinite loss
10-12  ``failed_<kind>``         one-hot of the run's failure: ``oom``, ``diverged``,
                                 ``other`` (all 0 for a successful run)
13     ``previous_failed``       1 if the run BEFORE this one failed (context)
14-17  ``hp_<name>``             ``constraints.normalize(hp)``: each hyperparameter in
                                 [0, 1] within its constrained range (log scale where the
                                 constraints say so), in ``HYPERPARAMETER_NAMES`` order
18-21  ``framework_<name>``      one-hot of the workload's framework: ``pytorch``,
                                 ``tensorflow``, ``jax``, ``other``
22     ``log_model_params``      (log10(parameters) - 7) / 2, clipped to [-2, 2]; 0 if
                                 unknown
23     ``model_params_known``    1 if the parameter count is known, else 0
=====  ========================  ===========================================================
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jpo.errors import ConfigError, TelemetryError
from jpo.settings import Settings, config_file, load_settings
from jpo.telemetry.prometheus import EmptyResult, NonFiniteSample
from jpo.telemetry.schema import HISTORY_SCHEMA, PARTITION_COLUMNS, Failure, RunSummary
from jpo.workload.types import HYPERPARAMETER_NAMES, Device, Hyperparameters, WorkloadKey

if TYPE_CHECKING:
    from jpo.workload.constraints import Constraints

__all__ = [
    "FEATURE_SPEC_VERSION",
    "OBSERVATION_NAMES",
    "UTILIZATION_METRICS",
    "MissingMetricError",
    "NonFiniteMetricError",
    "WorkloadContext",
    "build_observation",
    "context_from_runs",
    "feature_spec",
    "observation_bounds",
    "run_hyperparameters",
    "summarize_run",
    "summarize_runs",
]

FEATURE_SPEC_VERSION = "1"
"""Version of the feature spec above; the policy manifest records it and CI checks it."""

UTILIZATION_METRICS: tuple[str, ...] = ("cpu_util", "mem_util", "gpu_util", "gpu_mem_util")
"""Utilization metrics summarized as mean and p95, in observation order."""

_CPU_DEVICE_SOURCES: dict[str, str] = {"gpu_util": "cpu_util", "gpu_mem_util": "mem_util"}
"""The metric a cpu-device run's GPU utilization is read from (module docstring)."""

_REQUIRED_METRICS: tuple[str, ...] = (*UTILIZATION_METRICS, "throughput", "val_loss", "run_status")
_FAILURE_BY_STATUS: dict[int, Failure] = {
    0: "none",
    1: "none",
    2: "oom",
    3: "diverged",
    4: "failed",
}


class MissingMetricError(EmptyResult):
    """A metric a run summary needs has no samples for the run (``metric``: its name)."""

    def __init__(self, message: str, *, metric: str | None = None) -> None:
        super().__init__(message)
        self.metric = metric


class NonFiniteMetricError(NonFiniteSample):
    """A metric a run summary needs has a NaN or infinite sample."""


class _ClipTable(Settings):
    """``[clip]`` of features.toml."""

    utilization_max: float
    throughput_ratio_max: float
    val_loss_rel_min: float
    val_loss_rel_max: float


class _DescriptorsTable(Settings):
    """``[descriptors]`` of features.toml."""

    frameworks: tuple[str, ...]
    log10_params_center: float
    log10_params_scale: float


class _FeaturesFile(Settings):
    """The whole of features.toml."""

    spec_version: str | int
    clip: _ClipTable
    descriptors: _DescriptorsTable


def _load_spec_constants(path: str | Path | None = None) -> dict[str, Any]:
    """Read configs/features.toml and check it belongs to this FEATURE_SPEC_VERSION.

    The module reads it once, at import: the constants are part of the feature spec, which
    a policy was trained with (``$JPO_CONFIG_DIR`` set before the import is honoured).
    """
    file = config_file("features.toml", path)
    raw = load_settings(_FeaturesFile, "features.toml", file)
    constants = {
        "spec_version": str(raw.spec_version),
        **raw.clip.model_dump(),
        "frameworks": raw.descriptors.frameworks,
        "log10_params_center": raw.descriptors.log10_params_center,
        "log10_params_scale": raw.descriptors.log10_params_scale,
    }
    if constants["spec_version"] != FEATURE_SPEC_VERSION:
        raise ConfigError(
            f"{file}: spec_version = {constants['spec_version']!r} but jpo.learning.features is "
            f"version {FEATURE_SPEC_VERSION!r}; bump both together when the spec changes"
        )
    return constants


_SPEC = _load_spec_constants()
_UTIL_MAX: float = _SPEC["utilization_max"]
_THR_MAX: float = _SPEC["throughput_ratio_max"]
_VLR_MIN: float = _SPEC["val_loss_rel_min"]
_VLR_MAX: float = _SPEC["val_loss_rel_max"]
_FRAMEWORKS: tuple[str, ...] = _SPEC["frameworks"]

OBSERVATION_NAMES: tuple[str, ...] = (
    *(f"{m}_{stat}" for m in UTILIZATION_METRICS for stat in ("mean", "p95")),
    "throughput_rel",
    "val_loss_rel",
    "failed_oom",
    "failed_diverged",
    "failed_other",
    "previous_failed",
    *(f"hp_{name}" for name in HYPERPARAMETER_NAMES),
    *(f"framework_{f}" for f in _FRAMEWORKS),
    "framework_other",
    "log_model_params",
    "model_params_known",
)
"""Name of each observation entry, in vector order (see the module docstring)."""


def observation_bounds() -> tuple[np.ndarray, np.ndarray]:
    """Return (low, high) float32 bounds of every observation entry (for a Box space)."""
    n_util = 2 * len(UTILIZATION_METRICS)
    n_flags = 4  # failed_oom, failed_diverged, failed_other, previous_failed
    n_rest = len(HYPERPARAMETER_NAMES) + len(_FRAMEWORKS) + 1
    low = [0.0] * n_util + [0.0, _VLR_MIN] + [0.0] * (n_flags + n_rest) + [-2.0, 0.0]
    high = [_UTIL_MAX] * n_util + [_THR_MAX, _VLR_MAX] + [1.0] * (n_flags + n_rest) + [2.0, 1.0]
    return np.array(low, dtype=np.float32), np.array(high, dtype=np.float32)


_FAILURE_ONE_HOT: dict[str, tuple[float, float, float]] = {
    "none": (0.0, 0.0, 0.0),
    "oom": (1.0, 0.0, 0.0),
    "diverged": (0.0, 1.0, 0.0),
    "failed": (0.0, 0.0, 1.0),
}


def feature_spec() -> dict[str, Any]:
    """Return the feature spec (version, names, constants) for a policy manifest."""
    return {
        "version": FEATURE_SPEC_VERSION,
        "names": list(OBSERVATION_NAMES),
        "constants": {k: (list(v) if isinstance(v, tuple) else v) for k, v in _SPEC.items()},
    }


# --------------------------------------------------------------------------- summaries


def _check_columns(table: pa.Table) -> None:
    """Raise TelemetryError unless the table has the history schema's columns."""
    missing = [name for name in HISTORY_SCHEMA.names if name not in table.column_names]
    if missing:
        raise TelemetryError(
            f"run table lacks column(s) {missing}; expected jpo.telemetry.schema.HISTORY_SCHEMA "
            f"({', '.join(HISTORY_SCHEMA.names)})"
        )


def _run_label(table: pa.Table) -> str:
    """Return 'dataset/model/framework run <id>' for messages (first row's labels)."""
    if table.num_rows == 0:
        return "<empty run>"
    row = table.slice(0, 1).to_pylist()[0]
    return f"{row['dataset']}/{row['model']}/{row['framework']} run {row['run_id']!r}"


def _columns(table: pa.Table) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """Return (metric codes, metric names, values, timestamps in ms) as numpy arrays.

    ``names[codes[i]]`` is row i's metric (dictionary encoding: no per-row string work).
    """
    encoded = table.column("metric").combine_chunks().dictionary_encode()
    codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    names = [str(n) for n in encoded.dictionary.to_pylist()]
    value = np.asarray(table.column("value").to_numpy(zero_copy_only=False), dtype=np.float64)
    ts_col = table.column("timestamp").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    ts = np.asarray(ts_col.to_numpy(zero_copy_only=False), dtype=np.int64)
    return codes, names, value, ts


def summarize_run(table: pa.Table, *, gpus: int = 1, device: Device = "gpu") -> RunSummary:
    """Condense one run's HISTORY_SCHEMA rows into a RunSummary (spec in module docstring).

    Args:
        table: rows of exactly one run (one ``run_id`` of one workload), any order.
        gpus: GPUs of the run's pod (``gpu_hours = duration_s / 3600 * gpus``).
        device: ``cpu`` for a workload that trains without a GPU: its CPU and memory stand
            in for the GPU's utilization and memory, and ``gpus`` must be 1 (the pod).

    Returns:
        The run's summary.

    Raises:
        TelemetryError: the table is not one run in the history schema.
        MissingMetricError: a required metric has no sample.
        NonFiniteMetricError: a required metric has a NaN or infinite sample.
    """
    _check_columns(table)
    label = _run_label(table)
    if table.num_rows == 0:
        raise MissingMetricError(
            "run table is empty: no samples for the run; check the query window and labels"
        )
    for column in (*PARTITION_COLUMNS, "run_id"):
        distinct = pc.unique(table.column(column)).to_pylist()
        if len(distinct) != 1:
            raise TelemetryError(
                f"summarize_run got rows of several runs ({column} = {distinct[:3]}...); pass "
                "one run's rows, or use summarize_runs for a whole history table"
            )
    if device == "cpu" and gpus != 1:
        raise ValueError(f"a cpu-device run counts its pod as 1 device, got gpus={gpus!r}")
    codes, names, value, ts = _columns(table)
    return _summarize_arrays(codes, names, value, ts, label, _check_gpus(gpus), device)


def _check_gpus(gpus: int) -> int:
    """Return ``gpus`` if it is an integer >= 1, else raise ValueError."""
    if isinstance(gpus, bool) or int(gpus) != gpus or gpus < 1:
        raise ValueError(f"gpus must be an integer >= 1 (GPUs per pod), got {gpus!r}")
    return int(gpus)


def _summarize_arrays(
    codes: np.ndarray,
    names: list[str],
    value: np.ndarray,
    ts: np.ndarray,
    label: str,
    gpus: int,
    device: Device = "gpu",
) -> RunSummary:
    """Summarize one run given its columns as numpy arrays (see :func:`_columns`)."""
    present = set(np.unique(codes).tolist())
    index = {n: i for i, n in enumerate(names) if i in present}
    if device == "cpu":
        # The pod is the accelerator (module docstring): read its CPU and memory instead.
        for gpu_name, pod_name in _CPU_DEVICE_SOURCES.items():
            index.pop(gpu_name, None)
            if pod_name in index:
                index[gpu_name] = index[pod_name]

    def samples(name: str) -> tuple[np.ndarray, np.ndarray] | None:
        i = index.get(name)
        if i is None:
            return None
        mask = codes == i
        return value[mask], ts[mask]

    status = samples("run_status")
    if status is None:
        raise MissingMetricError(
            f"{label}: no 'run_status' samples; the workload must export "
            "jpo_training_run_status (jpo.telemetry.exporter.TrainingExporter.finish)"
        )
    status_value = float(status[0][int(np.argmax(status[1]))])
    if not math.isfinite(status_value) or int(status_value) not in _FAILURE_BY_STATUS:
        raise NonFiniteMetricError(
            f"{label}: run_status ended at {status_value!r}, not one of "
            f"{sorted(_FAILURE_BY_STATUS)} (jpo.telemetry.schema.RUN_STATUS_CODES)"
        )
    failure = _FAILURE_BY_STATUS[int(status_value)]
    failed = failure != "none"

    stats: dict[str, float] = {}
    for name in UTILIZATION_METRICS:
        got = samples(name)
        if got is None:
            raise MissingMetricError(
                f"{label}: no '{name}' samples ({_METRIC_HINT[name]}); a utilization is "
                "never assumed to be 0",
                metric=name,
            )
        vals = got[0]
        _require_finite(vals, name, label)
        stats[f"{name}_mean"] = float(np.mean(vals))
        stats[f"{name}_p95"] = float(np.percentile(vals, 95.0))

    duration_s = _duration_s(samples("elapsed_s"), ts, label)
    thr = samples("throughput")
    counter = samples("samples_total")
    if counter is not None and counter[0].size and duration_s > 0:
        _require_finite(counter[0], "samples_total", label)
        throughput = _counter_total(counter[0], counter[1]) / duration_s
    elif thr is None:
        if not failed:
            raise MissingMetricError(
                f"{label}: no 'throughput' samples; the workload must export "
                "jpo_training_throughput_samples_per_second"
            )
        throughput = 0.0
    else:
        _require_finite(thr[0], "throughput", label)
        throughput = float(np.mean(thr[0]))

    loss = samples("val_loss")
    if loss is None:
        if not failed:
            raise MissingMetricError(
                f"{label}: no 'val_loss' samples; the workload must export "
                "jpo_training_validation_loss"
            )
        final_val_loss = math.inf
    else:
        final_val_loss = float(loss[0][int(np.argmax(loss[1]))])
        if not math.isfinite(final_val_loss):
            if not failed:
                raise NonFiniteMetricError(
                    f"{label}: final val_loss is {final_val_loss!r} but run_status says the "
                    "run succeeded; check the exporter"
                )
            final_val_loss = math.inf

    return RunSummary(
        cpu_util_mean=stats["cpu_util_mean"],
        cpu_util_p95=stats["cpu_util_p95"],
        mem_util_mean=stats["mem_util_mean"],
        mem_util_p95=stats["mem_util_p95"],
        gpu_util_mean=stats["gpu_util_mean"],
        gpu_util_p95=stats["gpu_util_p95"],
        gpu_mem_util_mean=stats["gpu_mem_util_mean"],
        gpu_mem_util_p95=stats["gpu_mem_util_p95"],
        throughput=throughput,
        final_val_loss=final_val_loss,
        duration_s=duration_s,
        gpu_hours=duration_s / 3600.0 * gpus,
        failure=failure,
    )


def _duration_s(elapsed: tuple[np.ndarray, np.ndarray] | None, ts: np.ndarray, label: str) -> float:
    """The run's duration: its exported training time when present, else the samples' span."""
    if elapsed is not None and elapsed[0].size:
        _require_finite(elapsed[0], "elapsed_s", label)
        return float(max(np.max(elapsed[0]), 0.0))
    return float(ts.max() - ts.min()) / 1000.0


def _counter_total(values: np.ndarray, ts: np.ndarray) -> float:
    """Return what a counter that started at 0 with the run counted (restarts included)."""
    v = values[np.argsort(ts, kind="stable")]
    steps = np.diff(v)
    # After a restart the counter starts from 0 again: its new value is all new progress.
    return float(v[0] + np.where(steps >= 0, steps, v[1:]).sum())


_METRIC_HINT = {
    "cpu_util": "container_cpu_usage_seconds_total / CPU limit",
    "mem_util": "container_memory_working_set_bytes / memory limit",
    "gpu_util": "DCGM_FI_DEV_GPU_UTIL",
    "gpu_mem_util": "DCGM_FI_DEV_FB_USED / (FB_USED + FB_FREE)",
}


def _require_finite(vals: np.ndarray, name: str, label: str) -> None:
    """Raise NonFiniteMetricError if any sample is NaN or infinite."""
    if not np.all(np.isfinite(vals)):
        bad = int(np.count_nonzero(~np.isfinite(vals)))
        raise NonFiniteMetricError(
            f"{label}: {bad} of {vals.size} '{name}' samples are NaN or infinite; refusing "
            "to summarize untrustworthy data"
        )


def _group_runs(table: pa.Table) -> list[tuple[WorkloadKey, str, np.ndarray]]:
    """Return (key, run_id, row indices) for every run in a history table, sorted."""
    cols = [
        np.asarray(table.column(c).to_numpy(zero_copy_only=False), dtype=object)
        for c in (*PARTITION_COLUMNS, "run_id")
    ]
    joined = np.array(["\x1f".join(parts) for parts in zip(*cols, strict=True)], dtype=object)
    uniq, inverse = np.unique(joined, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
    groups = []
    for i, u in enumerate(uniq):
        dataset, model, framework, run_id = str(u).split("\x1f")
        groups.append(
            (WorkloadKey(dataset, model, framework), run_id, order[bounds[i] : bounds[i + 1]])
        )
    return groups


def summarize_runs(
    table: pa.Table, *, gpus: Mapping[WorkloadKey, int] | int = 1
) -> dict[tuple[WorkloadKey, str], RunSummary]:
    """Summarize every run of a history table with :func:`summarize_run`'s rules.

    Args:
        table: a history table (any number of workloads and runs).
        gpus: GPUs per pod, one number for all workloads or per workload key (default 1).

    Returns:
        ``{(workload key, run_id): summary}``; raises like :func:`summarize_run` on the
        first run that cannot be summarized.
    """
    _check_columns(table)
    codes, names, value, ts = _columns(table)
    out: dict[tuple[WorkloadKey, str], RunSummary] = {}
    for key, run_id, idx in _group_runs(table):
        label = f"{key.dataset}/{key.model}/{key.framework} run {run_id!r}"
        n_gpus = gpus if isinstance(gpus, int) else gpus.get(key, 1)
        out[(key, run_id)] = _summarize_arrays(
            codes[idx], names, value[idx], ts[idx], label, _check_gpus(n_gpus)
        )
    return out


def run_hyperparameters(table: pa.Table) -> Hyperparameters:
    """Return the hyperparameters one run used, from its latest ``hp_<name>`` samples.

    Raises:
        MissingMetricError: an ``hp_<name>`` metric has no finite sample.
    """
    _check_columns(table)
    label = _run_label(table)
    codes, names, value, ts = _columns(table)
    index = {n: i for i, n in enumerate(names)}
    values: dict[str, float | int] = {}
    for name in HYPERPARAMETER_NAMES:
        code = index.get(f"hp_{name}", -1)
        mask = (codes == code) & np.isfinite(value)
        if not mask.any():
            raise MissingMetricError(
                f"{label}: no finite 'hp_{name}' sample; the workload must export "
                "jpo_training_hyperparameter{name=...} (TrainingExporter.set_hyperparameters)"
            )
        values[name] = float(value[mask][int(np.argmax(ts[mask]))])
    return Hyperparameters.from_mapping(values)


# --------------------------------------------------------------------------- observation


def _descriptor_values(framework: str, model_params: float | None) -> tuple[float, ...]:
    """Return the workload-descriptor tail of the observation (indices 18-23)."""
    fw = framework.lower()
    one_hot = [1.0 if fw == f else 0.0 for f in _FRAMEWORKS]
    one_hot.append(0.0 if fw in _FRAMEWORKS else 1.0)
    if model_params is not None and math.isfinite(model_params) and model_params > 0:
        scaled = (math.log10(model_params) - _SPEC["log10_params_center"]) / _SPEC[
            "log10_params_scale"
        ]
        size = (min(max(scaled, -2.0), 2.0), 1.0)
    else:
        size = (0.0, 0.0)
    return (*one_hot, *size)


@dataclass(frozen=True, slots=True)
class WorkloadContext:
    """What the observation needs beyond one run: the workload's history and identity.

    Attributes:
        baseline_throughput: the workload's reference throughput (samples/s, > 0), e.g.
            the median throughput of its recorded runs at their own hyperparameters.
        best_val_loss: the best (lowest) final validation loss the workload has reached;
            ``inf`` when none is known yet.
        previous_failed: whether the run before the summarized one failed.
        framework: the workload's framework label (``pytorch``, ``tensorflow``, ...).
        model_params: the model's parameter count, or None when unknown.
    """

    baseline_throughput: float
    best_val_loss: float = math.inf
    previous_failed: bool = False
    framework: str = ""
    model_params: float | None = None
    descriptors: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.baseline_throughput) and self.baseline_throughput > 0):
            raise ValueError(
                f"WorkloadContext.baseline_throughput must be a finite number > 0 samples/s, "
                f"got {self.baseline_throughput!r}"
            )
        if math.isnan(self.best_val_loss):
            raise ValueError("WorkloadContext.best_val_loss is NaN; use inf when unknown")
        object.__setattr__(
            self, "descriptors", _descriptor_values(self.framework, self.model_params)
        )

    def after(self, summary: RunSummary) -> WorkloadContext:
        """Return the context for the run after ``summary`` (best loss, failure flag)."""
        failed = summary.failure != "none"
        best = self.best_val_loss
        if not failed and summary.final_val_loss < best:
            best = summary.final_val_loss
        return WorkloadContext(
            baseline_throughput=self.baseline_throughput,
            best_val_loss=best,
            previous_failed=failed,
            framework=self.framework,
            model_params=self.model_params,
        )


def context_from_runs(
    summary: RunSummary,
    history: Sequence[RunSummary | None],
    *,
    framework: str,
) -> WorkloadContext:
    """Return the observation's context of ``summary`` given the runs observed before it.

    The ONE definition of the context CI (``jpo suggest``, ``history`` = the runs earlier
    suggestions of the workload were based on) and training (the replay env, ``history``
    = the runs observed earlier in the episode) use:

    - ``baseline_throughput``: median throughput of the history's runs and ``summary``
      with throughput > 0 (1.0 when none has one);
    - ``best_val_loss``: the lowest finite final loss of those runs that did not fail,
      ``summary`` included (``inf`` when none);
    - ``previous_failed``: whether the history's last run failed.
    """
    runs = [r for r in history if r is not None]
    throughputs = [s.throughput for s in [*runs, summary] if s.throughput > 0]
    baseline = statistics.median(throughputs) if throughputs else 1.0
    ok = [s.final_val_loss for s in [*runs, summary] if s.failure == "none"]
    finite = [v for v in ok if math.isfinite(v)]
    return WorkloadContext(
        baseline_throughput=baseline,
        best_val_loss=min(finite) if finite else math.inf,
        previous_failed=bool(runs) and runs[-1].failure != "none",
        framework=framework,
    )


def _clip(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def build_observation(
    summary: RunSummary,
    hp: Hyperparameters,
    constraints: Constraints,
    context: WorkloadContext,
) -> np.ndarray:
    """Return the observation vector (float32, :data:`OBSERVATION_NAMES` order) of a run.

    Args:
        summary: the run, condensed by :func:`summarize_run` (or a response model).
        hp: the hyperparameters the run used.
        constraints: normalizes ``hp`` into [0, 1] per parameter.
        context: the workload's baseline, best loss, previous failure and descriptors.
    """
    u = _UTIL_MAX
    s = summary
    best = context.best_val_loss
    loss = s.final_val_loss
    if not math.isfinite(loss):
        val_rel = _VLR_MAX
    elif math.isfinite(best) and best > 0:
        val_rel = _clip((loss - best) / best, _VLR_MIN, _VLR_MAX)
    else:
        val_rel = 0.0
    head = (
        _clip(s.cpu_util_mean, 0.0, u),
        _clip(s.cpu_util_p95, 0.0, u),
        _clip(s.mem_util_mean, 0.0, u),
        _clip(s.mem_util_p95, 0.0, u),
        _clip(s.gpu_util_mean, 0.0, u),
        _clip(s.gpu_util_p95, 0.0, u),
        _clip(s.gpu_mem_util_mean, 0.0, u),
        _clip(s.gpu_mem_util_p95, 0.0, u),
        _clip(s.throughput / context.baseline_throughput, 0.0, _THR_MAX),
        val_rel,
        *_FAILURE_ONE_HOT[s.failure],
        1.0 if context.previous_failed else 0.0,
    )
    obs = np.empty(len(OBSERVATION_NAMES), dtype=np.float32)
    n_head = len(head)
    n_hp = len(HYPERPARAMETER_NAMES)
    obs[:n_head] = head
    obs[n_head : n_head + n_hp] = constraints.normalize(hp)
    obs[n_head + n_hp :] = context.descriptors
    return obs
