"""Replay-env throughput: env steps per second, single process and gymnasium vector envs.

Usage::

    python benchmarks/env/bench_env.py [--steps 20000] [--repeats 5] [--out RESULTS.json]

Each case runs ``--repeats`` timed runs of ``--steps`` env steps (a vector step of n envs
counts n env steps) with uniformly random actions, after a warm-up; cases are timed
round-robin so that load from other processes hits them alike. Printed: the median and
every run of wall-clock steps/s, and the median of steps per CPU-second of the calling
process (robust to a shared machine; for AsyncVectorEnv it excludes the workers' CPU).
Construction (the catalog history is simulated once per process) is
timed separately and excluded from steps/s.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import jpo.sim  # noqa: F401  (registers jpo/PrometheusReplay-v0)
from jpo.sim.replay_env import ENV_ID, PrometheusReplayEnv

CONFIG: dict = {}  # the defaults of configs/env.toml: catalog train split, 24 runs each


def time_single(env: gym.Env, steps: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, size=(steps, *env.action_space.shape)).astype(np.float32)
    env.reset(seed=seed)
    t0, c0 = time.perf_counter(), time.process_time()
    for a in actions:
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()
    return steps / (time.perf_counter() - t0), steps / (time.process_time() - c0)


def time_vector(env: gym.vector.VectorEnv, steps: int, seed: int) -> float:
    n = env.num_envs
    rng = np.random.default_rng(seed)
    shape = env.action_space.shape
    actions = rng.uniform(-1, 1, size=(steps // n, *shape)).astype(np.float32)
    env.reset(seed=seed)
    t0, c0 = time.perf_counter(), time.process_time()
    for a in actions:
        env.step(a)
    done = len(actions) * n
    return done / (time.perf_counter() - t0), done / (time.process_time() - c0)


def run_cases(cases: list, steps: int, repeats: int) -> list[dict]:
    """Build every case, warm it up, then time them round-robin (load hits all alike)."""
    built = []
    for name, make, timer in cases:
        t0 = time.perf_counter()
        env = make()
        build_s = time.perf_counter() - t0
        timer(env, min(steps, 2000), 123)  # warm-up
        built.append((name, env, timer, build_s))
    rates: dict[str, list[float]] = {name: [] for name, *_ in built}
    cpu_rates: dict[str, list[float]] = {name: [] for name, *_ in built}
    for seed in range(repeats):
        for name, env, timer, _ in built:
            wall, cpu = timer(env, steps, seed)
            rates[name].append(wall)
            cpu_rates[name].append(cpu)
    results = []
    for name, env, _, build_s in built:
        env.close()
        res = {
            "case": name,
            "median_steps_per_s": statistics.median(rates[name]),
            "runs": rates[name],
            "median_steps_per_cpu_s": statistics.median(cpu_rates[name]),
            "build_s": build_s,
        }
        results.append(res)
        print(
            f"{name:42s} median {res['median_steps_per_s']:>9,.0f} steps/s   runs "
            + ", ".join(f"{r:,.0f}" for r in rates[name])
            + f"   | per CPU-s of this process {res['median_steps_per_cpu_s']:,.0f}"
            + f"   (build {build_s:.1f} s)",
            flush=True,
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    def make_env() -> gym.Env:
        return gym.make(ENV_ID, config=CONFIG)

    def make_class() -> gym.Env:
        return PrometheusReplayEnv(CONFIG)

    def make_sync() -> gym.vector.VectorEnv:
        return gym.vector.SyncVectorEnv([make_env] * 2)

    def make_async() -> gym.vector.VectorEnv:
        return gym.vector.AsyncVectorEnv([make_env] * 2)

    def make_bare() -> gym.Env:
        return gym.make(ENV_ID, config={**CONFIG, "step_info": False})

    def make_sync_bare() -> gym.vector.VectorEnv:
        return gym.vector.SyncVectorEnv([make_bare] * 2)

    def make_async_bare() -> gym.vector.VectorEnv:
        return gym.vector.AsyncVectorEnv([make_bare] * 2)

    cases = [
        ("PrometheusReplayEnv (class, no wrappers)", make_class, time_single),
        ("gym.make (env checker + order wrappers)", make_env, time_single),
        ("SyncVectorEnv x2", make_sync, time_vector),
        ("AsyncVectorEnv x2 (2 worker processes)", make_async, time_vector),
        ("SyncVectorEnv x2, step_info=false", make_sync_bare, time_vector),
        ("AsyncVectorEnv x2, step_info=false", make_async_bare, time_vector),
    ]
    results = run_cases(cases, args.steps, args.repeats)
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    lines = [ln for ln in cpu.splitlines() if "Model name" in ln]
    model = lines[0].split(":", 1)[1].strip() if lines else "?"
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "nproc": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
        "cpu": model,
        "python": platform.python_version(),
        "gymnasium": gym.__version__,
        "loadavg_end": Path("/proc/loadavg").read_text().split()[:3],
        "steps": args.steps,
        "repeats": args.repeats,
    }
    print(json.dumps(meta))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"meta": meta, "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
