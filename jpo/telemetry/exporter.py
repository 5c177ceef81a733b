"""Training-metrics helper: expose throughput, validation loss and epoch for JPO to learn from.

A training script adds a few lines; Prometheus scrapes the pod's ``/metrics`` endpoint
(e.g. through a PodMonitor) and JPO reads the series named in docs/RAW_METRICS.md, all
labelled with the workload's ``dataset``, ``model``, ``framework`` and ``run_id``::

    from jpo.telemetry.exporter import TrainingExporter
    from jpo.workload.types import Hyperparameters

    exporter = TrainingExporter("cifar10", "resnet18", "pytorch", run_id=os.environ["RUN_ID"],
                                port=9400)
    exporter.start()                                   # serves http://0.0.0.0:9400/metrics
    exporter.set_hyperparameters(Hyperparameters(128, 0.01, 18, 30))
    for epoch in range(30):
        samples, seconds = train_one_epoch()
        exporter.report(throughput=samples / seconds, samples=samples,
                        val_loss=evaluate(), epoch=epoch + 1)
    exporter.finish("ok")                              # or "oom", "diverged", "failed"
    exporter.stop()                                    # after the final status was scraped

Series: ``jpo_training_throughput_samples_per_second``, ``jpo_training_samples_total`` (a
counter of the samples trained on: JPO takes a run's throughput from its increase over
the run, exact however few scrapes a short run gets), ``jpo_training_validation_loss``,
``jpo_training_epoch``, ``jpo_training_elapsed_seconds`` (seconds since the exporter was
created, read at every scrape and frozen by :meth:`TrainingExporter.finish`: JPO takes it
as the run's duration and GPU-hours), ``jpo_training_hyperparameter{name=...}`` and
``jpo_training_run_status`` (codes in :data:`jpo.telemetry.schema.RUN_STATUS_CODES`). A value
that is
not a finite number is refused (JPO never learns from NaN).

Prometheus must scrape the final status once, or the run looks unfinished forever and the
CI stage never tunes from it. So :meth:`TrainingExporter.stop` (and leaving a ``with``
block) first waits, up to ``final_scrape_timeout_s``, until the registry has been
collected again after :meth:`TrainingExporter.finish`. It returns at once when nothing
ever collected it (a run with no Prometheus around). An exception that escapes a ``with``
block before ``finish()`` ends the run as ``failed`` (``oom`` when
:func:`is_out_of_memory`).
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from jpo.errors import ConfigError
from jpo.telemetry.schema import RUN_STATUS_CODES
from jpo.workload.types import HYPERPARAMETER_NAMES, Hyperparameters

LABELS: tuple[str, ...] = ("dataset", "model", "framework", "run_id")
"""Labels on every training series (the ``training`` label set of configs/metrics.toml)."""

STATUS_BY_NAME: dict[str, int] = {name: code for code, name in RUN_STATUS_CODES.items()}


def _finite(name: str, value: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"TrainingExporter.report: {name}={value!r} is not a number") from err
    if not math.isfinite(number):
        raise ConfigError(
            f"TrainingExporter.report: {name}={value!r} is not finite; report only real"
            " measurements (call finish('diverged') when the loss blew up)"
        )
    return number


class _CollectionCounter:
    """A collector with no series that counts how often its registry is collected (scraped)."""

    def __init__(self) -> None:
        self.collections = 0
        self.changed = threading.Condition()

    def describe(self) -> list[Any]:  # registering must not count as a scrape
        return []

    def collect(self) -> Iterator[Any]:
        with self.changed:
            self.collections += 1
            self.changed.notify_all()
        return iter(())


class TrainingExporter:
    """Publishes one training run's metrics on a ``/metrics`` endpoint.

    Args:
        dataset: workload label (same as the pod label and config.ini).
        model: workload label.
        framework: workload label.
        run_id: this execution's id (same as the pod's ``run_id`` label).
        port: TCP port for :meth:`start`; 0 picks a free one (see :attr:`port`).
        addr: bind address; the default serves every interface, as a pod needs.
        registry: a prometheus_client registry to register in (default: a private one,
            so that two exporters in one process never collide).
        final_scrape_timeout_s: how long :meth:`stop` waits for the scrape that carries
            the final status (default 30 s: two of Prometheus's usual 15 s intervals).
    """

    def __init__(
        self,
        dataset: str,
        model: str,
        framework: str,
        run_id: str,
        *,
        port: int = 0,
        addr: str = "0.0.0.0",  # a pod's exporter must be reachable by Prometheus
        registry: CollectorRegistry | None = None,
        final_scrape_timeout_s: float = 30.0,
    ) -> None:
        values = {"dataset": dataset, "model": model, "framework": framework, "run_id": run_id}
        for name, value in values.items():
            if not isinstance(value, str) or not value:
                raise ConfigError(f"TrainingExporter: {name} must be a non-empty string")
        self.labels = values
        self.port = port
        self.addr = addr
        self.registry = registry if registry is not None else CollectorRegistry()
        if not math.isfinite(final_scrape_timeout_s) or final_scrape_timeout_s < 0:
            raise ConfigError(
                f"TrainingExporter: final_scrape_timeout_s={final_scrape_timeout_s!r} must be"
                " a finite number of seconds >= 0"
            )
        self.final_scrape_timeout_s = float(final_scrape_timeout_s)
        # Registered before the series: a registry collects in registration order, so a
        # collection counted after finish() reads the final status in the same scrape.
        self._counter = _CollectionCounter()
        self.registry.register(self._counter)
        self._finished_at: int | None = None  # collections seen when finish() was called
        names = list(LABELS)
        self._throughput = Gauge(
            "jpo_training_throughput_samples_per_second",
            "Training samples processed per second.",
            names,
            registry=self.registry,
        )
        self._samples = Counter(
            "jpo_training_samples",  # exposed as jpo_training_samples_total
            "Training samples processed since the run started.",
            names,
            registry=self.registry,
        )
        self._samples.labels(**self.labels)  # exported as 0 from the first scrape on
        self._val_loss = Gauge(
            "jpo_training_validation_loss",
            "Validation loss after the latest epoch.",
            names,
            registry=self.registry,
        )
        self._epoch = Gauge(
            "jpo_training_epoch", "Epochs completed.", names, registry=self.registry
        )
        self._elapsed = Gauge(
            "jpo_training_elapsed_seconds",
            "Seconds the run has trained since it started.",
            names,
            registry=self.registry,
        )
        self._started = time.monotonic()
        self._ended: float | None = None  # set by finish(): the clock stops there
        self._elapsed.labels(**self.labels).set_function(self.elapsed_s)
        self._hp = Gauge(
            "jpo_training_hyperparameter",
            "Hyperparameter values this run uses.",
            [*names, "name"],
            registry=self.registry,
        )
        self._status = Gauge(
            "jpo_training_run_status",
            "Run status: 0 running, 1 ok, 2 oom, 3 diverged, 4 failed.",
            names,
            registry=self.registry,
        )
        self._status.labels(**self.labels).set(STATUS_BY_NAME["running"])
        self._server: Any = None

    def start(self) -> TrainingExporter:
        """Serve ``/metrics`` on ``addr:port`` in a daemon thread; return self."""
        if self._server is None:
            server, _thread = start_http_server(self.port, addr=self.addr, registry=self.registry)
            self._server = server
            self.port = int(server.server_port)
        return self

    def stop(self, *, wait_for_final_scrape: bool = True) -> None:
        """Stop serving, after the final status was scraped (see the module docstring)."""
        waiting = self._server is not None and wait_for_final_scrape
        if waiting and not self.wait_for_final_scrape():
            warnings.warn(
                f"TrainingExporter: run {self.labels['run_id']!r} stops serving on port"
                f" {self.port} before Prometheus scraped its final status (waited"
                f" {self.final_scrape_timeout_s:g} s); JPO may see it as unfinished",
                RuntimeWarning,
                stacklevel=2,
            )
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def elapsed_s(self) -> float:
        """Seconds since the exporter was created, until :meth:`finish` (the run's duration)."""
        end = time.monotonic() if self._ended is None else self._ended
        return end - self._started

    def set_hyperparameters(self, hp: Hyperparameters) -> None:
        """Publish the hyperparameters this run uses (``jpo_training_hyperparameter``)."""
        values = hp.as_dict()
        for name in HYPERPARAMETER_NAMES:
            self._hp.labels(**self.labels, name=name).set(_finite(name, values[name]))

    def report(
        self,
        throughput: float | None = None,
        val_loss: float | None = None,
        epoch: float | None = None,
        samples: float | None = None,
    ) -> None:
        """Publish the latest measurements; arguments left None keep their last value.

        ``samples`` is how many training samples were processed since the last call (it
        is added to ``jpo_training_samples_total``).
        """
        if throughput is not None:
            value = _finite("throughput", throughput)
            if value < 0:
                raise ConfigError(f"TrainingExporter.report: throughput={value} is negative")
            self._throughput.labels(**self.labels).set(value)
        if samples is not None:
            done = _finite("samples", samples)
            if done < 0:
                raise ConfigError(f"TrainingExporter.report: samples={done} is negative")
            self._samples.labels(**self.labels).inc(done)
        if val_loss is not None:
            self._val_loss.labels(**self.labels).set(_finite("val_loss", val_loss))
        if epoch is not None:
            self._epoch.labels(**self.labels).set(_finite("epoch", epoch))

    def finish(self, status: str) -> None:
        """Publish the final status: one of ``ok``, ``oom``, ``diverged``, ``failed``."""
        if status not in STATUS_BY_NAME or status == "running":
            allowed = ", ".join(s for s in STATUS_BY_NAME if s != "running")
            raise ConfigError(f"TrainingExporter.finish: status {status!r} is not one of {allowed}")
        with self._counter.changed:
            if self._ended is None:
                self._ended = time.monotonic()
            self._status.labels(**self.labels).set(STATUS_BY_NAME[status])
            self._finished_at = self._counter.collections

    def wait_for_final_scrape(self, timeout_s: float | None = None) -> bool:
        """Wait until the registry was collected after :meth:`finish`; False on timeout.

        True at once when :meth:`finish` was not called or nothing collected the registry
        before it (no scraper to wait for).
        """
        timeout = self.final_scrape_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        with self._counter.changed:
            finished_at = self._finished_at
            if finished_at is None or finished_at == 0:
                return True
            while self._counter.collections <= finished_at:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._counter.changed.wait(left)
            return True

    def __enter__(self) -> TrainingExporter:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        # A training error that escapes the block ends the run as failed (or oom), so the
        # run does not read as running forever and JPO learns that its config failed.
        if isinstance(exc, Exception) and self._finished_at is None:
            self.finish("oom" if is_out_of_memory(exc) else "failed")
        self.stop()


def is_out_of_memory(exc: BaseException) -> bool:
    """Return whether ``exc`` is an out-of-memory error (host, or torch/TF/JAX device)."""
    if isinstance(exc, MemoryError):
        return True
    # By name and message, so that no framework has to be imported here:
    # torch.OutOfMemoryError / torch.cuda.OutOfMemoryError, TF's ResourceExhaustedError,
    # JAX/XLA's "RESOURCE_EXHAUSTED: Out of memory".
    name = type(exc).__name__
    text = str(exc).lower()
    return (
        name in ("OutOfMemoryError", "ResourceExhaustedError")
        or "out of memory" in text
        or "resource_exhausted" in text
    )
