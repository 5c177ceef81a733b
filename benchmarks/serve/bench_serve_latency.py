"""Serve latency under load: 50 concurrent clients for 60 s on loopback.

Targets, measured one after the other in the same run:
  * the Ray Serve app (serve/app.py: proxy -> replica -> FastAPI -> numpy policy),
    1 replica, local Ray with 2 CPUs;
  * the same FastAPI app (serve/api.py) under plain uvicorn, no Ray (the floor).

Each client loops POST /v1/suggest (features body) and records wall latency; a non-200
answer or a transport error counts as an error. httpx.AsyncClient, one connection per
client, all in this process.

    python benchmarks/serve/bench_serve_latency.py --clients 50 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks" / "suggest"))

from bench_cold_suggest import policy_like_sac  # noqa: E402

from jpo.features import FEATURE_SPEC_VERSION, OBSERVATION_NAMES  # noqa: E402

BODY = {
    "workload": {"dataset": "cifar10", "model": "resnet18", "framework": "pytorch"},
    "hyperparameters": {"batch_size": 64, "learning_rate": 0.01, "num_layers": 18, "epochs": 30},
    "features": [0.1] * len(OBSERVATION_NAMES),
    "feature_spec_version": FEATURE_SPEC_VERSION,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def load(url: str, clients: int, duration: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=10.0, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    r = await client.post(f"{url}/v1/suggest", json=BODY)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                dt = time.perf_counter() - t0
                if ok:
                    latencies.append(dt)
                else:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    latencies.sort()
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


def bench_ray(policy: Path, clients: int, duration: float) -> dict[str, float]:
    import ray
    from ray import serve

    from serve.app import build_app

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
        asyncio.run(load(url, clients, 3.0))  # warm-up, not counted
        return asyncio.run(load(url, clients, duration))
    finally:
        serve.shutdown()
        ray.shutdown()


def bench_uvicorn(policy: Path, clients: int, duration: float) -> dict[str, float]:
    import uvicorn

    from serve.api import PolicyService, create_api

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_api(PolicyService(policy)),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url)
        asyncio.run(load(url, clients, 3.0))
        return asyncio.run(load(url, clients, duration))
    finally:
        server.should_exit = True
        thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--skip-uvicorn", action="store_true")
    args = parser.parse_args()
    policy = policy_like_sac(Path(tempfile.mkdtemp(prefix="bench-serve-")) / "policy")
    rows = {"ray serve (1 replica)": bench_ray(policy, args.clients, args.duration)}
    if not args.skip_uvicorn:
        rows["uvicorn, no ray"] = bench_uvicorn(policy, args.clients, args.duration)
    print(f"{args.clients} clients x {args.duration:g} s, POST /v1/suggest on loopback")
    for name, r in rows.items():
        print(
            f"{name:22s} requests {r['requests']:6d}  errors {r['errors']:4d}  "
            f"{r['rps']:7.1f} req/s  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  "
            f"max {r['max_ms']:7.1f} ms"
        )


if __name__ == "__main__":
    main()
