"""TrainingExporter: the series it serves, its validation, and a real Prometheus scrape."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from jpo.errors import ConfigError
from jpo.telemetry.exporter import TrainingExporter
from jpo.telemetry.prometheus import PrometheusClient
from jpo.telemetry.promql import load_catalog
from jpo.telemetry.sources import PrometheusSource
from jpo.workload.types import Hyperparameters, WorkloadKey

HP = Hyperparameters(batch_size=256, learning_rate=0.003, num_layers=12, epochs=20)
RUN_LABELS = {"dataset": "a", "model": "b", "framework": "c", "run_id": "r"}


def scrape(exporter: TrainingExporter) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"http://127.0.0.1:{exporter.port}/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("jpo_training"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_serves_the_documented_series_with_workload_labels() -> None:
    labels = (
        ("dataset", "cifar10"),
        ("framework", "pytorch"),
        ("model", "resnet18"),
        ("run_id", "r1"),
    )
    with TrainingExporter("cifar10", "resnet18", "pytorch", "r1", addr="127.0.0.1") as exporter:
        assert exporter.port > 0
        exporter.set_hyperparameters(HP)
        # The samples counter exists from the first scrape on, so its increase is exact.
        assert scrape(exporter)[("jpo_training_samples_total", labels)] == 0
        exporter.report(throughput=1234.5, val_loss=0.42, epoch=3, samples=5000)
        exporter.report(epoch=4, samples=2500)  # others keep their last value
        samples = scrape(exporter)
        assert samples[("jpo_training_throughput_samples_per_second", labels)] == 1234.5
        assert samples[("jpo_training_validation_loss", labels)] == 0.42
        assert samples[("jpo_training_epoch", labels)] == 4
        assert samples[("jpo_training_samples_total", labels)] == 7500  # increments add up
        assert samples[("jpo_training_run_status", labels)] == 0  # running
        hp = tuple(sorted((*labels, ("name", "learning_rate"))))
        assert samples[("jpo_training_hyperparameter", hp)] == 0.003
        exporter.finish("oom")
        assert scrape(exporter)[("jpo_training_run_status", labels)] == 2


def test_elapsed_seconds_run_with_the_run_and_stop_at_finish() -> None:
    """jpo_training_elapsed_seconds: the run's own clock, frozen as its duration."""
    key = ("jpo_training_elapsed_seconds", tuple(sorted(RUN_LABELS.items())))
    with TrainingExporter(*RUN_LABELS.values(), addr="127.0.0.1") as exporter:
        first = scrape(exporter)[key]
        time.sleep(0.05)
        running = scrape(exporter)[key]
        assert 0 <= first < running
        exporter.finish("ok")
        final = scrape(exporter)[key]
        time.sleep(0.05)
        assert scrape(exporter)[key] == final == exporter.elapsed_s() >= running


def test_stop_waits_for_the_scrape_that_carries_the_final_status() -> None:
    exporter = TrainingExporter("a", "b", "c", "r", addr="127.0.0.1").start()
    scrape(exporter)  # a scraper is around
    exporter.finish("ok")
    assert not exporter.wait_for_final_scrape(timeout_s=0.05)  # not scraped since
    later = threading.Timer(0.2, scrape, args=(exporter,))
    later.start()
    assert exporter.wait_for_final_scrape(timeout_s=30)  # the scrape 0.2 s later ends it
    later.join()
    exporter.stop()


def test_stop_warns_when_the_final_status_was_never_scraped() -> None:
    exporter = TrainingExporter("a", "b", "c", "r", addr="127.0.0.1", final_scrape_timeout_s=0.05)
    exporter.start()
    scrape(exporter)
    exporter.finish("failed")
    with pytest.warns(RuntimeWarning, match="before Prometheus scraped its final status"):
        exporter.stop()


def test_without_any_scraper_there_is_nothing_to_wait_for() -> None:
    # A registry that describes collectors by collecting them: registering is no scrape.
    registry = CollectorRegistry(auto_describe=True)
    with TrainingExporter("a", "b", "c", "r", addr="127.0.0.1", registry=registry) as exporter:
        exporter.finish("ok")
        assert exporter.wait_for_final_scrape(timeout_s=30)
    assert TrainingExporter("a", "b", "c", "r2").wait_for_final_scrape()  # finish() not called
    with pytest.raises(ConfigError, match="final_scrape_timeout_s"):
        TrainingExporter("a", "b", "c", "r3", final_scrape_timeout_s=float("nan"))


class OutOfMemoryError(RuntimeError):
    """Stands in for torch.OutOfMemoryError (matched by name: JPO imports no framework)."""


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ValueError("bad batch"), 4),
        (MemoryError(), 2),
        (OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), 2),
        (RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate"), 2),
    ],
)
def test_an_error_escaping_the_block_finishes_the_run(error: Exception, status: int) -> None:
    registry = CollectorRegistry()
    exporter = TrainingExporter("a", "b", "c", "r", addr="127.0.0.1", registry=registry)
    with pytest.raises(type(error)), exporter:
        raise error
    assert registry.get_sample_value("jpo_training_run_status", RUN_LABELS) == status


def test_a_finished_run_keeps_its_status_and_an_exit_is_no_failure() -> None:
    registry = CollectorRegistry()
    exporter = TrainingExporter("a", "b", "c", "r", addr="127.0.0.1", registry=registry)
    with pytest.raises(ValueError), exporter:
        exporter.finish("diverged")
        raise ValueError("after the end")
    assert registry.get_sample_value("jpo_training_run_status", RUN_LABELS) == 3
    registry = CollectorRegistry()
    exporter = TrainingExporter("a", "b", "c", "r", addr="127.0.0.1", registry=registry)
    with pytest.raises(KeyboardInterrupt), exporter:
        raise KeyboardInterrupt
    assert registry.get_sample_value("jpo_training_run_status", RUN_LABELS) == 0  # running


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "fast", -1.0])
def test_refuses_non_finite_or_negative_throughput(bad) -> None:
    exporter = TrainingExporter("a", "b", "c", "r")
    with pytest.raises(ConfigError, match="throughput"):
        exporter.report(throughput=bad)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "many", -5])
def test_refuses_non_finite_or_negative_sample_counts(bad) -> None:
    exporter = TrainingExporter("a", "b", "c", "r")
    with pytest.raises(ConfigError, match="samples"):
        exporter.report(samples=bad)


def test_refuses_unknown_status_and_empty_labels() -> None:
    exporter = TrainingExporter("a", "b", "c", "r")
    with pytest.raises(ConfigError, match="status 'great'"):
        exporter.finish("great")
    with pytest.raises(ConfigError, match="run_id"):
        TrainingExporter("a", "b", "c", "")


def test_two_exporters_in_one_process_do_not_collide() -> None:
    a = TrainingExporter("a", "b", "c", "r1")
    b = TrainingExporter("a", "b", "c", "r2")
    a.report(val_loss=1.0)
    b.report(val_loss=2.0)
    assert a.registry is not b.registry


@pytest.mark.slow
def test_prometheus_scrapes_the_exporter_and_jpo_reads_it(prometheus_factory) -> None:
    with TrainingExporter("cifar10", "resnet18", "pytorch", "e2e", addr="127.0.0.1") as exporter:
        exporter.set_hyperparameters(HP)
        exporter.report(throughput=900.0, val_loss=0.5, epoch=1)
        server = prometheus_factory(targets=[("trainer", f"127.0.0.1:{exporter.port}")])
        server.wait_for_scrape("trainer")
        catalog = load_catalog()
        server.wait_for(
            'count_over_time(jpo_training_epoch{run_id="e2e"}[1m])',
            lambda r: bool(r) and float(r[0]["value"][1]) >= 3,
        )
        client = PrometheusClient(server.url, timeout_s=30, retries=0)
        source = PrometheusSource(
            client, catalog, metrics=["throughput", "val_loss", "hp_batch_size"]
        )
        key = WorkloadKey("cifar10", "resnet18", "pytorch")
        for metric, value in [("throughput", 900.0), ("val_loss", 0.5), ("hp_batch_size", 256.0)]:
            result = client.query(catalog.render(metric, key, "e2e"))
            assert result.series[0].values.tolist() == [value]
            assert result.series[0].labels["run_id"] == "e2e"
        now = server_time(client)
        table = source.history(now - 60, now, 1.0)
        assert set(table["metric"].to_pylist()) == {"throughput", "val_loss", "hp_batch_size"}


def server_time(client: PrometheusClient) -> float:
    return float(client.query("time()").series[0].values[0])
