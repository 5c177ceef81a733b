"""RLlib SAC learner on the CPU vs on a CUDA GPU, side by side in one process.

Each variant builds SAC from ``configs/train.yaml`` with overrides (batch size, network
width, torch threads, device), runs past the random warm-up, then times whole training
iterations until ``--budget-s`` seconds have passed. Reported per variant: the median
over iterations of gradient updates/s and env steps/s. CPU and GPU variants of one
(batch, width) pair run back to back, so machine load hits both alike.

Run:  python benchmarks/train/bench_gpu.py --out benchmarks/train/bench_gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

# (name, batch, hidden widths, torch threads (None: torch's default), GPUs per learner)
VARIANTS: list[tuple[str, int, list[int], int | None, float]] = [
    ("b64_w128_cpu", 64, [128, 128], 1, 0.0),  # configs/train.yaml as shipped
    ("b64_w128_gpu", 64, [128, 128], 1, 1.0),
    ("b256_w128_cpu", 256, [128, 128], 1, 0.0),
    ("b256_w128_gpu", 256, [128, 128], 1, 1.0),
    ("b1024_w128_cpu", 1024, [128, 128], 1, 0.0),
    ("b1024_w128_gpu", 1024, [128, 128], 1, 1.0),
    ("b1024_w512_cpu_all_threads", 1024, [512, 512], None, 0.0),
    ("b1024_w512_gpu", 1024, [512, 512], 1, 1.0),
]


def run_variant(
    name: str, batch: int, hiddens: list[int], threads: int | None, gpus: float, budget_s: float
) -> dict[str, Any]:
    """Time one SAC configuration; rates are per-iteration medians after the warm-up."""
    import torch

    from jpo.train.trainer import build_sac_config, load_train_config

    cfg = load_train_config(
        REPO / "configs" / "train.yaml",
        {
            "sac.train_batch_size_per_learner": batch,
            "sac.num_steps_sampled_before_learning_starts": 300,
            "model.fcnet_hiddens": hiddens,
            "reporting.min_sample_timesteps_per_iteration": 50,
            "reporting.progress_bar": False,
        },
    )
    torch.set_num_threads(threads or os.cpu_count() or 1)
    algo = build_sac_config(cfg, num_learners=0, num_gpus_per_learner=gpus).build_algo()
    try:
        module = algo.learner_group._learner.module["default_policy"]
        device = next(module.parameters()).device.type

        def counters(res: dict[str, Any]) -> tuple[float, float]:
            env = res["env_runners"]["num_env_steps_sampled_lifetime"]
            trained = res.get("learners", {}).get("__all_modules__", {})
            return float(env), float(trained.get("num_env_steps_trained_lifetime", 0.0)) / batch

        res = algo.train()
        while counters(res)[1] < 1:  # past warm-up, and the first (compiling) update done
            res = algo.train()
        env_rates: list[float] = []
        upd_rates: list[float] = []
        start = time.perf_counter()
        while time.perf_counter() - start < budget_s or len(upd_rates) < 3:
            env0, upd0 = counters(res)
            t0 = time.perf_counter()
            res = algo.train()
            dt = time.perf_counter() - t0
            env1, upd1 = counters(res)
            env_rates.append((env1 - env0) / dt)
            upd_rates.append((upd1 - upd0) / dt)
    finally:
        algo.stop()
    return {
        "variant": name,
        "batch": batch,
        "hiddens": hiddens,
        "torch_threads": threads or os.cpu_count(),
        "gpus_per_learner": gpus,
        "learner_device": device,
        "iterations_timed": len(upd_rates),
        "updates_per_s_median": statistics.median(upd_rates),
        "env_steps_per_s_median": statistics.median(env_rates),
        "samples_per_s_median": statistics.median(upd_rates) * batch,
    }


def machine() -> dict[str, Any]:
    """Where the figures were measured."""
    import ray
    import torch

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    return {
        "nproc": os.cpu_count(),
        "cpu": next(
            (x.split(":", 1)[1].strip() for x in lscpu if x.startswith("Model name")),
            platform.processor(),
        ),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "ray": ray.__version__,
        "python": platform.python_version(),
        "load_avg_at_end": list(os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main() -> None:
    """Run the variants (GPU ones only where CUDA is visible) and write the JSON."""
    import ray
    import torch

    p = argparse.ArgumentParser()
    p.add_argument("--budget-s", type=float, default=15.0, help="timed seconds per variant")
    p.add_argument("--variants", nargs="*", default=[v[0] for v in VARIANTS])
    p.add_argument("--out", default=str(REPO / "benchmarks" / "train" / "bench_gpu.json"))
    args = p.parse_args()
    cuda = torch.cuda.is_available()
    ray.init(num_cpus=4, num_gpus=1 if cuda else 0, include_dashboard=False, log_to_driver=False)
    rows = []
    try:
        for name, batch, hiddens, threads, gpus in VARIANTS:
            if name not in args.variants or (gpus and not cuda):
                continue
            row = run_variant(name, batch, hiddens, threads, gpus, args.budget_s)
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        ray.shutdown()
    by_name = {r["variant"]: r for r in rows}
    for row in rows:
        cpu = by_name.get(row["variant"].replace("_gpu", "_cpu")) or by_name.get(
            row["variant"].replace("_gpu", "_cpu_all_threads")
        )
        if row["gpus_per_learner"] and cpu:
            row["gpu_over_cpu_updates"] = row["updates_per_s_median"] / cpu["updates_per_s_median"]
    Path(args.out).write_text(
        json.dumps({"machine": machine(), "args": vars(args), "rows": rows}, indent=2)
    )
    for r in rows:
        ratio = r.get("gpu_over_cpu_updates")
        print(
            f"{r['variant']:>28} ({r['learner_device']}): "
            f"{r['updates_per_s_median']:8.1f} updates/s  "
            f"{r['samples_per_s_median']:10.0f} samples/s"
            + (f"  x{ratio:.2f} of CPU" if ratio else "")
        )


if __name__ == "__main__":
    main()
