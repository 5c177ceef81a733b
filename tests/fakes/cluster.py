"""A fake Kubernetes cluster for tests: raw series exactly as docs/RAW_METRICS.md names them.

Two ways to get them into a real Prometheus:
- :class:`ClusterExporter` serves them live on ``/metrics`` (cAdvisor-, kube-state-metrics-
  and DCGM-shaped, including pod-level cAdvisor series that must be excluded, a GPU not
  allocated to any pod, and the DCGM ``exported_pod`` form) for Prometheus to scrape;
- :func:`openmetrics_history` writes the same series over a time range as OpenMetrics
  text for ``promtool tsdb create-blocks-from openmetrics`` (backfill).

Each :class:`FakeRun` also knows the canonical values JPO should compute from it
(:meth:`FakeRun.expected`), and :func:`canonical_table` writes those directly as a
HISTORY_SCHEMA table (the "truth" for the Parquet backend).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.samples import Sample

from jpo.telemetry.promql import escape_label_value
from jpo.telemetry.schema import HISTORY_SCHEMA

NAMESPACE = "training"
CONTAINER = "trainer"
GIB = 1024**3


@dataclass(frozen=True)
class FakeRun:
    """One run of a workload: one pod with one training container and some GPUs."""

    dataset: str
    model: str
    framework: str
    run_id: str
    start: float = 0.0
    end: float = 0.0
    cpu_used: float = 2.0  # cores
    cpu_limit: float = 4.0
    mem_used: float = 3 * GIB
    mem_limit: float = 4 * GIB
    gpu_util_pct: tuple[float, ...] = (80.0,)
    fb_used_mib: float = 6000.0
    fb_free_mib: float = 2000.0
    dcgm_exported: bool = False  # DCGM scraped via ServiceMonitor without honor_labels
    throughput: float = 1000.0
    val_loss: float = 0.9
    epochs: int = 10
    status: int = 1
    # The pod label naming the run, as kube-state-metrics exports it after "label_":
    # run_id (JPO's label), job_name (a Kubernetes Job's pods), training_kubeflow_org_job_name
    # (a Kubeflow training job's pods); None: the pod names no run.
    run_label: str | None = "run_id"
    # Whether the run's trainer exports jpo_training_* series (the exporter), run_id labelled.
    exports_training: bool = True
    hyperparameters: dict[str, float] = field(
        default_factory=lambda: {
            "batch_size": 128,
            "learning_rate": 0.01,
            "num_layers": 18,
            "epochs": 10,
        }
    )

    @property
    def pod(self) -> str:
        return f"{self.model}-{self.run_id}"

    def expected(self) -> dict[str, float]:
        """Canonical metric values JPO should compute for this run (constant over time)."""
        total = self.fb_used_mib + self.fb_free_mib
        out = {
            "cpu_util": self.cpu_used / self.cpu_limit,
            "mem_util": self.mem_used / self.mem_limit,
            "throughput": self.throughput,
            "val_loss": self.val_loss,
            "run_status": float(self.status),
        }
        if self.gpu_util_pct:
            out |= {
                "gpu_util": float(np.mean(self.gpu_util_pct)) / 100.0,
                "gpu_mem_util": self.fb_used_mib / total,
                "gpu_mem_used_mib": self.fb_used_mib,
                "gpu_mem_total_mib": total,
            }
        out |= {f"hp_{k}": float(v) for k, v in self.hyperparameters.items()}
        return out


def _gpu_labels(run: FakeRun, i: int) -> dict[str, str]:
    labels = {
        "gpu": str(i),
        "UUID": f"GPU-{run.run_id}-{i}",
        "modelName": "NVIDIA A100-SXM4-40GB",
        "Hostname": "node-1",
    }
    if run.dcgm_exported:
        labels |= {
            "namespace": "gpu-operator",
            "pod": "nvidia-dcgm-exporter-abcde",
            "container": "nvidia-dcgm-exporter",
            "exported_namespace": NAMESPACE,
            "exported_pod": run.pod,
            "exported_container": CONTAINER,
        }
    else:
        labels |= {"namespace": NAMESPACE, "pod": run.pod, "container": CONTAINER}
    return labels


def raw_samples(run: FakeRun, elapsed_s: float) -> Iterator[tuple[str, dict[str, str], float]]:
    """Yield (series name, labels, value) of every raw series of ``run`` at ``elapsed_s``."""
    pod = {"namespace": NAMESPACE, "pod": run.pod}
    cont = pod | {"container": CONTAINER}
    cpu_s = run.cpu_used * elapsed_s
    yield "container_cpu_usage_seconds_total", cont, cpu_s
    # Pod-level cAdvisor series: must not be counted (they would double the usage).
    yield "container_cpu_usage_seconds_total", pod | {"container": ""}, cpu_s * 1.01
    yield "container_cpu_usage_seconds_total", pod | {"container": "POD"}, 0.01 * elapsed_s
    yield "container_memory_working_set_bytes", cont, run.mem_used
    yield "container_memory_working_set_bytes", pod | {"container": ""}, run.mem_used * 1.05
    yield "container_memory_working_set_bytes", pod | {"container": "POD"}, 700_000.0
    limits = "kube_pod_container_resource_limits"
    yield limits, cont | {"resource": "cpu", "unit": "core"}, run.cpu_limit
    yield limits, cont | {"resource": "memory", "unit": "byte"}, run.mem_limit
    if run.gpu_util_pct:
        gpus = float(len(run.gpu_util_pct))
        yield limits, cont | {"resource": "nvidia_com_gpu", "unit": "integer"}, gpus
    pod_labels = {
        "label_dataset": run.dataset,
        "label_model": run.model,
        "label_framework": run.framework,
    }
    if run.run_label is not None:
        pod_labels[f"label_{run.run_label}"] = run.run_id
    yield "kube_pod_labels", pod | pod_labels, 1.0
    for i, util in enumerate(run.gpu_util_pct):
        labels = _gpu_labels(run, i)
        yield "DCGM_FI_DEV_GPU_UTIL", labels, util
        yield "DCGM_FI_DEV_FB_USED", labels, run.fb_used_mib
        yield "DCGM_FI_DEV_FB_FREE", labels, run.fb_free_mib
    if not run.exports_training:
        return
    train = {
        "dataset": run.dataset,
        "model": run.model,
        "framework": run.framework,
        "run_id": run.run_id,
    }
    duration = max(run.end - run.start, 1.0)
    yield "jpo_training_throughput_samples_per_second", train, run.throughput
    yield "jpo_training_validation_loss", train, run.val_loss
    yield (
        "jpo_training_epoch",
        train,
        float(min(run.epochs, int(elapsed_s / duration * run.epochs))),
    )
    yield "jpo_training_run_status", train, float(run.status)
    for name, value in run.hyperparameters.items():
        yield "jpo_training_hyperparameter", train | {"name": name}, float(value)


def idle_gpu_samples() -> Iterator[tuple[str, dict[str, str], float]]:
    """A GPU allocated to no pod (empty pod label): must join no workload."""
    labels = {"gpu": "7", "UUID": "GPU-idle", "modelName": "NVIDIA A100", "Hostname": "node-1"}
    labels |= {"namespace": "", "pod": "", "container": ""}
    yield "DCGM_FI_DEV_GPU_UTIL", labels, 100.0
    yield "DCGM_FI_DEV_FB_USED", labels, 40000.0
    yield "DCGM_FI_DEV_FB_FREE", labels, 0.0


COUNTERS = {"container_cpu_usage_seconds_total"}


class _Collector:
    def __init__(self, exporter: ClusterExporter) -> None:
        self.exporter = exporter

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        now = time.time()
        with self.exporter.lock:
            runs = list(self.exporter.runs)
        samples = [s for run in runs for s in raw_samples(run, now - self.exporter.t0)]
        samples += list(idle_gpu_samples())
        for name, labels, value in samples:
            if name not in families:
                if name in COUNTERS:
                    families[name] = CounterMetricFamily(
                        name.removesuffix("_total"), name, labels=[]
                    )
                else:
                    families[name] = GaugeMetricFamily(name, name, labels=[])
            families[name].samples.append(Sample(name, dict(labels), value, None, None))
        return list(families.values())


class ClusterExporter:
    """Serves the raw series of some live runs on ``http://127.0.0.1:<port>/metrics``."""

    def __init__(self, runs: Iterable[FakeRun] = ()) -> None:
        self.runs = list(runs)
        self.lock = threading.Lock()
        self.t0 = time.time()
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))  # type: ignore[arg-type]
        self.server, self.thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.port = self.server.server_port
        self.address = f"127.0.0.1:{self.port}"

    def add(self, run: FakeRun) -> None:
        with self.lock:
            self.runs.append(run)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _om_labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f"{k}={escape_label_value(v)}" for k, v in sorted(labels.items())) + "}"


def openmetrics_history(runs: Iterable[FakeRun], step_s: float = 15.0) -> str:
    """Return OpenMetrics text of every raw series of ``runs`` between their start and end."""
    by_name: dict[str, list[str]] = {}
    for run in runs:
        times = np.arange(run.start, run.end + step_s / 2, step_s)
        lines: dict[tuple[str, str], list[str]] = {}
        for t in times:
            for name, labels, value in raw_samples(run, t - run.start):
                lines.setdefault((name, _om_labels(labels)), []).append(f"{float(value)!r} {t:.3f}")
        for (name, labels), points in lines.items():
            by_name.setdefault(name, []).extend(f"{name}{labels} {p}" for p in points)
    out = []
    for name, lines_ in by_name.items():
        kind = "counter" if name in COUNTERS else "gauge"
        out.append(f"# TYPE {name.removesuffix('_total') if kind == 'counter' else name} {kind}")
        out.extend(lines_)
    out.append("# EOF")
    return "\n".join(out) + "\n"


def canonical_table(runs: Iterable[FakeRun], step_s: float = 15.0) -> pa.Table:
    """Return the canonical HISTORY_SCHEMA rows JPO should derive from ``runs``."""
    cols: dict[str, list] = {n: [] for n in HISTORY_SCHEMA.names}
    for run in runs:
        times = np.arange(run.start, run.end + step_s / 2, step_s)
        for metric, value in run.expected().items():
            for t in times:
                cols["timestamp"].append(int(np.rint(t * 1000)))
                cols["dataset"].append(run.dataset)
                cols["model"].append(run.model)
                cols["framework"].append(run.framework)
                cols["run_id"].append(run.run_id)
                cols["metric"].append(metric)
                cols["value"].append(value)
    table = pa.table(
        {
            **cols,
            "timestamp": pa.array(cols["timestamp"], pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        }
    )
    return table.select(HISTORY_SCHEMA.names).cast(HISTORY_SCHEMA)
