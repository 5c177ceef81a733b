"""Shared fixtures (a real Prometheus server, Debian's ``prometheus`` binary; a private
token-auth Ray head) and the test tiers.

Tiers (one per test, given at collection; scripts/test.sh runs every tier, in two lanes):

- ``fast`` (the default run, ``pytest`` with no arguments): the product's tests that start
  no real service;
- ``sim``: tests/sim, tests/train and tests/evaluation (simulation, training, evaluation);
- ``research``: research/tests and tests/benchmarks (the research scripts);
- ``slow``: end-to-end tests that start real services: marked ``@pytest.mark.slow`` or using
  a real-service fixture (:data:`REAL_SERVICE_FIXTURES`); research keeps its own;
- ``rerun``: marked ``@pytest.mark.rerun`` (BENCHMARKS.md's rerun commands).

``pytest -m <tier>`` runs one tier; ``pytest <paths>`` runs every test in the paths but the
rerun tier (as before tiers), so a module's own tests are one command away.

Usage::

    def test_something(prometheus_factory):
        prom = prometheus_factory(start=False)          # not started yet
        prom.backfill(openmetrics_text)                 # promtool, into the data dir
        prom.add_target("127.0.0.1:8000", job="cluster")
        prom.start()                                    # waits until /-/ready
        prom.wait_for_scrape("cluster")                 # polls /api/v1/targets
        client = PrometheusClient(prom.url, timeout_s=10, retries=0)

``prometheus_factory(...)`` returns a :class:`PrometheusServer`; every server started in
the session is stopped at the end. Targets can also be added while it runs (config
rewrite + ``/-/reload``). If the binary is missing the fixture FAILS (it does not skip)
and names the install command. Readiness waits poll with generous timeouts: the test
machine may be a loaded 2-core box.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fakes.ray_cluster import Head, ray_head_cluster

from jpo.cli.demo import LocalPrometheus
from jpo.errors import TelemetryError

PROMETHEUS_BIN = "/usr/bin/prometheus"
PROMTOOL_BIN = "/usr/bin/promtool"
INSTALL_HINT = "install it with: sudo apt-get install -y prometheus"
TESTS_DIR = Path(__file__).resolve().parent
ROOT = TESTS_DIR.parent
SIM_PATHS = ("tests/sim", "tests/train", "tests/evaluation")
RESEARCH_PATHS = ("research/tests", "tests/benchmarks")
REAL_SERVICE_FIXTURES = frozenset({"prometheus_factory", "ray_head"})
TIERS = ("fast", "sim", "research", "slow", "rerun")
READY_TIMEOUT_S = 180.0  # generous: a loaded 2-core CI machine replays the WAL slowly
POLL_S = 0.2


def tier_of(item: pytest.Item) -> str:
    """Return the tier of a collected test (see the module docstring)."""
    if item.get_closest_marker("rerun") is not None:
        return "rerun"
    where = item.path.resolve()
    if any(where.is_relative_to(ROOT / p) for p in RESEARCH_PATHS):
        return "research"
    uses_service = REAL_SERVICE_FIXTURES & set(getattr(item, "fixturenames", ()))
    if item.get_closest_marker("slow") is not None or uses_service:
        return "slow"
    if any(where.is_relative_to(ROOT / p) for p in SIM_PATHS):
        return "sim"
    return "fast"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its tier; without -m, keep the default selection.

    ``pytest`` alone (the testpaths) keeps the fast tier; ``pytest <paths>`` every test in
    them but the rerun tier. With ``-m`` pytest's own selection applies to the marks.
    """
    for item in items:
        tier = tier_of(item)
        if item.get_closest_marker(tier) is None:
            item.add_marker(tier)
    if config.option.markexpr:
        return
    default_run = config.args_source == pytest.Config.ArgsSource.TESTPATHS
    keep, drop = [], []
    for item in items:
        tier = tier_of(item)
        (keep if tier == "fast" or (not default_run and tier != "rerun") else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _require_binary(path: str) -> str:
    found = shutil.which(path) or shutil.which(Path(path).name)
    if not found:
        pytest.fail(f"{path} not found: the telemetry tests need a real Prometheus; {INSTALL_HINT}")
    return found


class PrometheusServer(LocalPrometheus):
    """One Prometheus process on 127.0.0.1 with its own config and storage directory.

    The product's process manager (:class:`jpo.cli.demo.LocalPrometheus`: promtool backfill,
    start until ``/-/ready``, stop) plus what tests need: targets added by job (reloaded
    while running), a port retry, and polls for scrapes and query results.
    """

    def __init__(self, workdir: Path, *, scrape_interval: str = "1s") -> None:
        super().__init__(workdir)
        self.data_dir = self.data
        self.config_path = self.config
        self.log_path = self.log
        self.scrape_interval = scrape_interval
        self.targets: list[tuple[str, str, bool]] = []  # (job, address, honor_labels)
        self.port = 0
        self._write_config()

    def _write_config(self) -> None:
        lines = [
            "global:",
            f"  scrape_interval: {self.scrape_interval}",
            f"  evaluation_interval: {self.scrape_interval}",
            "scrape_configs:",
        ]
        jobs: dict[tuple[str, bool], list[str]] = {}
        for job, address, honor in self.targets:
            jobs.setdefault((job, honor), []).append(address)
        for (job, honor), addresses in jobs.items():
            lines += [
                f"  - job_name: {job!r}",
                f"    honor_labels: {str(honor).lower()}",
                "    static_configs:",
                f"      - targets: [{', '.join(repr(a) for a in addresses)}]",
            ]
        if not jobs:
            lines[-1] = "scrape_configs: []"
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def add_target(self, address: str, job: str = "test", *, honor_labels: bool = True) -> None:
        """Scrape ``address`` (host:port) as ``job``; reloads the config if running.

        ``honor_labels=True`` keeps the exporter's own ``namespace``/``pod`` labels, as a
        Kubernetes pod monitor would for cAdvisor/kube-state-metrics-shaped series.
        """
        self.targets.append((job, address, honor_labels))
        self._write_config()
        if self.process is not None:
            self.process.send_signal(signal.SIGHUP)  # Prometheus rereads its config file
            deadline = time.monotonic() + READY_TIMEOUT_S
            while address not in httpx.get(f"{self.url}/api/v1/status/config", timeout=30).text:
                assert time.monotonic() < deadline, f"reload failed: {self.log_tail()}"
                time.sleep(POLL_S)

    def backfill(self, openmetrics: str, name: str = "backfill") -> None:
        """Write OpenMetrics text into the data dir with promtool (before :meth:`start`)."""
        if self.process is not None:
            raise RuntimeError("backfill before start(): Prometheus loads blocks when it opens")
        _require_binary(PROMTOOL_BIN)
        super().backfill(openmetrics, name)

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> PrometheusServer:  # type: ignore[override]
        """Start the process on a free loopback port and wait until ``/-/ready``."""
        _require_binary(PROMETHEUS_BIN)
        for _attempt in range(3):  # e.g. the port was taken in between: retry on another
            try:
                super().start(timeout_s)
            except TelemetryError:
                continue
            self.port = int(self.url.rsplit(":", 1)[1])
            return self
        raise AssertionError(f"Prometheus did not become ready; log:\n{self.log_tail()}")

    def wait_for_scrape(self, job: str, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll until every target of ``job`` has been scraped successfully at least once."""
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            body = httpx.get(f"{self.url}/api/v1/targets", timeout=10).json()
            active = [t for t in body["data"]["activeTargets"] if t["labels"].get("job") == job]
            last = active
            if active and all(t["health"] == "up" for t in active):
                return
            time.sleep(POLL_S)
        raise AssertionError(f"job {job!r} was not scraped within {timeout_s} s: {last}")

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[list], bool] | None = None,
        timeout_s: float = READY_TIMEOUT_S,
    ) -> list:
        """Poll an instant query until its result is non-empty (or ``predicate`` holds)."""
        predicate = predicate or bool
        deadline = time.monotonic() + timeout_s
        result: list = []
        while time.monotonic() < deadline:
            body = httpx.post(f"{self.url}/api/v1/query", data={"query": promql}, timeout=10).json()
            result = body.get("data", {}).get("result", [])
            if predicate(result):
                return result
            time.sleep(POLL_S)
        raise AssertionError(
            f"{promql!r} did not satisfy the condition within {timeout_s} s: {result}"
        )

    def log_tail(self, n: int = 4000) -> str:
        """Return the end of the server's log."""
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""


@pytest.fixture(scope="session")
def prometheus_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., PrometheusServer]]:
    """Session-scoped factory of real Prometheus servers (see the module docstring).

    ``prometheus_factory(*, targets=(), openmetrics=(), scrape_interval="1s", start=True)``;
    ``targets`` are ``(job, "host:port")`` pairs, ``openmetrics`` texts are backfilled.
    """
    _require_binary(PROMETHEUS_BIN)
    servers: list[PrometheusServer] = []

    def make(
        *,
        targets: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
        openmetrics: tuple[str, ...] | list[str] = (),
        scrape_interval: str = "1s",
        start: bool = True,
    ) -> PrometheusServer:
        server = PrometheusServer(
            tmp_path_factory.mktemp("prometheus"), scrape_interval=scrape_interval
        )
        servers.append(server)
        for text in openmetrics:
            server.backfill(text)
        for job, address in targets:
            server.add_target(address, job)
        if start:
            server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def ray_head() -> Iterator[Head]:
    """One private token-auth Ray head per test module (tests/fakes/ray_cluster.py): its
    dashboard, GCS and Ray Client addresses, metrics URL and authenticating env."""
    with ray_head_cluster() as head:
        yield head
