"""Serve latency under load: 50 concurrent clients for 60 s on loopback.

Targets, measured one after the other in the same run:
  * the Ray Serve app (jpo/serving/app.py: proxy -> replica -> FastAPI -> numpy policy),
    1 replica, local Ray with 2 CPUs;
  * the same FastAPI app (jpo/serving/api.py) under plain uvicorn, no Ray (the floor).

Two load shapes, both with 50 clients (one connection each, httpx.AsyncClient):

  * closed loop (``--rate 0``, the default): each client sends its next request as soon
    as the previous answer arrives, so the offered load is whatever the server sustains
    and latency is queueing (Little's law: clients / throughput);
  * paced (``--rate R``): each client sends R requests/s on a fixed schedule (open loop,
    staggered starts); latency counts from the SCHEDULED send time, so a stalled server
    is charged for the requests it delayed (no coordinated omission).

A non-200 answer or a transport error counts as an error. The load generator runs in its
own process (``--client-procs`` processes sharing the clients), never in the server's.

    python benchmarks/serve/bench_serve_latency.py --clients 50 --duration 60
    python benchmarks/serve/bench_serve_latency.py --clients 50 --duration 60 --rate 1
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks" / "suggest"))

from bench_cold_suggest import policy_like_sac  # noqa: E402

from jpo.learning.features import FEATURE_SPEC_VERSION, OBSERVATION_NAMES  # noqa: E402
from jpo.net import free_port  # noqa: E402

BODY = {
    "workload": {"dataset": "cifar10", "model": "resnet18", "framework": "pytorch"},
    "hyperparameters": {"batch_size": 64, "learning_rate": 0.01, "num_layers": 18, "epochs": 30},
    "features": [0.1] * len(OBSERVATION_NAMES),
    "feature_spec_version": FEATURE_SPEC_VERSION,
}


async def _clients(
    url: str, clients: int, duration: float, rate: float
) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=10.0, limits=limits) as client:
        begin = time.perf_counter()
        stop = begin + duration

        async def worker(i: int) -> None:
            nonlocal errors
            period = 1.0 / rate if rate > 0 else 0.0
            due = begin + (i / clients) * period  # staggered schedule (paced mode)
            while True:
                now = time.perf_counter()
                if rate > 0:
                    if due >= stop:
                        return
                    if due > now:
                        await asyncio.sleep(due - now)
                    t0 = due
                    due += period
                else:
                    if now >= stop:
                        return
                    t0 = now
                try:
                    r = await client.post(f"{url}/v1/suggest", json=BODY)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        await asyncio.gather(*(worker(i) for i in range(clients)))
        wall = time.perf_counter() - begin
    return latencies, errors, wall


def _client_proc(url: str, clients: int, duration: float, rate: float, out: mp.Queue) -> None:
    out.put(asyncio.run(_clients(url, clients, duration, rate)))


def load(
    url: str, clients: int, duration: float, rate: float = 0.0, procs: int = 1
) -> dict[str, float]:
    """Run the load from ``procs`` separate processes; return merged latency figures."""
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    workers = [
        ctx.Process(target=_client_proc, args=(url, n, duration, rate, out)) for n in shares if n
    ]
    for w in workers:
        w.start()
    results = [out.get() for _ in workers]
    for w in workers:
        w.join()
    latencies = sorted(x for r in results for x in r[0])
    errors = sum(r[1] for r in results)
    wall = max(r[2] for r in results)
    n = len(latencies)
    return {
        "requests": n,
        "errors": errors,
        "rps": n / wall,
        "p50_ms": 1000 * statistics.median(latencies) if n else float("nan"),
        "p99_ms": 1000 * latencies[min(n - 1, int(0.99 * n))] if n else float("nan"),
        "max_ms": 1000 * latencies[-1] if n else float("nan"),
    }


def wait_healthy(url: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} never became healthy")


def bench_ray(
    policy: Path, clients: int, duration: float, rate: float, procs: int
) -> dict[str, float]:
    import ray
    from ray import serve

    from jpo.serving.app import build_app

    port = free_port()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=100 * 1024 * 1024,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app({"policy_path": str(policy), "poll_interval_s": 0}), name="jpo")
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url)
        load(url, clients, 3.0, rate, procs)  # warm-up, not counted
        return load(url, clients, duration, rate, procs)
    finally:
        serve.shutdown()
        ray.shutdown()


def _uvicorn_proc(policy: str, port: int) -> None:
    import uvicorn

    from jpo.serving.api import PolicyService, create_api

    app = create_api(PolicyService(Path(policy)))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")


def bench_uvicorn(
    policy: Path, clients: int, duration: float, rate: float, procs: int
) -> dict[str, float]:
    port = free_port()
    server = mp.get_context("spawn").Process(target=_uvicorn_proc, args=(str(policy), port))
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url)
        load(url, clients, 3.0, rate, procs)
        return load(url, clients, duration, rate, procs)
    finally:
        server.terminate()
        server.join(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="requests/s per client (0: closed loop)"
    )
    parser.add_argument("--client-procs", type=int, default=1, help="load-generator processes")
    parser.add_argument("--skip-uvicorn", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    policy = policy_like_sac(Path(tempfile.mkdtemp(prefix="bench-serve-")) / "policy")
    run = (policy, args.clients, args.duration, args.rate, args.client_procs)
    rows = {"ray serve (1 replica)": bench_ray(*run)}
    if not args.skip_uvicorn:
        rows["uvicorn, no ray"] = bench_uvicorn(*run)
    shape = f"paced {args.rate:g} req/s per client" if args.rate > 0 else "closed loop"
    print(
        f"{args.clients} clients x {args.duration:g} s ({shape}, {args.client_procs} client "
        f"process(es)), POST /v1/suggest on loopback; nproc={os.cpu_count()}, "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    for name, r in rows.items():
        print(
            f"{name:22s} requests {r['requests']:6d}  errors {r['errors']:4d}  "
            f"{r['rps']:7.1f} req/s  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  "
            f"max {r['max_ms']:7.1f} ms"
        )


if __name__ == "__main__":
    main()
