"""End to end on a REAL workload: train, let Prometheus scrape, `jpo suggest`, train again.

Steps:

1. copy ``config.ini`` into a work folder (``--out``; the example's own file stays as it is);
2. start Debian's ``prometheus`` on a loopback port, scraping every second the app's
   training exporter (jpo.telemetry.exporter) and a local-pod exporter served by this script
   (``local_pod_exporter.py``: cAdvisor / kube-state-metrics names for the app's process;
   like kube-state-metrics it keeps a completed pod's labels and limits);
3. run ``train.py`` with the copied config (run 1), measure it;
4. each of ``--rounds`` rounds (default 1), as a CI pipeline would: ``jpo suggest --config
   <copy> --prometheus <url> --metrics <catalog> [--policy P] --approve --json``, run
   ``train.py`` again with whatever config.ini now holds (run 2, 3, ...), measure it, and
   record its outcome with ``jpo feedback --run-id run-N`` (reward, degraded or not);
5. show what the next ``jpo suggest`` would do (``--dry-run``: a rollback if degraded);
6. print per run: hyperparameters, wall time, validation loss and accuracy, throughput,
   and the CPU and memory utilization Prometheus measured; and the incumbent, the fastest
   run whose validation loss stayed within 1 % of run 1's.

The app is CPU-only: no DCGM series exist for it. Its config.ini says so (``[jpo] device =
cpu``), and JPO reads the pod's CPU and memory in place of the GPU's (README, CPU
workloads). This Prometheus scrapes every second, so ``jpo suggest`` and ``jpo feedback``
get a copy of configs/metrics.toml whose query steps match that interval (the shipped
15 s / 60 s steps assume the usual 15 s scrapes). Whatever ``jpo suggest`` decides is
printed with its exit code; the script fails only if something is broken (a run crashes,
Prometheus does not come up, suggest or feedback exits with an error code).

Usage::

    python examples/digits-mlp/run_e2e.py [--short] [--rounds N] [--policy PATH] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jpo.net import free_port

HERE = Path(__file__).resolve().parent
OK_SUGGEST_CODES = {0, 10, 11, 12}  # changed, unchanged by choice, no data, needs approval
LOSS_TOLERANCE = 0.01  # a run counts if its val loss is within 1 % of run 1's (issue 8)
# configs/metrics.toml [query] for this script's 1 s scrape interval (see the docstring)
LOCAL_QUERY = {"rate_window": '"3s"', "run_step_s": "1", "discovery_step_s": "2"}
CPU_LIMIT_CORES = 1.0  # the "pod's" CPU limit: train.py runs torch with one thread
MEMORY_LIMIT_BYTES = 2.0 * 1024**3  # its memory limit
sys.path.insert(0, str(HERE))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="digits-mlp end to end with jpo suggest")
    parser.add_argument("--short", action="store_true", help="small data, few epochs (tests)")
    parser.add_argument("--policy", default=None, help="policy artifact (default: bundled)")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: temp)")
    parser.add_argument("--prometheus", default=shutil.which("prometheus") or "prometheus")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="tuning rounds: jpo suggest, train, jpo feedback (default 1)",
    )
    parser.add_argument(
        "--augment",
        type=int,
        default=None,
        help="noisy copies of the train set (default 150, --short 16); longer runs give "
        "jpo suggest more scrapes",
    )
    return parser.parse_args(argv)


class Prometheus:
    """A throwaway Prometheus on loopback scraping two static targets every second."""

    def __init__(self, binary: str, folder: Path, targets: dict[str, int]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = folder / "prometheus.yml"
        jobs = "\n".join(
            f"  - job_name: {name}\n    honor_labels: true\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{port}']"
            for name, port in targets.items()
        )
        config.write_text(
            f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{jobs}\n"
        )
        self.log = (folder / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus at {self.url} not ready after {timeout_s} s")

    def wait_scraping(self, job: str, timeout_s: float = 60.0) -> None:
        """Wait until ``job``'s targets have been scraped once.

        The first scrape can lag readiness by seconds, longer than a short training run.
        """
        import httpx

        deadline = time.monotonic() + timeout_s
        targets: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                body = httpx.get(f"{self.url}/api/v1/targets", timeout=2.0).json()
                targets = body["data"]["activeTargets"]
            except (httpx.HTTPError, KeyError, ValueError):
                targets = []
            mine = [t for t in targets if t.get("labels", {}).get("job") == job]
            if mine and all(t.get("health") == "up" for t in mine):
                return
            time.sleep(0.2)
        raise RuntimeError(f"prometheus at {self.url}: job {job} not scraped in {timeout_s} s")

    def query_range(self, promql: str, start: float, end: float) -> list[float]:
        """Return the values of the first series of a range query (1 s step)."""
        import httpx

        resp = httpx.get(
            f"{self.url}/api/v1/query_range",
            params={"query": promql, "start": start, "end": end, "step": "1s"},
            timeout=10.0,
        )
        resp.raise_for_status()
        result = resp.json()["data"]["result"]
        if not result:
            return []
        return [float(v) for _, v in result[0]["values"]]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def train(
    config: Path, run_id: str, app_port: int, pods: Any, augment: int, out: Path
) -> dict[str, Any]:
    """Run train.py once as a "pod"; return its result JSON plus its wall-clock window."""
    from local_pod_exporter import LocalPod

    from jpo.workload.config_file import read_workload

    key = read_workload(config).key
    result_path = out / f"{run_id}.json"
    started = time.time()
    cmd = [
        sys.executable,
        str(HERE / "train.py"),
        "--config",
        str(config),
        "--port",
        str(app_port),
        "--run-id",
        run_id,
        "--augment",
        str(augment),
        "--result",
        str(result_path),
        "--linger-s",
        "3",
    ]
    with (out / f"{run_id}.log").open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        pods.add(
            LocalPod(
                pid=proc.pid,
                dataset=key.dataset,
                model=key.model,
                framework=key.framework,
                run_id=run_id,
                cpu_limit_cores=CPU_LIMIT_CORES,
                memory_limit_bytes=MEMORY_LIMIT_BYTES,
            )
        )
        proc.wait()
    ended = time.time()
    if not result_path.exists():
        tail = (out / f"{run_id}.log").read_text()[-2000:]
        raise RuntimeError(f"{run_id}: train.py exited {proc.returncode}\n{tail}")
    result = json.loads(result_path.read_text())
    result |= {"start": started, "end": ended, "exit_code": proc.returncode}
    return result


def measure(prom: Prometheus, run: dict[str, Any]) -> dict[str, float | None]:
    """Return mean CPU and memory utilization Prometheus recorded for the run's pod."""
    pod = f'namespace="training",pod="mlp-{run["run_id"]}",container="trainer"'
    on = "/ on (namespace, pod, container) kube_pod_container_resource_limits"
    window = (run["start"], run["end"])
    cpu = prom.query_range(
        f'rate(container_cpu_usage_seconds_total{{{pod}}}[3s]) {on}{{{pod},resource="cpu"}}',
        *window,
    )
    mem = prom.query_range(
        f'container_memory_working_set_bytes{{{pod}}} {on}{{{pod},resource="memory"}}', *window
    )
    gpu = prom.query_range(f'DCGM_FI_DEV_GPU_UTIL{{pod="mlp-{run["run_id"]}"}}', *window)
    return {
        "cpu_util_mean": sum(cpu) / len(cpu) if cpu else None,
        "mem_util_mean": sum(mem) / len(mem) if mem else None,
        "gpu_util_mean": sum(gpu) / len(gpu) / 100.0 if gpu else None,
        "scrapes": float(len(cpu)),
    }


def local_catalog(out: Path) -> Path:
    """Write configs/metrics.toml with LOCAL_QUERY's steps into ``out``; return its path."""
    text = (HERE.parent.parent / "configs" / "metrics.toml").read_text()
    for key, value in LOCAL_QUERY.items():
        text, n = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
        if n != 1:
            raise RuntimeError(f"configs/metrics.toml has no line `{key} = ...` to adapt")
    path = out / "metrics.toml"
    path.write_text(text)
    return path


def jpo(command: str, config: Path, prom: Prometheus, out: Path, *extra: str) -> dict[str, Any]:
    """Run `jpo <command>` as CI would; return its exit code and output."""
    exe = Path(sys.executable).with_name("jpo")
    cmd = [str(exe) if exe.exists() else "jpo", command, "--config", str(config)]
    cmd += ["--prometheus", prom.url, "--metrics", str(out / "metrics.toml")]
    cmd += ["--json", "--log", str(out / "audit.jsonl"), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return {"cmd": cmd, "exit_code": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _said(result: dict[str, Any]) -> str:
    """Return what a jpo command printed (its JSON line or its error)."""
    return ((result["stdout"] or "").strip() or (result["stderr"] or "").strip())[-1500:]


def incumbent(runs: list[dict[str, Any]]) -> int:
    """Index of the fastest run whose val loss is within LOSS_TOLERANCE of run 1's."""
    limit = runs[0]["final_val_loss"] * (1.0 + LOSS_TOLERANCE)
    ok = [i for i, r in enumerate(runs) if r["exit_code"] == 0 and r["final_val_loss"] <= limit]
    return min(ok, key=lambda i: runs[i]["wall_s"])


def report(
    runs: list[dict[str, Any]], steps: list[dict[str, Any]], following: dict[str, Any]
) -> str:
    """Return the per-run table and what each jpo command said."""
    rows = [
        ("batch_size", lambda r: r["hyperparameters"]["batch_size"]),
        ("learning_rate", lambda r: r["hyperparameters"]["learning_rate"]),
        ("num_layers", lambda r: r["hyperparameters"]["num_layers"]),
        ("epochs", lambda r: r["hyperparameters"]["epochs"]),
        ("wall time (s)", lambda r: r["wall_s"]),
        ("final val loss", lambda r: r["final_val_loss"]),
        ("val accuracy", lambda r: r["val_accuracy"]),
        ("throughput (samples/s)", lambda r: r["throughput_mean"]),
        ("CPU util (of limit)", lambda r: r["measured"]["cpu_util_mean"]),
        ("memory util (of limit)", lambda r: r["measured"]["mem_util_mean"]),
        ("GPU util", lambda r: r["measured"]["gpu_util_mean"]),
        ("Prometheus samples", lambda r: r["measured"]["scrapes"]),
    ]
    lines = [f"{'':<24}" + "".join(f"{r['run_id']:>14}" for r in runs)]
    for label, get in rows:
        lines.append(f"{label:<24}" + "".join(f"{_fmt(get(r)):>14}" for r in runs))
    for i, step in enumerate(steps, start=1):
        for title, got in (
            (f"jpo suggest ({i})", step["suggest"]),
            (f"jpo feedback (run-{i + 1})", step["feedback"]),
        ):
            if got is not None:
                lines.append(f"{title} exit code {got['exit_code']}: {_said(got)}")
    title = "next jpo suggest (--dry-run)"
    lines.append(f"{title} exit code {following['exit_code']}: {_said(following)}")
    best = runs[incumbent(runs)]
    share = best["wall_s"] / runs[0]["wall_s"]
    lines.append(
        f"incumbent: {best['run_id']} (the fastest run with val loss within "
        f"{LOSS_TOLERANCE:.0%} of run-1's), wall time {share:.3f} of run-1's"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    augment = args.augment or (16 if args.short else 150)
    out = args.out or Path(tempfile.mkdtemp(prefix="jpo-digits-e2e-"))
    out.mkdir(parents=True, exist_ok=True)
    config = out / "config.ini"
    shutil.copyfile(HERE / "config.ini", config)
    local_catalog(out)
    history = ("--history", str(out / "history"))
    if args.short:
        text = re.sub(r"^epochs = \d+", "epochs = 2", config.read_text(), flags=re.M)
        config.write_text(text)
    from local_pod_exporter import LocalPodCollector, serve

    app_port, pod_port = free_port(), free_port()
    # This process plays kubelet + kube-state-metrics for the app's "pods": their CPU and
    # memory while they run, their labels and limits also after they completed.
    pods = LocalPodCollector()
    server = serve(pods, pod_port)
    prom = Prometheus(args.prometheus, out, {"digits-app": app_port, "digits-pod": pod_port})
    try:
        prom.wait_ready()
        prom.wait_scraping("digits-pod")  # the app's own target is up only while it runs
        runs = [train(config, "run-1", app_port, pods, augment, out)]
        time.sleep(2.0)  # one more scrape after the run's final samples
        runs[0]["measured"] = measure(prom, runs[0])
        policy = ("--policy", args.policy) if args.policy else ()
        steps: list[dict[str, Any]] = []
        for n in range(2, args.rounds + 2):
            suggested = jpo("suggest", config, prom, out, "--approve", *policy)
            run = train(config, f"run-{n}", app_port, pods, augment, out)
            time.sleep(2.0)
            run["measured"] = measure(prom, run)
            fed = None
            if suggested["exit_code"] == 0:  # a change is waiting for its outcome
                fed = jpo("feedback", config, prom, out, "--run-id", f"run-{n}", *history)
            runs.append(run)
            steps.append({"suggest": suggested, "feedback": fed})
        # what the pipeline's next run would do (a rollback after a degraded run)
        following = jpo("suggest", config, prom, out, "--approve", "--dry-run", *policy)
    finally:
        prom.stop()
        server.shutdown()  # type: ignore[attr-defined]
    summary = {
        "runs": runs,
        "steps": steps,
        "next_suggest": following,
        "incumbent": runs[incumbent(runs)]["run_id"],
        "out": str(out),
    }
    (out / "e2e.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(report(runs, steps, following))
    print(f"work folder: {out}")
    codes = [step["suggest"]["exit_code"] for step in steps] + [following["exit_code"]]
    broken = (
        any(run["exit_code"] != 0 for run in runs)
        or any(code not in OK_SUGGEST_CODES for code in codes)
        or any(
            step["feedback"] is not None and step["feedback"]["exit_code"] != 0 for step in steps
        )
    )
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
