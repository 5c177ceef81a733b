"""Ingest benchmark: Prometheus -> Arrow -> Parquet, JPO's batched pull vs a naive loop.

1. Generates OpenMetrics history for W workloads (cAdvisor, kube-state-metrics, DCGM and
   training series, runs of 4 h each) over H hours at a 15 s step, and backfills it into
   a real Prometheus with ``promtool tsdb create-blocks-from openmetrics``.
2. Runs, each in its own subprocess (so peak RSS is per method), alternating, R times:
   - ``jpo``: ``PrometheusSource.history`` (one range query per metric for all
     workloads, vectorized conversion) + ``jpo.telemetry.history.append_history``;
   - ``naive``: a loop over workloads x metrics, each a ``custom_query_range`` through
     prometheus-api-client, rows built in Python, then the same ``append_history``.
3. Checks both stores hold the same rows, and prints medians as JSON.

Usage: ``python benchmarks/ingest/bench_ingest.py [--small] [--repeats 3]``
(``--small``: 10 workloads x 6 h). Full size: 100 workloads x 6 metrics x 24 h.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from jpo.reporting.machine import describe_machine

ROOT = Path(__file__).resolve().parents[2]
METRICS = ["cpu_util", "mem_util", "gpu_util", "gpu_mem_util", "throughput", "val_loss"]
STEP_S = 15.0
RUN_HOURS = 4.0
FRAMEWORKS = ["pytorch", "jax", "tensorflow"]


def workload(i: int) -> tuple[str, str, str]:
    return (f"ds{i:03d}", f"model{i:03d}", FRAMEWORKS[i % 3])


def _labels(d: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in d.items()) + "}"


def generate_openmetrics(path: Path, n_workloads: int, hours: float, end: float) -> int:
    """Write the raw series of every workload's runs to ``path``; return the sample count."""
    rng = np.random.default_rng(0)
    start = end - hours * 3600
    times = np.arange(start, end + STEP_S / 2, STEP_S)
    run_len = int(RUN_HOURS * 3600 / STEP_S)
    families: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}

    def add(name: str, labels: dict[str, str], ts: np.ndarray, values: np.ndarray) -> None:
        families.setdefault(name, []).append((_labels(labels), ts, values))

    for w in range(n_workloads):
        ds, model, fw = workload(w)
        for r, first in enumerate(range(0, len(times), run_len)):
            ts = times[first : first + run_len]
            n = len(ts)
            run_id = f"r{r}"
            pod = {"namespace": "training", "pod": f"{model}-{run_id}"}
            cont = pod | {"container": "trainer"}
            cores = 1.0 + 3.0 * rng.random()
            cpu = np.cumsum(np.full(n, cores * STEP_S) * (0.8 + 0.4 * rng.random(n)))
            add("container_cpu_usage_seconds_total", cont, ts, cpu)
            add("container_memory_working_set_bytes", cont, ts, 2e9 + 1e9 * rng.random(n))
            lim = "kube_pod_container_resource_limits"
            add(lim, cont | {"resource": "cpu", "unit": "core"}, ts, np.full(n, 4.0))
            add(lim, cont | {"resource": "memory", "unit": "byte"}, ts, np.full(n, 4e9))
            pod_labels = pod | {
                "label_dataset": ds,
                "label_model": model,
                "label_framework": fw,
                "label_run_id": run_id,
            }
            add("kube_pod_labels", pod_labels, ts, np.ones(n))
            gpu = {"gpu": "0", "UUID": f"GPU-{w}-{r}", "modelName": "A100", "Hostname": "n1"}
            gpu |= cont
            used = 20000 + 5000 * rng.random(n)
            add("DCGM_FI_DEV_GPU_UTIL", gpu, ts, np.round(100 * rng.random(n)))
            add("DCGM_FI_DEV_FB_USED", gpu, ts, np.round(used))
            add("DCGM_FI_DEV_FB_FREE", gpu, ts, np.round(40960 - used))
            train = {"dataset": ds, "model": model, "framework": fw, "run_id": run_id}
            add("jpo_training_throughput_samples_per_second", train, ts, 1000 * rng.random(n))
            add("jpo_training_validation_loss", train, ts, 1 + rng.random(n))
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for name, series in families.items():
            kind = "counter" if name.endswith("_total") else "gauge"
            out.write(
                f"# TYPE {name.removesuffix('_total') if kind == 'counter' else name} {kind}\n"
            )
            for labels, ts, values in series:
                prefix = f"{name}{labels} "
                out.write(
                    "\n".join(
                        prefix + v + " " + t
                        for v, t in zip(
                            np.char.mod("%.6g", values).tolist(),
                            np.char.mod("%.0f", ts).tolist(),
                            strict=True,
                        )
                    )
                )
                out.write("\n")
                count += len(ts)
        out.write("# EOF\n")
    return count


def run_jpo(url: str, store: Path, start: float, end: float) -> dict[str, float]:
    from jpo.telemetry.history import append_history
    from jpo.telemetry.prometheus import PrometheusClient
    from jpo.telemetry.promql import load_catalog
    from jpo.telemetry.sources import PrometheusSource

    client = PrometheusClient(url, timeout_s=600, retries=0)
    source = PrometheusSource(client, load_catalog(), metrics=METRICS)
    t0 = time.perf_counter()
    table = source.history(start, end, STEP_S)
    t1 = time.perf_counter()
    added = append_history(store, table)
    t2 = time.perf_counter()
    return {
        "samples": table.num_rows,
        "added": added,
        "queries": len(METRICS),
        "fetch_s": t1 - t0,
        "write_s": t2 - t1,
        "wall_s": t2 - t0,
    }


def run_naive(
    url: str, store: Path, start: float, end: float, n_workloads: int
) -> dict[str, float]:
    import pyarrow as pa
    from prometheus_api_client import PrometheusConnect

    from jpo.telemetry.history import append_history
    from jpo.telemetry.promql import load_catalog
    from jpo.telemetry.schema import HISTORY_SCHEMA
    from jpo.workload.types import WorkloadKey

    catalog = load_catalog()
    prom = PrometheusConnect(url=url, disable_ssl=True)
    rows: dict[str, list] = {n: [] for n in HISTORY_SCHEMA.names}
    t0 = time.perf_counter()
    queries = 0
    for w in range(n_workloads):
        key = WorkloadKey(*workload(w))
        for metric in METRICS:
            labels = catalog.labels(catalog.metrics[metric].label_set)
            result = prom.custom_query_range(
                catalog.render(metric, key),
                start_time=datetime.fromtimestamp(start, UTC),
                end_time=datetime.fromtimestamp(end, UTC),
                step=f"{STEP_S:g}s",
            )
            queries += 1
            for series in result:
                m = series["metric"]
                for ts, value in series["values"]:
                    rows["timestamp"].append(round(float(ts) * 1000))
                    rows["dataset"].append(m[labels[0]])
                    rows["model"].append(m[labels[1]])
                    rows["framework"].append(m[labels[2]])
                    rows["run_id"].append(m[labels[3]])
                    rows["metric"].append(metric)
                    rows["value"].append(float(value))
    rows["timestamp"] = pa.array(rows["timestamp"], pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    table = pa.table(rows).cast(HISTORY_SCHEMA)
    t1 = time.perf_counter()
    added = append_history(store, table)
    t2 = time.perf_counter()
    return {
        "samples": table.num_rows,
        "added": added,
        "queries": queries,
        "fetch_s": t1 - t0,
        "write_s": t2 - t1,
        "wall_s": t2 - t0,
    }


def _peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM; unlike ru_maxrss it is not inherited over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> None:
    store = Path(args.store)
    if args.child == "jpo":
        out = run_jpo(args.url, store, args.start, args.end)
    else:
        out = run_naive(args.url, store, args.start, args.end, args.naive_workloads)
    out["peak_rss_mib"] = _peak_rss_mib()
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="10 workloads x 6 h")
    parser.add_argument("--workloads", type=int, default=None)
    parser.add_argument("--hours", type=float, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--naive-workloads",
        type=int,
        default=None,
        help="run the naive loop over only the first N workloads",
    )
    parser.add_argument("--child", choices=["jpo", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--end", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    n = args.workloads or (10 if args.small else 100)
    hours = args.hours or (6.0 if args.small else 24.0)
    naive_n = min(args.naive_workloads or n, n)
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import PrometheusServer  # the tests' real-Prometheus helper

    with tempfile.TemporaryDirectory(prefix="jpo-ingest-") as tmp:
        tmp_path = Path(tmp)
        end = float(int(time.time() // 3600) * 3600)
        start = end - hours * 3600
        om = tmp_path / "history.om"
        t = time.perf_counter()
        raw = generate_openmetrics(om, n, hours, end)
        gen_s = time.perf_counter() - t
        server = PrometheusServer(tmp_path / "prom")
        t = time.perf_counter()
        cmd = ["promtool", "tsdb", "create-blocks-from", "openmetrics", "-q", str(om)]
        subprocess.run([*cmd, str(server.data_dir)], check=True)
        backfill_s = time.perf_counter() - t
        om.unlink()
        server.start()
        results: dict[str, list[dict]] = {"jpo": [], "naive": []}
        try:
            for rep in range(args.repeats):
                for method in ("jpo", "naive"):
                    store = tmp_path / f"store-{method}-{rep}"
                    cmd = [
                        sys.executable,
                        __file__,
                        "--child",
                        method,
                        "--url",
                        server.url,
                        "--store",
                        str(store),
                        "--start",
                        str(start),
                        "--end",
                        str(end),
                        "--naive-workloads",
                        str(naive_n),
                    ]
                    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                    if done.returncode:
                        raise SystemExit(f"{method} failed:\n{done.stderr[-3000:]}")
                    res = json.loads(done.stdout.strip().splitlines()[-1])
                    results[method].append(res)
                    print(method, rep, res, file=sys.stderr, flush=True)
            from jpo.telemetry.history import read_history
            from jpo.workload.types import WorkloadKey

            keys = [WorkloadKey(*workload(w)) for w in range(naive_n)]
            a = read_history(tmp_path / "store-jpo-0", keys)
            b = read_history(tmp_path / "store-naive-0", keys)
            identical = a.equals(b)
        finally:
            server.stop()

    def med(method: str, field: str) -> float:
        return statistics.median(r[field] for r in results[method])

    summary = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "workloads": n,
        "hours": hours,
        "step_s": STEP_S,
        "metrics": len(METRICS),
        "raw_samples_backfilled": raw,
        "generate_s": round(gen_s, 2),
        "promtool_backfill_s": round(backfill_s, 2),
        "repeats": args.repeats,
        "naive_workloads": naive_n,
        "load_average_after": os.getloadavg(),
        "stores_identical_on_naive_workloads": identical,
    }
    for method in ("jpo", "naive"):
        samples = results[method][0]["samples"]
        summary[method] = {
            "queries": results[method][0]["queries"],
            "samples": samples,
            "wall_s_median": round(med(method, "wall_s"), 3),
            "fetch_s_median": round(med(method, "fetch_s"), 3),
            "write_s_median": round(med(method, "write_s"), 3),
            "samples_per_s": round(samples / med(method, "wall_s")),
            "peak_rss_mib_median": round(med(method, "peak_rss_mib"), 1),
            "wall_s_all": [round(r["wall_s"], 3) for r in results[method]],
        }
    jpo_rate = summary["jpo"]["samples_per_s"]
    summary["speedup_samples_per_s"] = round(jpo_rate / summary["naive"]["samples_per_s"], 2)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
