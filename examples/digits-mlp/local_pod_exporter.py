"""A "local pod" exporter: one process's CPU and memory under cAdvisor's metric names.

On Kubernetes, cAdvisor (kubelet) reports a training container's CPU and memory and
kube-state-metrics its pod labels and resource limits. On a laptop there is no kubelet,
so this module plays both roles for ONE local process, with the series names and labels
of docs/RAW_METRICS.md:

* ``container_cpu_usage_seconds_total{namespace, pod, container}`` -- the process's user +
  system CPU seconds (``/proc/<pid>/stat`` fields utime and stime, children included);
* ``container_memory_working_set_bytes{namespace, pod, container}`` -- its resident set
  (``/proc/<pid>/status`` VmRSS), the closest per-process analogue of the working set;
* ``kube_pod_container_resource_limits{namespace, pod, container, resource, unit}`` -- the
  CPU (cores) and memory (bytes) "limits" the caller declares for it;
* ``kube_pod_labels{namespace, pod, label_dataset, label_model, label_framework,
  label_run_id}`` = 1.

There is no GPU and no DCGM series: a CPU-only workload exposes none, as on a real
cluster. Linux only (reads ``/proc``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

NAMESPACE = "training"
CONTAINER = "trainer"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class LocalPod:
    """The identity and declared limits of the local "pod" (one process)."""

    pid: int
    dataset: str
    model: str
    framework: str
    run_id: str
    cpu_limit_cores: float
    memory_limit_bytes: float

    @property
    def pod(self) -> str:
        """Pod name as simulated pods use it: ``<model>-<run_id>``."""
        return f"{self.model}-{self.run_id}"


def cpu_seconds(pid: int) -> float:
    """Return the CPU seconds (user + system, waited-for children included) of ``pid``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # the command name (field 2) may contain spaces: split after its closing parenthesis
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return (utime + stime + cutime + cstime) / _CLK_TCK


def resident_bytes(pid: int) -> float:
    """Return the resident set size of ``pid`` in bytes (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) * 1024.0
    return 0.0


class LocalPodCollector:
    """A prometheus_client collector exposing local pods (processes), like a node would.

    As on Kubernetes, a pod whose process has ended stays "Completed": kube-state-metrics
    keeps exporting its labels and limits, while cAdvisor's CPU and memory series stop.
    """

    def __init__(self, pods: list[LocalPod] | None = None) -> None:
        self.pods: list[LocalPod] = list(pods or [])

    def add(self, pod: LocalPod) -> None:
        """Start exposing ``pod`` (e.g. right after its process was started)."""
        self.pods.append(pod)

    def collect(self) -> Iterator[object]:
        """Yield the four metric families for every pod."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        cpu = CounterMetricFamily(
            "container_cpu_usage_seconds_total",
            "Cumulative cpu time consumed in seconds.",
            labels=["namespace", "pod", "container"],
        )
        mem = GaugeMetricFamily(
            "container_memory_working_set_bytes",
            "Current working set in bytes.",
            labels=["namespace", "pod", "container"],
        )
        limits = GaugeMetricFamily(
            "kube_pod_container_resource_limits",
            "The number of requested limit resource by a container.",
            labels=["namespace", "pod", "container", "resource", "unit"],
        )
        labels = GaugeMetricFamily(
            "kube_pod_labels",
            "Kubernetes labels converted to Prometheus labels.",
            labels=[
                "namespace",
                "pod",
                "label_dataset",
                "label_model",
                "label_framework",
                "label_run_id",
            ],
        )
        for p in list(self.pods):
            base = [NAMESPACE, p.pod, CONTAINER]
            try:
                cpu_s, rss = cpu_seconds(p.pid), resident_bytes(p.pid)
            except (OSError, ValueError):
                pass  # the process is gone: no sample rather than a false 0
            else:
                cpu.add_metric(base, cpu_s)
                mem.add_metric(base, rss)
            limits.add_metric([*base, "cpu", "core"], p.cpu_limit_cores)
            limits.add_metric([*base, "memory", "byte"], p.memory_limit_bytes)
            labels.add_metric([NAMESPACE, p.pod, p.dataset, p.model, p.framework, p.run_id], 1.0)
        yield cpu
        yield mem
        yield limits
        yield labels


def serve(collector: LocalPodCollector, port: int, addr: str = "127.0.0.1") -> object:
    """Expose ``collector`` on ``http://addr:port/metrics`` from a daemon thread."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)  # type: ignore[arg-type]
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server
