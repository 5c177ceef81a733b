"""Live simulated workloads: one training pod's raw metrics on ``/metrics``.

:class:`LiveWorkload` simulates a run of a catalog workload (:func:`jpo.sim.response.
simulate_run`) and serves, at ``http://127.0.0.1:<port>/metrics`` in Prometheus's text
format, the raw series a real cluster would expose for that pod (docs/RAW_METRICS.md):
cAdvisor, kube-state-metrics (labels and limits), DCGM with the pod mapping, and the
workload's own ``jpo_training_*`` series including hyperparameters and run status.

Simulated time runs ``speedup`` times faster than the wall clock. Samples carry no
timestamps (Prometheus stamps them at scrape time), so gauges read the simulated value of
"now"; cAdvisor's cumulative CPU counter is divided by ``speedup`` so that ``rate()``
over wall-clock time still gives the cores in use. The workload's own series are what a
real training job would export: ``jpo_training_samples_total`` counts the samples
trained on and ``jpo_training_elapsed_seconds`` its (simulated) training time, so the
run's duration, GPU-hours and throughput read from Prometheus are the simulated run's,
not the wall seconds it took here (:func:`jpo.learning.features.summarize_run`). After
the last run ends, the final state (run status ok/oom/diverged) stays up for ``linger_s``
wall seconds, then the server stops. Several processes (``jpo simulate run``) can run at
once, each one pod.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from jpo.sim.response import ClusterConditions, SimulatedRun, WorkloadProfile, simulate_run
from jpo.sim.simulator import Family, raw_families
from jpo.workload.types import Hyperparameters, WorkloadKey

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WALL_RATE_COUNTERS: frozenset[str] = frozenset({"container_cpu_usage_seconds"})
"""Counter families read as rates over wall-clock time (cAdvisor's): scaled by 1/speedup."""


@dataclass(frozen=True)
class _Prepared:
    run: SimulatedRun
    families: list[Family]
    offsets: list[float]  # simulated seconds since the run's start, per scrape
    t0_wall: float  # wall-clock time at which the run starts


def render_exposition(families: list[Family], index: int, counter_scale: float = 1.0) -> str:
    """Render the families' values at scrape ``index`` in the Prometheus text format.

    ``counter_scale`` multiplies the :data:`WALL_RATE_COUNTERS` only; the workload's own
    counters (samples trained on) are exported as counted.
    """
    lines: list[str] = []
    for fam in families:
        name = fam.samples[0].name if fam.type == "counter" else fam.name
        lines.append(f"# HELP {name} {fam.help}")
        lines.append(f"# TYPE {name} {fam.type}")
        scale = counter_scale if fam.name in WALL_RATE_COUNTERS else 1.0
        for s in fam.samples:
            lines.append(f"{s.name}{s.labels} {float(s.values[index]) * scale!r}")
    return "\n".join(lines) + "\n"


class LiveWorkload:
    """A simulated training pod exporting its raw metrics over HTTP (module docstring).

    Args:
        profile: the workload profile (its dataset/model/framework label the pod).
        hp: the hyperparameters of the runs (e.g. from the workload's config.ini).
        conditions: cluster conditions (contention, noise).
        port: TCP port on 127.0.0.1; 0 picks a free one (see :attr:`port`).
        speedup: simulated seconds per wall second.
        seed: seed of the simulation's noise.
        runs: consecutive runs to simulate (each a new run id and pod).
        run_id: id of the first run (later runs get ``-2``, ``-3``... appended).
        linger_s: wall seconds the final state stays served after the last run.
        gap_s: simulated seconds between consecutive runs.
        resolution_s: simulated seconds between precomputed states.
    """

    def __init__(
        self,
        profile: WorkloadProfile,
        hp: Hyperparameters,
        conditions: ClusterConditions,
        *,
        port: int = 0,
        speedup: float = 60.0,
        seed: int = 0,
        runs: int = 1,
        run_id: str | None = None,
        linger_s: float = 30.0,
        gap_s: float = 60.0,
        resolution_s: float = 5.0,
        key: WorkloadKey | None = None,
    ) -> None:
        if speedup <= 0:
            raise ValueError("speedup must be > 0")
        if key is not None and key != profile.key:
            profile = replace(
                profile, dataset=key.dataset, model=key.model, framework=key.framework
            )
        self.profile = profile
        self.hp = hp
        self.conditions = conditions
        self.speedup = float(speedup)
        self.linger_s = float(linger_s)
        self._rng = np.random.default_rng(seed)
        self._runs_left = runs
        self._run_no = 0
        self._base_id = run_id or f"live{seed}-{int(time.time())}"
        self._gap_s = gap_s
        self._resolution_s = resolution_s
        self._lock = threading.Lock()
        self._current: _Prepared | None = None
        self._finished_at: float | None = None
        self._stop = threading.Event()
        handler = self._handler()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self._next_run(time.time())

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The metrics URL."""
        return f"http://127.0.0.1:{self.port}/metrics"

    @property
    def current_run(self) -> SimulatedRun:
        """The run being served now."""
        assert self._current is not None
        return self._current.run

    def _next_run(self, t0_wall: float) -> None:
        self._run_no += 1
        self._runs_left -= 1
        rid = self._base_id if self._run_no == 1 else f"{self._base_id}-{self._run_no}"
        run = simulate_run(
            self.profile,
            self.hp,
            self.conditions,
            rng=self._rng,
            run_id=rid,
            start=t0_wall,
            scrape_interval_s=self._resolution_s,
        )
        offsets = (run.times_s - run.times_s[0]).tolist()
        self._current = _Prepared(run, raw_families(run), offsets, t0_wall)

    def snapshot(self, now: float | None = None) -> str:
        """Return the exposition text at wall time ``now`` (default: the current time)."""
        now = time.time() if now is None else now
        with self._lock:
            cur = self._current
            assert cur is not None
            sim_t = (now - cur.t0_wall) * self.speedup
            end = cur.offsets[-1]
            if sim_t > end + self._gap_s and self._runs_left > 0:
                self._next_run(cur.t0_wall + (end + self._gap_s) / self.speedup)
                cur = self._current
                assert cur is not None
                sim_t = (now - cur.t0_wall) * self.speedup
            elif sim_t >= end and self._runs_left <= 0 and self._finished_at is None:
                self._finished_at = now
            index = max(0, bisect.bisect_right(cur.offsets, sim_t) - 1)
            return render_exposition(cur.families, index, 1.0 / self.speedup)

    @property
    def finished(self) -> bool:
        """True once the last run ended and its final state lingered ``linger_s``."""
        return self._finished_at is not None and time.time() - self._finished_at >= self.linger_s

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        live = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404, "only /metrics is served")
                    return
                body = live.snapshot().encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # quiet: Prometheus scrapes every second

        return Handler

    def start(self) -> LiveWorkload:
        """Serve in a background thread; return self."""
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def wait(self, poll_s: float = 0.2) -> None:
        """Block until the runs finished and lingered, or :meth:`stop` was called."""
        while not self._stop.is_set():
            self.snapshot()  # advances runs and marks the end even without scrapes
            if self.finished:
                break
            self._stop.wait(poll_s)

    def request_stop(self) -> None:
        """Make :meth:`wait` return (safe from a signal handler)."""
        self._stop.set()

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._stop.set()
        if self._thread is not None:  # shutdown() would block if serve_forever never ran
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()
