"""Benchmark of jpo/sim/: predict() per call, history generation runs/s, calibration error.

Run: python benchmarks/simulate/bench.py [--runs 20] [--repeats 3]
Prints a Markdown report (paste into RESULTS.md).
"""

import argparse
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from jpo.reporting.machine import machine_line
from jpo.sim.calibration import FITTED, fit_profile
from jpo.sim.response import (
    load_catalog,
    load_conditions,
    load_profile,
    predict,
    simulate_run,
)
from jpo.sim.simulator import generate_history, generate_runs
from jpo.workload.types import Hyperparameters


def bench_predict(repeats):
    cond = load_conditions()
    rows = []
    for name in ("cifar10-resnet18", "squad-bert-large", "imagenet-efficientnet"):
        p = load_profile(name)
        hp = p.defaults
        per = []
        for _ in range(repeats):
            n = 20000
            t = time.perf_counter()
            for _ in range(n):
                predict(p, hp, cond)
            per.append((time.perf_counter() - t) / n * 1e6)
        rows.append((name, float(np.median(per))))
    return rows


def bench_history(runs, repeats):
    names = list(load_catalog())
    out = {}
    for what in ("simulate only", "simulate + Parquet", "simulate + Parquet + OpenMetrics"):
        times, n_runs, rows, samples = [], 0, 0, 0
        for r in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                if what == "simulate only":
                    sim = generate_runs(names, runs, seed=r, end=1.79e9)
                    n_runs = len(sim)
                    rows = sum(x.table.num_rows for x in sim)
                else:
                    om = Path(tmp) / "h.om" if "OpenMetrics" in what else None
                    res = generate_history(
                        names, runs, Path(tmp) / "store", openmetrics=om, seed=r, end=1.79e9
                    )
                    n_runs, rows, samples = len(res.runs), res.parquet_rows, res.openmetrics_samples
                times.append(time.perf_counter() - t)
        med = float(np.median(times))
        out[what] = (n_runs, med, n_runs / med, rows, samples)
    return out


def hidden_profile(prior, rng, spread=1.0):
    return replace(
        prior,
        **{
            n: getattr(prior, n) * float(np.exp(rng.uniform(-spread, spread)))
            for n in FITTED
            if getattr(prior, n) > 0
        },
    )


def hp_settings(p, rng, n):
    d = p.defaults
    return [
        Hyperparameters(
            max(1, int(d.batch_size * 2.0 ** int(rng.integers(-2, 3)))),
            d.learning_rate * math.exp(rng.normal(0.0, 0.7)),
            max(1, round(d.num_layers * rng.uniform(0.6, 1.5))),
            max(1, round(d.epochs * rng.uniform(0.5, 1.6))),
        )
        for _ in range(n)
    ]


def record(profile, hps, cond, off):
    return [
        (
            hp,
            simulate_run(
                profile, hp, cond, rng=np.random.default_rng([off, i]), run_id="r", start=0.0
            ).summary,
        )
        for i, hp in enumerate(hps)
    ]


def rel(pred, rec, k):
    return 1.0 if pred.failure != "none" else abs(getattr(pred, k) / getattr(rec, k) - 1)


def bench_calibration(seeds):
    cond = load_conditions()
    obs = ("gpu_util_mean", "cpu_util_mean", "throughput", "final_val_loss")
    errs = {k: [] for k in obs}
    prior_errs = {k: [] for k in obs}
    wrong_failure = total = 0
    fit_s = []
    for name, p in load_catalog().items():
        for seed in range(seeds):
            rng = np.random.default_rng([seed, len(name)])
            hidden = hidden_profile(p, rng)
            train = record(hidden, hp_settings(hidden, rng, 10), cond, seed)
            held = record(hidden, hp_settings(hidden, rng, 8), cond, seed + 1000)
            if not any(s.failure == "none" for _, s in train):
                continue
            t = time.perf_counter()
            fitted = fit_profile(hidden.key, train, p, conditions=cond)
            fit_s.append(time.perf_counter() - t)
            for hp, s in held:
                if s.failure != "none" or s.duration_s < 300:
                    continue
                total += 1
                pr, pp = predict(fitted, hp, cond), predict(p, hp, cond)
                if pr.failure != "none":
                    wrong_failure += 1
                for k in obs:
                    errs[k].append(rel(pr, s, k))
                    prior_errs[k].append(rel(pp, s, k))
    return errs, prior_errs, wrong_failure, total, fit_s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=3)
    a = ap.parse_args()
    print(f"Machine: {machine_line()}; date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print(f"## predict() per call (median of {a.repeats} x 20,000 calls)\n")
    print("| profile | µs/call |\n|---|---|")
    for name, us in bench_predict(a.repeats):
        print(f"| {name} | {us:.2f} |")
    print(f"\n## History generation: {a.runs} runs x 15 workloads (median of {a.repeats})\n")
    print("| what | runs | seconds | runs/s | Parquet rows | OpenMetrics samples |")
    print("|---|---|---|---|---|---|")
    for what, (n, sec, rps, rows, samples) in bench_history(a.runs, a.repeats).items():
        print(f"| {what} | {n} | {sec:.2f} | {rps:.1f} | {rows} | {samples or '-'} |")
    errs, prior_errs, wrong, total, fit_s = bench_calibration(a.seeds)
    print(
        f"\n## Calibration: hidden profiles (constants x e^U(-1,1)), 10 noisy runs each, "
        f"{a.seeds} seeds x 15 workloads; {total} held-out runs >= 5 min\n"
    )
    print("| observable | fitted median | fitted p90 | fitted max | prior-only median |")
    print("|---|---|---|---|---|")
    for k in errs:
        e = np.array(errs[k])
        prior = np.median(prior_errs[k])
        print(
            f"| {k} | {np.median(e):.1%} | {np.percentile(e, 90):.1%} | {e.max():.1%} "
            f"| {prior:.1%} |"
        )
    print(
        f"\nHeld-out runs the fitted model wrongly predicts to fail: {wrong}/{total}. "
        f"Fit time median {np.median(fit_s):.2f} s, max {np.max(fit_s):.2f} s."
    )


if __name__ == "__main__":
    main()
