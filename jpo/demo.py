"""The end-to-end demo behind the README's main command (``jpo demo``).

On embedded defaults, with nothing but this repository and Debian's ``prometheus``:

1. copy a few catalog workloads' ``config.ini`` (``examples/workloads/<name>/``) into a
   work folder;
2. run each workload once with its current values and let a local Prometheus (started on
   a loopback port) collect the run: by default as live simulated pods (``jpo simulate
   run`` processes, :mod:`envs.live`, about ``LIVE_RUN_WALL_S`` seconds each, in
   parallel) scraped every second; with ``--fast`` the same raw series are simulated in
   process (:func:`envs.response.simulate_run`) and backfilled with ``promtool``; without
   the ``prometheus``/``promtool`` binaries they go to a Parquet history store read
   through :class:`jpo.telemetry.ParquetSource`;
3. ``jpo suggest`` on every copy (the real CI stage: telemetry, features, policy, guards,
   validation, atomic write, audit log);
4. "apply": run each workload again with the values now in its ``config.ini`` and load
   that run the same way (Prometheus is restarted to pick up the new block);
5. ``jpo feedback`` for the new run (reward, degradation, history store);
6. for a workload whose new run degraded, ``jpo suggest`` once more: it rolls back to the
   last known-good values;
7. print a before/after table.

``--fast`` (backfill, two workloads) takes seconds; the live mode a few minutes. Nothing
outside the work folder is written; Prometheus and the simulated pods are always stopped.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jpo.errors import ConfigError, JpoError, PolicyError, TelemetryError

__all__ = ["DEMO_WORKLOADS", "DemoRow", "run_demo"]

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "workloads"
DEMO_WORKLOADS: tuple[str, ...] = ("cifar10-resnet18", "mnist-lenet", "imdb-lstm")
"""Catalog workloads the demo tunes (GPU-bound CNN, tiny CNN, recurrent text model)."""
FAST_WORKLOADS: tuple[str, ...] = DEMO_WORKLOADS[:2]
SEED = 7
RUN_GAP_S = 2 * 3600.0  # the "after" run starts this long after the "before" run
FIRST_RUN_AGE_S = 6 * 3600.0  # the "before" run started this long ago
SCRAPE_INTERVAL_S = 15.0  # as configs/metrics.toml [query] run_step_s expects
LIVE_RUN_WALL_S = 40.0  # wall seconds one live simulated run lasts
LIVE_QUERY = {  # configs/metrics.toml [query] for second-scale live runs (demo catalog copy)
    "rate_window": '"10s"',
    "lookback": '"1d"',
    "discovery_step_s": "2",
    "run_step_s": "2",
}
LIVE_LINGER_S = 5.0  # the finished pod's final state stays scraped this long
PROMETHEUS_BIN = "prometheus"
PROMTOOL_BIN = "promtool"


@dataclass
class DemoRow:
    """One workload's before/after."""

    workload: str
    config: Path
    status: str = ""
    message: str = ""
    before: Any = None
    after: Any = None
    summary_before: Any = None
    summary_after: Any = None
    reward: float | None = None
    degraded: bool | None = None
    rolled_back_to: Any = None
    notes: list[str] = field(default_factory=list)


class LocalPrometheus:
    """A throw-away Prometheus on 127.0.0.1 over a data dir filled by promtool backfills."""

    def __init__(self, workdir: Path, targets: Sequence[str] = ()):
        self.workdir = workdir
        self.data = workdir / "prometheus-data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "prometheus.yml"
        if targets:
            listed = ", ".join(repr(t) for t in targets)
            scrape = (
                "scrape_configs:\n  - job_name: 'pods'\n    honor_labels: true\n"
                f"    static_configs:\n      - targets: [{listed}]\n"
            )
        else:
            scrape = "scrape_configs: []\n"
        self.config.write_text(f"global:\n  scrape_interval: 1s\n{scrape}")
        self.log = workdir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    @staticmethod
    def available() -> bool:
        """Whether the prometheus and promtool binaries are installed."""
        return bool(shutil.which(PROMETHEUS_BIN) and shutil.which(PROMTOOL_BIN))

    def backfill(self, openmetrics: str, name: str) -> None:
        """Write OpenMetrics text into the data dir as TSDB blocks (while stopped)."""
        source = self.workdir / f"{name}.om"
        source.write_text(openmetrics, encoding="utf-8")
        done = subprocess.run(
            [
                PROMTOOL_BIN,
                "tsdb",
                "create-blocks-from",
                "openmetrics",
                "-q",
                str(source),
                str(self.data),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        source.unlink()
        if done.returncode != 0:
            raise TelemetryError(f"promtool backfill into {self.data} failed: {done.stderr[-500:]}")

    def start(self, timeout_s: float = 120.0) -> str:
        """Start on a free loopback port; return the URL once ``/-/ready``."""
        import httpx

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS_BIN,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.data}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=100y",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=5).status_code == 200:
                    return self.url
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        tail = self.log.read_text(errors="replace")[-1000:]
        raise TelemetryError(f"local Prometheus did not become ready at {self.url}: {tail}")

    def stop(self) -> None:
        """Stop the process (kill after 30 s)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _live_phase(rows: Sequence[DemoRow], ports: Sequence[int], phase: int, say: Any) -> None:
    """Run every workload once as a live simulated pod (``jpo simulate run``); wait."""
    from envs.response import load_conditions, load_profile, predict
    from jpo.config_file import read_workload

    procs: list[subprocess.Popen[bytes]] = []
    try:
        for row, port in zip(rows, ports, strict=True):
            hp = read_workload(row.config).hyperparameters
            sim_s = predict(load_profile(row.workload), hp, load_conditions()).duration_s
            speedup = max(sim_s / LIVE_RUN_WALL_S, 0.001)
            cmd = [
                sys.executable, "-c", "import sys; from jpo.cli import main; sys.exit(main())",
                "simulate", "run", "--workload", row.workload, "--config", str(row.config),
                "--speedup", f"{speedup:.6g}", "--port", str(port), "--seed", str(SEED + phase),
                "--run-id", f"{row.workload}-run-{phase}", "--linger-s", str(LIVE_LINGER_S),
            ]  # fmt: skip
            log = (row.config.parent / f"pod-run-{phase}.log").open("wb")
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
            log.close()
        say(
            f"running {len(procs)} simulated pod(s) (run {phase}), about "
            f"{LIVE_RUN_WALL_S + LIVE_LINGER_S:.0f} s, scraped every second"
        )
        for proc, row in zip(procs, rows, strict=True):
            code = proc.wait(timeout=LIVE_RUN_WALL_S * 4 + 120)
            if code != 0:
                log_text = (row.config.parent / f"pod-run-{phase}.log").read_text()[-500:]
                raise TelemetryError(f"simulated pod of {row.workload} exited {code}: {log_text}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


def _openmetrics(runs: Sequence[Any]) -> str:
    import io

    from envs.simulator import write_openmetrics

    buf = io.StringIO()
    write_openmetrics(runs, buf)
    return buf.getvalue()


class _Telemetry:
    """Where the demo's runs go and come from: local Prometheus, else Parquet history."""

    def __init__(self, workdir: Path, *, use_prometheus: bool, say: Any):
        self.prometheus = LocalPrometheus(workdir) if use_prometheus else None
        self.parquet_root = workdir / "history"
        self.say = say
        self.batch = 0

    @property
    def kind(self) -> str:
        return "prometheus" if self.prometheus is not None else "parquet"

    def load(self, runs: Sequence[Any]) -> Any:
        """Make ``runs`` visible and return a MetricSource over everything loaded so far."""
        from jpo.telemetry import ParquetSource, PrometheusSource

        self.batch += 1
        if self.prometheus is None:
            from envs.simulator import write_parquet

            write_parquet(list(runs), self.parquet_root)
            return ParquetSource(self.parquet_root)
        self.prometheus.stop()
        self.prometheus.backfill(_openmetrics(runs), f"runs-{self.batch}")
        url = self.prometheus.start()
        self.say(f"Prometheus at {url} holds {self.batch} batch(es) of simulated runs")
        return PrometheusSource.from_url(url)

    def close(self) -> None:
        if self.prometheus is not None:
            self.prometheus.stop()


def _simulate(name: str, hp: Any, run_id: str, start: float, seed: int) -> Any:
    import numpy as np

    from envs.response import load_conditions, load_profile, simulate_run

    return simulate_run(
        load_profile(name),
        hp,
        load_conditions(),
        rng=np.random.default_rng(seed),
        run_id=run_id,
        start=start,
        scrape_interval_s=SCRAPE_INTERVAL_S,
    )


def run_demo(
    *,
    workdir: Path | None = None,
    fast: bool = False,
    workloads: Sequence[str] | None = None,
    policy: Path | None = None,
    use_prometheus: bool | None = None,
    live: bool | None = None,
    say: Any = print,
) -> list[DemoRow]:
    """Run the demo (module docstring) and return one row per workload."""
    from jpo.policy_source import LocalPolicySource

    names = tuple(workloads or (FAST_WORKLOADS if fast else DEMO_WORKLOADS))
    check_workloads(names)
    root = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="jpo-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    source = LocalPolicySource(policy)
    try:
        say(f"policy {source.version()} from {source.description}")
    except PolicyError as err:
        raise PolicyError(
            f"the demo needs a policy: {err} (pass --policy PATH, or export the bundled one "
            "with `jpo train --export-only`)"
        ) from err
    if use_prometheus is None:
        use_prometheus = LocalPrometheus.available()
        if not use_prometheus:
            say("prometheus/promtool not found: using the generated Parquet history instead")
    live = (not fast) if live is None else live
    if live and use_prometheus:
        return _run_live(root, names, policy, source, say)
    telemetry = _Telemetry(root, use_prometheus=use_prometheus, say=say)
    rows = _copy_configs(root, names)
    try:
        now = time.time()
        first = [
            _simulate(r.workload, r.before, f"{r.workload}-run-1", now - FIRST_RUN_AGE_S, SEED + i)
            for i, r in enumerate(rows)
        ]
        for row, run in zip(rows, first, strict=True):
            row.summary_before = run.summary
        say(f"simulated the current run of {len(rows)} workload(s) in {root}")
        metrics = telemetry.load(first)
        _suggest_all(rows, metrics, policy, source, say)
        start = now - FIRST_RUN_AGE_S + RUN_GAP_S
        second = [
            _simulate(r.workload, r.after, f"{r.workload}-run-2", start, SEED + 100 + i)
            for i, r in enumerate(rows)
        ]
        say("ran every workload again with the values now in its config.ini")
        metrics = telemetry.load(second)
        _feedback_all(rows, metrics, say)
        _suggest_all(rows, metrics, policy, source, say, only_degraded=True)
    finally:
        telemetry.close()
    return rows


def check_workloads(names: Sequence[str]) -> None:
    """Raise ConfigError naming every workload without an example config.ini, and the fix."""
    known = sorted(p.parent.name for p in EXAMPLES.glob("*/config.ini"))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(
            f"--workload {', '.join(unknown)}: no such demo workload under {EXAMPLES}; "
            f"fix: pick from {', '.join(known)}"
        )


def _copy_configs(root: Path, names: Sequence[str]) -> list[DemoRow]:
    """Copy each workload's example config.ini (names checked by check_workloads)."""
    from jpo.config_file import read_workload

    rows = []
    for name in names:
        example = EXAMPLES / name / "config.ini"
        folder = root / name
        folder.mkdir(exist_ok=True)
        config = folder / "config.ini"
        shutil.copyfile(example, config)
        rows.append(
            DemoRow(workload=name, config=config, before=read_workload(config).hyperparameters)
        )
    return rows


def _suggest_all(
    rows: Sequence[DemoRow],
    metrics: Any,
    policy: Path | None,
    source: Any,
    say: Any,
    *,
    only_degraded: bool = False,
) -> None:
    from jpo.config_file import read_workload
    from jpo.suggest import SuggestOptions, suggest

    for row in rows:
        if only_degraded and not row.degraded:
            continue
        result = suggest(
            SuggestOptions(config=row.config, policy_path=policy, approve=True),
            metric_source=metrics,
            policy_source=source,
        )
        say(f"{row.workload}: {result.status.value}: {result.message}")
        if only_degraded:
            if result.written:
                row.status += f", then {result.status.value}"
                row.rolled_back_to = read_workload(row.config).hyperparameters
            continue
        row.status, row.message, row.notes = result.status.value, result.message, list(result.notes)
        row.after = read_workload(row.config).hyperparameters


def _feedback_all(rows: Sequence[DemoRow], metrics: Any, say: Any) -> None:
    from jpo.feedback import FeedbackOptions, feedback

    for row in rows:
        try:
            fed = feedback(
                FeedbackOptions(config=row.config, run_id=f"{row.workload}-run-2"),
                metric_source=metrics,
            )
        except JpoError as err:
            row.notes.append(f"feedback: {err}")
            continue
        row.reward, row.degraded = fed.reward, fed.degraded
        row.summary_after = fed.summary
        say(fed.message)


def _live_catalog(root: Path) -> Any:
    """Return the metric catalog with [query] steps scaled to second-long live runs."""
    import re

    from jpo.promql import DEFAULT_CATALOG_PATH, load_catalog

    text = DEFAULT_CATALOG_PATH.read_text(encoding="utf-8")
    for key, value in LIVE_QUERY.items():
        text, n = re.subn(rf"(?m)^{key}\s*=.*$", f"{key} = {value}", text, count=1)
        if n != 1:
            raise JpoError(f"{DEFAULT_CATALOG_PATH}: no [query] {key} to scale for the live demo")
    path = root / "metrics-live.toml"
    path.write_text(text, encoding="utf-8")
    return load_catalog(path)


def _run_live(
    root: Path, names: Sequence[str], policy: Path | None, source: Any, say: Any
) -> list[DemoRow]:
    """The live variant: simulated pods scraped by a local Prometheus (module docstring)."""
    from jpo.features import summarize_run
    from jpo.telemetry import PrometheusSource

    rows = _copy_configs(root, names)
    ports = [_free_port() for _ in rows]
    prom = LocalPrometheus(root, targets=[f"127.0.0.1:{p}" for p in ports])
    try:
        url = prom.start()
        say(f"Prometheus at {url} scrapes {len(rows)} simulated pod(s)")
        metrics = PrometheusSource.from_url(url, _live_catalog(root))
        _live_phase(rows, ports, 1, say)
        time.sleep(2.0)  # the last scrapes land
        for row in rows:
            key = _key(row)
            row.summary_before = summarize_run(metrics.run_table(key, f"{row.workload}-run-1"))
        _suggest_all(rows, metrics, policy, source, say)
        _live_phase(rows, ports, 2, say)
        time.sleep(2.0)
        _feedback_all(rows, metrics, say)
        _suggest_all(rows, metrics, policy, source, say, only_degraded=True)
    finally:
        prom.stop()
    return rows


def _key(row: DemoRow) -> Any:
    from jpo.config_file import read_workload

    return read_workload(row.config).key


def render_table(rows: Sequence[DemoRow]) -> Any:
    """Return a rich Table of the demo's before/after."""
    from rich.table import Table

    table = Table(title="JPO demo: before -> after", title_justify="left")
    for col in (
        "workload",
        "decision",
        "batch",
        "lr",
        "layers",
        "epochs",
        "GPU util",
        "throughput/s",
        "val loss",
        "reward",
    ):
        table.add_column(col, overflow="fold")

    def pair(a: Any, b: Any, fmt: str) -> str:
        if a is None or b is None:
            return "-"
        left, right = format(a, fmt), format(b, fmt)
        return left if left == right else f"{left} -> {right}"

    for r in rows:
        b, a = r.before, r.after
        sb, sa = r.summary_before, r.summary_after
        table.add_row(
            r.workload,
            r.status,
            pair(b and b.batch_size, a and a.batch_size, "d"),
            pair(b and b.learning_rate, a and a.learning_rate, ".3g"),
            pair(b and b.num_layers, a and a.num_layers, "d"),
            pair(b and b.epochs, a and a.epochs, "d"),
            pair(sb and sb.gpu_util_mean, sa and sa.gpu_util_mean, ".0%"),
            pair(sb and sb.throughput, sa and sa.throughput, ".0f"),
            pair(sb and sb.final_val_loss, sa and sa.final_val_loss, ".3f"),
            "-" if r.reward is None else f"{r.reward:+.3f}" + (" (degraded)" if r.degraded else ""),
        )
    return table
