"""History generation: many past runs of catalog workloads, fast, in two forms.

- **Parquet** in the history store layout (``jpo.telemetry.history.append_history``: hive
  partitions by dataset/model/framework, HISTORY_SCHEMA rows), for training replay.
- **OpenMetrics text** with the RAW series of docs/RAW_METRICS.md (cAdvisor,
  kube-state-metrics, DCGM, ``jpo_training_*``), timestamps in seconds and ``# EOF``, so
  that ``promtool tsdb create-blocks-from openmetrics FILE DATA_DIR`` backfills them into
  a real Prometheus and ``jpo history pull`` reads the same runs back.

The raw series of one run are derived from its canonical series (:func:`raw_families`);
the live exporter (:mod:`jpo.sim.live`) serves the same families one instant at a time.
Past runs' hyperparameters vary around each workload's defaults as configured in
``configs/cluster.toml`` ``[history]``, clamped into ``configs/constraints.toml``.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any

import numpy as np
from pydantic import ConfigDict, Field

from jpo.errors import ConfigError
from jpo.settings import Settings, config_file, read_config, validate_settings
from jpo.sim.response import (
    ClusterConditions,
    SimulatedRun,
    WorkloadProfile,
    history_table,
    load_conditions,
    load_profile,
    predict,
    simulate_run,
)
from jpo.workload.types import Hyperparameters

NAMESPACE = "training"
CONTAINER = "trainer"
HOSTNAME = "sim-node"
RUNS_MANIFEST = "_simulated_runs.jsonl"
"""Per-run ground truth (profile, hyperparameters, summary) written beside the Parquet."""


@dataclass(frozen=True, slots=True)
class HistorySettings:
    """The ``[history]`` table of configs/cluster.toml (see the comments there)."""

    default_share: float
    batch_log2_sd: float
    lr_log_sd: float
    layers_rel_sd: float
    epochs_rel_sd: float
    gap_s: float
    scrape_interval_s: float


class _HistoryTable(Settings):
    """``[history]`` of cluster.toml: numbers >= 0 (scrape_interval_s > 0)."""

    model_config = ConfigDict(strict=True)
    default_share: float = Field(ge=0)
    batch_log2_sd: float = Field(ge=0)
    lr_log_sd: float = Field(ge=0)
    layers_rel_sd: float = Field(ge=0)
    epochs_rel_sd: float = Field(ge=0)
    gap_s: float = Field(ge=0)
    scrape_interval_s: float = Field(gt=0)


def load_history_settings(path: str | Path | None = None) -> HistorySettings:
    """Load ``[history]`` from configs/cluster.toml (or ``path``)."""
    file = config_file("cluster.toml", path)
    data = read_config(file)
    if not isinstance(data.get("history"), dict):
        raise ConfigError(f"{file}: missing section [history]; see the shipped cluster.toml")
    table = validate_settings(_HistoryTable, data["history"], file, section="history")
    return HistorySettings(**table.model_dump())


# --------------------------------------------------------------------------- raw series


@dataclass(frozen=True, slots=True)
class Sample:
    """One raw series: its sample name, rendered label set and values per scrape."""

    name: str
    labels: str
    values: np.ndarray


@dataclass(frozen=True, slots=True)
class Family:
    """A metric family (one ``# TYPE``) and its series."""

    name: str
    type: str
    help: str
    samples: tuple[Sample, ...]


def _labels(**labels: str) -> str:
    parts = []
    for k, v in labels.items():
        esc = v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        parts.append(f'{k}="{esc}"')
    return "{" + ",".join(parts) + "}"


def pod_name(run: SimulatedRun) -> str:
    """Return the simulated pod's name, ``<model>-<run_id>`` (docs/RAW_METRICS.md)."""
    return f"{run.profile.model}-{run.run_id}".replace("_", "-").lower()


def raw_families(run: SimulatedRun) -> list[Family]:
    """Return the raw Prometheus series of one run, aligned with ``run.times_s``.

    cAdvisor's CPU counter integrates the cores used between scrapes, so that
    ``rate()`` over two scrapes gives back that interval's CPU utilization x limit.
    """
    p, s, lim = run.profile, run.series, run.profile.limits
    k = run.times_s.size
    pod = pod_name(run)
    ns = NAMESPACE
    ctr = CONTAINER
    cores = s["cpu_util"] * lim.cpu_cores
    dt = np.diff(run.times_s, prepend=run.times_s[0])
    cpu_counter = np.cumsum(cores * dt)
    ones = np.ones(k)
    pod_l = {"namespace": ns, "pod": pod, "container": ctr}
    train_l = {
        "dataset": p.dataset,
        "model": p.model,
        "framework": p.framework,
        "run_id": run.run_id,
    }
    gpus = [
        {
            "gpu": str(i),
            "UUID": f"GPU-{zlib.crc32(f'{pod}/{i}'.encode()):08x}-sim",
            "modelName": lim.gpu_model,
            "Hostname": HOSTNAME,
            **pod_l,
        }
        for i in range(lim.gpus)
    ]
    fb_used = s["gpu_mem_used_mib"]
    fb_free = s["gpu_mem_total_mib"] - fb_used
    hp_names = ("batch_size", "learning_rate", "num_layers", "epochs")
    return [
        Family(
            "container_cpu_usage_seconds",
            "counter",
            "Cumulative cpu time consumed in seconds.",
            (Sample("container_cpu_usage_seconds_total", _labels(**pod_l), cpu_counter),),
        ),
        Family(
            "container_memory_working_set_bytes",
            "gauge",
            "Current working set in bytes.",
            (
                Sample(
                    "container_memory_working_set_bytes",
                    _labels(**pod_l),
                    np.round(s["mem_util"] * lim.memory_bytes),
                ),
            ),
        ),
        Family(
            "kube_pod_container_resource_limits",
            "gauge",
            "The number of requested limit resource by a container.",
            tuple(
                Sample(
                    "kube_pod_container_resource_limits",
                    _labels(**pod_l, resource=res, unit=unit),
                    ones * val,
                )
                for res, unit, val in (
                    ("cpu", "core", lim.cpu_cores),
                    ("memory", "byte", lim.memory_bytes),
                    ("nvidia_com_gpu", "integer", float(lim.gpus)),
                )
            ),
        ),
        Family(
            "kube_pod_labels",
            "gauge",
            "Kubernetes labels converted to Prometheus labels.",
            (
                Sample(
                    "kube_pod_labels",
                    _labels(
                        namespace=ns,
                        pod=pod,
                        label_dataset=p.dataset,
                        label_model=p.model,
                        label_framework=p.framework,
                        label_run_id=run.run_id,
                    ),
                    ones,
                ),
            ),
        ),
        Family(
            "DCGM_FI_DEV_GPU_UTIL",
            "gauge",
            "GPU utilization (in %).",
            tuple(
                Sample("DCGM_FI_DEV_GPU_UTIL", _labels(**g), s["gpu_util"] * 100.0) for g in gpus
            ),
        ),
        Family(
            "DCGM_FI_DEV_FB_USED",
            "gauge",
            "Framebuffer memory used (in MiB).",
            tuple(Sample("DCGM_FI_DEV_FB_USED", _labels(**g), fb_used) for g in gpus),
        ),
        Family(
            "DCGM_FI_DEV_FB_FREE",
            "gauge",
            "Framebuffer memory free (in MiB).",
            tuple(Sample("DCGM_FI_DEV_FB_FREE", _labels(**g), fb_free) for g in gpus),
        ),
        Family(
            "jpo_training_throughput_samples_per_second",
            "gauge",
            "Training samples per second.",
            (
                Sample(
                    "jpo_training_throughput_samples_per_second",
                    _labels(**train_l),
                    s["throughput"],
                ),
            ),
        ),
        Family(
            "jpo_training_samples",
            "counter",
            "Training samples processed since the run started.",
            (Sample("jpo_training_samples_total", _labels(**train_l), s["samples_total"]),),
        ),
        Family(
            "jpo_training_validation_loss",
            "gauge",
            "Validation loss after the latest epoch.",
            (Sample("jpo_training_validation_loss", _labels(**train_l), s["val_loss"]),),
        ),
        Family(
            "jpo_training_epoch",
            "gauge",
            "Epochs completed.",
            (Sample("jpo_training_epoch", _labels(**train_l), s["epoch"]),),
        ),
        Family(
            "jpo_training_elapsed_seconds",
            "gauge",
            "Seconds the run has trained since it started (the workload's own clock).",
            (Sample("jpo_training_elapsed_seconds", _labels(**train_l), s["elapsed_s"]),),
        ),
        Family(
            "jpo_training_hyperparameter",
            "gauge",
            "Hyperparameter value the run uses.",
            tuple(
                Sample("jpo_training_hyperparameter", _labels(**train_l, name=n), s[f"hp_{n}"])
                for n in hp_names
            ),
        ),
        Family(
            "jpo_training_run_status",
            "gauge",
            "0 running, 1 succeeded, 2 failed OOM, 3 failed diverged, 4 failed other.",
            (Sample("jpo_training_run_status", _labels(**train_l), s["run_status"]),),
        ),
    ]


def format_value(v: float) -> str:
    """Format a sample value exactly (shortest repr that round-trips)."""
    return repr(float(v))


def write_openmetrics(runs: Iterable[SimulatedRun], out: IO[str]) -> int:
    """Write the raw series of ``runs`` as one OpenMetrics text; return the sample count.

    Families are not interleaved (OpenMetrics requires it); within a series samples are
    in time order; timestamps are seconds with millisecond precision; ends with ``# EOF``.
    """
    runs = list(runs)
    per_run = [raw_families(r) for r in runs]
    count = 0
    if not per_run:
        out.write("# EOF\n")
        return 0
    for f_idx, family in enumerate(per_run[0]):
        out.write(f"# HELP {family.name} {family.help}\n# TYPE {family.name} {family.type}\n")
        for run, fams in zip(runs, per_run, strict=True):
            ts = [f"{t:.3f}" for t in run.times_s.tolist()]
            for sample in fams[f_idx].samples:
                head = sample.name + sample.labels + " "
                vals = sample.values.tolist()
                out.write("".join(f"{head}{v!r} {t}\n" for v, t in zip(vals, ts, strict=True)))
                count += len(vals)
    out.write("# EOF\n")
    return count


# --------------------------------------------------------------------------- history


def vary_hyperparameters(
    profile: WorkloadProfile, rng: np.random.Generator, settings: HistorySettings
) -> Hyperparameters:
    """Draw a past run's hyperparameters around the defaults, clamped to the constraints."""
    d = profile.defaults
    if rng.random() < settings.default_share:
        return d
    proposed = {
        "batch_size": d.batch_size * 2.0 ** round(rng.normal(0.0, settings.batch_log2_sd)),
        "learning_rate": d.learning_rate * math.exp(rng.normal(0.0, settings.lr_log_sd)),
        "num_layers": d.num_layers * (1.0 + rng.normal(0.0, settings.layers_rel_sd)),
        "epochs": d.epochs * (1.0 + rng.normal(0.0, settings.epochs_rel_sd)),
    }
    from jpo.workload.constraints import load_constraints

    return load_constraints().clamp(d, proposed)


@dataclass(frozen=True, slots=True)
class GeneratedHistory:
    """What :func:`generate_history` wrote."""

    runs: tuple[SimulatedRun, ...]
    parquet_rows: int
    openmetrics_samples: int
    seconds: float


def shift_run(run: SimulatedRun, delta_s: float) -> SimulatedRun:
    """Return ``run`` moved by ``delta_s`` seconds (same series, new timestamps)."""
    times = run.times_s + delta_s
    table = history_table(run.profile.key, run.run_id, times, run.series)
    return replace(run, times_s=times, table=table)


def generate_runs(
    workloads: Sequence[str | WorkloadProfile],
    runs: int,
    *,
    seed: int = 0,
    conditions: ClusterConditions | None = None,
    settings: HistorySettings | None = None,
    start: float | None = None,
    end: float | None = None,
    max_samples_per_run: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[SimulatedRun]:
    """Simulate ``runs`` consecutive past runs of each workload (deterministic in ``seed``).

    Each workload's runs follow each other with ``[history].gap_s`` between them, from
    ``start`` on; without ``start``, each workload's last run ends ``gap_s`` before ``end``
    (default: now). With both ``start`` and ``end``, every run lies within [start, end]:
    the gaps shrink when the runs would overrun ``end`` (ConfigError when the runs alone do
    not fit). Timestamps sit on the scrape grid (multiples of the interval). With
    ``max_samples_per_run`` > 0, a run longer than that many scrapes is sampled every k-th
    scrape instead (:func:`run_scrape_interval`); shorter runs are unchanged. ``progress``
    is called with the number of workloads done after each one.
    """
    profiles = [w if isinstance(w, WorkloadProfile) else load_profile(w) for w in workloads]
    cond = conditions if conditions is not None else load_conditions()
    hs = settings if settings is not None else load_history_settings()
    dt = hs.scrape_interval_s
    out: list[SimulatedRun] = []
    for w_idx, profile in enumerate(profiles):
        hp_rng = np.random.default_rng([seed, w_idx, 0])  # hyperparameters of past runs
        rng = np.random.default_rng([seed, w_idx, 1])  # contention and measurement noise
        t = math.ceil(start / dt) * dt if start is not None else 0.0
        first = len(out)
        for i in range(runs):
            hp = vary_hyperparameters(profile, hp_rng, hs)
            run = simulate_run(
                profile,
                hp,
                cond,
                rng=rng,
                run_id=f"sim{seed}-{i:04d}",
                start=t,
                scrape_interval_s=run_scrape_interval(profile, hp, cond, dt, max_samples_per_run),
            )
            out.append(run)
            t = math.ceil((t + run.summary.duration_s + hs.gap_s) / dt) * dt
        if start is None and len(out) > first:
            last_end = float(out[-1].times_s[-1])
            stop = end if end is not None else time.time()
            delta = math.floor((stop - hs.gap_s - last_end) / dt) * dt
            out[first:] = [shift_run(r, delta) for r in out[first:]]
        elif start is not None and end is not None and len(out) > first:
            out[first:] = _fit_into(out[first:], end, dt, profile.name)
        if progress is not None:
            progress(w_idx + 1)
    return out


def run_scrape_interval(
    profile: WorkloadProfile,
    hp: Hyperparameters,
    conditions: ClusterConditions,
    scrape_interval_s: float,
    max_samples: int,
) -> float:
    """Return the scrape interval, widened to a multiple that keeps a run under ``max_samples``.

    ``max_samples`` = 0 keeps the interval. A 14-day run scraped every 15 s is ~80,000
    scrapes per series; its summary (means and p95s) needs far fewer, and the memory of a
    replay grows with every one.
    """
    if max_samples <= 0:
        return scrape_interval_s
    duration = predict(profile, hp, conditions).duration_s
    k = max(1, math.ceil(duration / (scrape_interval_s * max_samples)))
    return scrape_interval_s * k


def _fit_into(runs: list[SimulatedRun], end: float, dt: float, name: str) -> list[SimulatedRun]:
    """Move runs laid out from their first start so that the last sample is <= ``end``.

    The runs keep their order and lengths; the gaps between them shrink evenly (on the
    scrape grid). Raises ConfigError when the runs alone are longer than the window.
    """
    t0 = float(runs[0].times_s[0])
    if float(runs[-1].times_s[-1]) <= end:
        return runs
    spans = [float(r.times_s[-1] - r.times_s[0]) for r in runs]
    slots = math.floor((end - t0) / dt) - sum(round(span / dt) for span in spans)
    # each run after the first needs at least one scrape interval after the previous one
    gap_slots = (slots - (len(runs) - 1)) // max(len(runs) - 1, 1)
    if slots < 0 or (len(runs) > 1 and gap_slots < 0):
        need_h = (sum(spans) + dt * (len(runs) - 1)) / 3600.0
        raise ConfigError(
            f"{len(runs)} simulated run(s) of {name} need at least {need_h:.1f} h, but the "
            f"window from start to end holds {(end - t0) / 3600.0:.1f} h: move start "
            "earlier or end later, or ask for fewer runs"
        )
    fitted = []
    t = t0
    for run, span in zip(runs, spans, strict=True):
        fitted.append(shift_run(run, t - float(run.times_s[0])))
        t += (round(span / dt) + 1 + gap_slots) * dt
    return fitted


def write_manifest(runs: Iterable[SimulatedRun], path: Path) -> None:
    """Append one JSON line per run: workload, run id, hyperparameters, true summary."""
    with path.open("a", encoding="utf-8") as f:
        for r in runs:
            rec = {
                "workload": r.profile.name,
                "dataset": r.profile.dataset,
                "model": r.profile.model,
                "framework": r.profile.framework,
                "run_id": r.run_id,
                "start": float(r.times_s[0]),
                "hyperparameters": r.hp.as_dict(),
                "summary": asdict(r.summary),
            }
            f.write(json.dumps(rec) + "\n")


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """Read the per-run ground truth written by :func:`generate_history`."""
    file = Path(path)
    if file.is_dir():
        file = file / RUNS_MANIFEST
    return [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line]


def generate_history(
    workloads: Sequence[str | WorkloadProfile],
    runs: int,
    out: str | Path,
    *,
    openmetrics: str | Path | None = None,
    seed: int = 0,
    conditions: ClusterConditions | None = None,
    start: float | None = None,
    end: float | None = None,
) -> GeneratedHistory:
    """Generate runs and write them as Parquet under ``out`` (and OpenMetrics if asked)."""
    t0 = time.perf_counter()
    sim = generate_runs(workloads, runs, seed=seed, conditions=conditions, start=start, end=end)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    rows = write_parquet(sim, root)
    write_manifest(sim, root / RUNS_MANIFEST)
    samples = 0
    if openmetrics is not None:
        om = Path(openmetrics)
        om.parent.mkdir(parents=True, exist_ok=True)
        with om.open("w", encoding="utf-8") as f:
            samples = write_openmetrics(sim, f)
    return GeneratedHistory(tuple(sim), rows, samples, time.perf_counter() - t0)


def write_parquet(runs: Sequence[SimulatedRun], root: Path) -> int:
    """Append the runs' tables to the history store at ``root``; return rows written."""
    import pyarrow as pa

    from jpo.telemetry.history import append_history

    if not runs:
        return 0
    return append_history(root, pa.concat_tables([r.table for r in runs]))
