"""The end-to-end demo behind the README's main command (``jpo demo``).

On embedded defaults, with nothing but this repository and Debian's ``prometheus``:

1. copy a few catalog workloads' ``config.ini`` (``examples/workloads/<name>/``) into a
   work folder;
2. run each workload once with its current values and let a local Prometheus (started on
   a loopback port) collect the run: by default as live simulated pods (``jpo simulate
   run`` processes, :mod:`jpo.sim.live`, about ``LIVE_RUN_WALL_S`` seconds each, in
   parallel) scraped every second; with ``--fast`` the same raw series are simulated in
   process (:func:`jpo.sim.response.simulate_run`) and backfilled with ``promtool``; without
   the ``prometheus``/``promtool`` binaries they go to a Parquet history store read
   through :class:`jpo.telemetry.sources.ParquetSource`;
3. ``jpo suggest`` on every copy (the real CI stage: telemetry, features, policy, guards,
   validation, atomic write, audit log);
4. a campaign of ``rounds`` runs (default :data:`DEFAULT_ROUNDS`): each further round
   runs every workload again with the values now in its ``config.ini``, loads that run
   the same way (Prometheus is restarted to pick up the new block), scores it with
   ``jpo feedback`` (reward, degradation, history store) and asks ``jpo suggest`` again,
   which moves on, rolls a degraded run back, or returns to the campaign's best run;
5. read each campaign back from its audit log (:mod:`jpo.reporting.campaign`): the runs round by
   round, the best known-good run, what config.ini holds at the end, and a PNG chart.

``--fast`` (backfill, two workloads) takes seconds; the live mode about a minute per
round. Nothing outside the work folder is written; Prometheus and the simulated pods are
always stopped.
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
from jpo.net import free_port
from jpo.paths import config_path, example_workloads_dir

__all__ = ["DEFAULT_ROUNDS", "DEMO_WORKLOADS", "MAX_ROUNDS", "DemoRow", "run_demo"]

DEMO_WORKLOADS: tuple[str, ...] = ("cifar10-resnet18", "mnist-lenet", "imdb-lstm")
"""Catalog workloads the demo tunes (GPU-bound CNN, tiny CNN, recurrent text model)."""
FAST_WORKLOADS: tuple[str, ...] = DEMO_WORKLOADS[:2]
SEED = 7
DEFAULT_ROUNDS = 4  # runs per campaign: enough to see a step, a rollback and the return to best
MAX_ROUNDS = 10  # runs are spaced RUN_GAP_S apart inside configs/metrics.toml's 7d lookback
RUN_GAP_S = 2 * 3600.0  # one run starts this long after the previous one (runs last < 2 h)
LAST_RUN_AGE_S = 4 * 3600.0  # the campaign's last run started this long ago
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
    """One workload's campaign: where it started, its runs, where it ended."""

    workload: str
    config: Path
    before: Any = None
    """config.ini's values before the campaign."""
    final: Any = None
    """config.ini's values at the end (what the last ``jpo suggest`` left there)."""
    runs: list[Any] = field(default_factory=list)
    """The campaign run by run (:class:`jpo.reporting.campaign.CampaignRun`), from the audit log."""
    best: Any = None
    """The best known-good run (:func:`jpo.reporting.campaign.best_known_good`)."""
    chart: Path | None = None
    """The PNG chart of the campaign."""
    decisions: list[str] = field(default_factory=list)
    """``jpo suggest``'s status after each round."""
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


def _live_phase(rows: Sequence[DemoRow], ports: Sequence[int], phase: int, say: Any) -> None:
    """Run every workload once as a live simulated pod (``jpo simulate run``); wait."""
    from jpo.sim.response import load_conditions, load_profile, predict
    from jpo.workload.config_file import read_workload

    procs: list[subprocess.Popen[bytes]] = []
    try:
        for row, port in zip(rows, ports, strict=True):
            hp = read_workload(row.config).hyperparameters
            sim_s = predict(load_profile(row.workload), hp, load_conditions()).duration_s
            speedup = max(sim_s / LIVE_RUN_WALL_S, 0.001)
            cmd = [
                sys.executable, "-c", "import sys; from jpo.cli.app import main; sys.exit(main())",
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

    from jpo.sim.simulator import write_openmetrics

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
        from jpo.telemetry.sources import ParquetSource, PrometheusSource

        self.batch += 1
        if self.prometheus is None:
            from jpo.sim.simulator import write_parquet

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

    from jpo.sim.response import load_conditions, load_profile, simulate_run

    return simulate_run(
        load_profile(name),
        hp,
        load_conditions(),
        rng=np.random.default_rng(seed),
        run_id=run_id,
        start=start,
        scrape_interval_s=SCRAPE_INTERVAL_S,
    )


def _run_start(now: float, rounds: int, r: int) -> float:
    """When run ``r`` (1-based) of a ``rounds``-run campaign started (the last one ends first)."""
    return now - LAST_RUN_AGE_S - (rounds - r) * RUN_GAP_S


def run_demo(
    *,
    workdir: Path | None = None,
    fast: bool = False,
    workloads: Sequence[str] | None = None,
    policy: Path | None = None,
    use_prometheus: bool | None = None,
    live: bool | None = None,
    rounds: int = DEFAULT_ROUNDS,
    say: Any = print,
) -> list[DemoRow]:
    """Run the demo (module docstring) and return one campaign per workload."""
    from jpo.policy.source import LocalPolicySource

    if not 1 <= rounds <= MAX_ROUNDS:
        raise ConfigError(f"--rounds {rounds}: use 1 to {MAX_ROUNDS} runs per campaign")
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
        rows = _run_live(root, names, policy, source, say, rounds)
    else:
        rows = _run_in_process(root, names, policy, source, say, rounds, use_prometheus)
    for row in rows:
        _read_campaign(row, root)
    return rows


def _run_in_process(
    root: Path,
    names: Sequence[str],
    policy: Path | None,
    source: Any,
    say: Any,
    rounds: int,
    use_prometheus: bool,
) -> list[DemoRow]:
    """The fast variant: runs simulated in process, backfilled or written to Parquet."""
    from jpo.workload.config_file import read_workload

    telemetry = _Telemetry(root, use_prometheus=use_prometheus, say=say)
    rows = _copy_configs(root, names)
    now = time.time()
    try:
        for r in range(1, rounds + 1):
            runs = [
                _simulate(
                    row.workload,
                    read_workload(row.config).hyperparameters,
                    f"{row.workload}-run-{r}",
                    _run_start(now, rounds, r),
                    SEED + 100 * (r - 1) + i,
                )
                for i, row in enumerate(rows)
            ]
            say(f"round {r}: ran {len(rows)} workload(s) with the values in their config.ini")
            metrics = telemetry.load(runs)
            if r > 1:
                _feedback_all(rows, metrics, say, r)
            _suggest_all(rows, metrics, policy, source, say)
    finally:
        telemetry.close()
    return rows


def _read_campaign(row: DemoRow, root: Path) -> None:
    """Fill a row's campaign from its audit log and draw its chart."""
    from jpo.reporting.campaign import best_known_good, campaign_runs, plot_campaign
    from jpo.stage.audit import read_records
    from jpo.workload.config_file import read_workload

    wf = read_workload(row.config)
    row.final = wf.hyperparameters
    log = row.config.parent / ".jpo" / "audit.jsonl"
    row.runs = campaign_runs(read_records(log)) if log.exists() else []
    row.best = best_known_good(row.runs)
    if row.runs:
        row.chart = plot_campaign(
            row.runs,
            root / f"{row.workload}-campaign.png",
            title=f"JPO demo campaign of {wf.key.slug()} ({len(row.runs)} runs)",
        )


def check_workloads(names: Sequence[str]) -> None:
    """Raise ConfigError naming every workload without an example config.ini, and the fix."""
    examples = example_workloads_dir()
    known = sorted(p.parent.name for p in examples.glob("*/config.ini"))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(
            f"--workload {', '.join(unknown)}: no such demo workload under {examples}; "
            f"fix: pick from {', '.join(known)}"
        )


def _copy_configs(root: Path, names: Sequence[str]) -> list[DemoRow]:
    """Copy each workload's example config.ini (names checked by check_workloads)."""
    from jpo.workload.config_file import read_workload

    rows = []
    for name in names:
        example = example_workloads_dir() / name / "config.ini"
        folder = root / name
        folder.mkdir(exist_ok=True)
        config = folder / "config.ini"
        shutil.copyfile(example, config)
        rows.append(
            DemoRow(workload=name, config=config, before=read_workload(config).hyperparameters)
        )
    return rows


def _suggest_all(
    rows: Sequence[DemoRow], metrics: Any, policy: Path | None, source: Any, say: Any
) -> None:
    from jpo.stage.suggest import SuggestOptions, suggest

    for row in rows:
        result = suggest(
            SuggestOptions(config=row.config, policy_path=policy, approve=True),
            metric_source=metrics,
            policy_source=source,
        )
        say(f"{row.workload}: {result.status.value}: {result.message}")
        row.decisions.append(result.status.value)
        row.notes.extend(result.notes)


def _feedback_all(rows: Sequence[DemoRow], metrics: Any, say: Any, r: int) -> None:
    from jpo.stage.feedback import FeedbackOptions, feedback

    for row in rows:
        try:
            fed = feedback(
                FeedbackOptions(config=row.config, run_id=f"{row.workload}-run-{r}"),
                metric_source=metrics,
            )
        except JpoError as err:
            row.notes.append(f"feedback on run {r}: {err}")
            continue
        say(fed.message)


def _live_catalog(root: Path) -> Any:
    """Return the metric catalog with [query] steps scaled to second-long live runs."""
    import re

    from jpo.telemetry.promql import load_catalog

    shipped = config_path("metrics.toml")
    text = shipped.read_text(encoding="utf-8")
    for key, value in LIVE_QUERY.items():
        text, n = re.subn(rf"(?m)^{key}\s*=.*$", f"{key} = {value}", text, count=1)
        if n != 1:
            raise JpoError(f"{shipped}: no [query] {key} to scale for the live demo")
    path = root / "metrics-live.toml"
    path.write_text(text, encoding="utf-8")
    return load_catalog(path)


def _run_live(
    root: Path, names: Sequence[str], policy: Path | None, source: Any, say: Any, rounds: int
) -> list[DemoRow]:
    """The live variant: simulated pods scraped by a local Prometheus (module docstring)."""
    from jpo.telemetry.sources import PrometheusSource

    rows = _copy_configs(root, names)
    ports = [free_port() for _ in rows]
    prom = LocalPrometheus(root, targets=[f"127.0.0.1:{p}" for p in ports])
    try:
        url = prom.start()
        say(f"Prometheus at {url} scrapes {len(rows)} simulated pod(s)")
        metrics = PrometheusSource.from_url(url, _live_catalog(root))
        for r in range(1, rounds + 1):
            _live_phase(rows, ports, r, say)
            time.sleep(2.0)  # the last scrapes land
            if r > 1:
                _feedback_all(rows, metrics, say, r)
            _suggest_all(rows, metrics, policy, source, say)
    finally:
        prom.stop()
    return rows


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _values(hp: Any) -> str:
    """Return ``batch 128, lr 0.01, layers 18, epochs 30`` for a Hyperparameters."""
    from jpo.reporting.log_view import SHORT_NAMES, short_number

    if hp is None:
        return "-"
    return ", ".join(
        f"{SHORT_NAMES.get(k, k)} {short_number(float(v))}" for k, v in hp.as_dict().items()
    )


def render_campaign(row: DemoRow) -> list[str]:
    """Return one workload's campaign as text lines: runs round by round, where it ended."""
    from jpo.console import text_table
    from jpo.reporting.log_view import short_number

    columns = ["run", "batch", "lr", "layers", "epochs", "GPU util", "throughput/s",
               "val loss", "objective", "reward", "verdict", "then jpo suggest"]  # fmt: skip
    cells = []
    for run in row.runs:
        hp = run.hyperparameters
        values = [short_number(float(getattr(hp, k))) if hp else "-" for k in _HP_ORDER]
        best = " *" if row.best is not None and run.index == row.best.index else ""
        cells.append(
            [
                f"{run.index}{best}",
                *values,
                _num(run.gpu_util, ".0%"),
                _num(run.throughput, ",.0f"),
                _num(run.val_loss, ".4f"),
                _num(run.objective, "+.3f"),
                _num(run.reward, "+.3f"),
                run.verdict,
                run.decision or "-",
            ]
        )
    right = ("batch", "lr", "layers", "epochs", "GPU util", "throughput/s", "val loss",
             "objective", "reward")  # fmt: skip
    lines = [f"{row.workload}: {len(row.runs)} runs"]
    lines += ["  " + line for line in text_table(columns, cells, right=right)]
    lines += ["  " + line for line in _ending(row)]
    return lines


_HP_ORDER = ("batch_size", "learning_rate", "num_layers", "epochs")


def _ending(row: DemoRow) -> list[str]:
    """Where the campaign ended: the best run and what config.ini holds."""
    out = []
    if row.best is not None:
        first = row.runs[0]
        gain = ""
        if row.best.objective is not None and first.objective is not None:
            gain = f", objective {row.best.objective:+.3f} vs run 1's {first.objective:+.3f}"
        values = _values(row.best.hyperparameters)
        out.append(f"best known-good run: run {row.best.index} * ({values}{gain})")
    holds = _values(row.final)
    if row.best is not None and row.final == row.best.hyperparameters:
        out.append(f"config.ini holds the best run's values: {holds}")
    else:
        out.append(f"config.ini holds the next values to run: {holds}")
    if row.chart is not None:
        out.append(f"chart: {row.chart}")
    return out
