"""RLlib SAC vs a minimal single-file PyTorch SAC: env steps/s and gradient updates/s.

Both run in THIS process, one after the other, on the same env (jpo/PrometheusReplay-v0,
training split), the same network sizes, batch size and update-to-data ratio. RLlib is run
in one or more configurations ("variants", overrides of configs/train.yaml) to show which
settings close the gap. Rates are measured after the warm-up (no updates before
``num_steps_sampled_before_learning_starts``), over whole training iterations.

Run:  python benchmarks/train/bench.py --steps 200 --warmup 250 --repeats 3
      (--variants names any of VARIANTS: RLlib's own paths, jpo/train/sac_fast.py's paths
      one by one, the opt-in fragment8 schedule, and the older tuning rows)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_THREADS = __import__("torch").get_num_threads()  # torch's default, before any change
sys.path.insert(0, str(REPO / "benchmarks" / "train"))

PRIORITIZED = {"type": "PrioritizedEpisodeReplayBuffer", "capacity": 100000}
UNIFORM = {"type": "EpisodeReplayBuffer", "capacity": 100000}
VARIANTS: dict[str, dict] = {
    # RLlib's SAC defaults: prioritized replay, batch 256, torch's default threads.
    "prioritized_b256": {
        "sac.replay_buffer": PRIORITIZED,
        "sac.train_batch_size_per_learner": 256,
        "resources.torch_threads": None,
    },
    # Uniform replay (the prioritized buffer walks a segment tree per sample).
    "uniform_b256": {
        "sac.replay_buffer": UNIFORM,
        "sac.train_batch_size_per_learner": 256,
        "resources.torch_threads": None,
    },
    # + one torch thread (2 shared cores: no oversubscription).
    "uniform_b256_1thread": {
        "sac.replay_buffer": UNIFORM,
        "sac.train_batch_size_per_learner": 256,
        "resources.torch_threads": 1,
    },
    # configs/train.yaml as shipped: uniform, batch 64, one thread, sac.fast_paths on.
    "uniform_b64_1thread": {
        "sac.replay_buffer": UNIFORM,
        "sac.train_batch_size_per_learner": 64,
        "resources.torch_threads": 1,
    },
}
"""Every variant sets replay buffer, batch and threads explicitly (not from the YAML)."""

SHIPPED = VARIANTS["uniform_b64_1thread"]
_FAST = ("direct_sampling", "fast_weight_sync", "fast_target_update", "fast_finite_check")
VARIANTS |= {
    # The shipped recipe on RLlib's own code paths (sac.fast_paths: false): issue 27's 0.11x.
    "rllib_paths": {**SHIPPED, "sac.fast_paths": False},
    # jpo/train/sac_fast.py's paths switched on one after the other (cumulative); the
    # last one, + foreach Adam, is the shipped variant above.
    **{
        f"fast{i + 1}_{'+'.join(k.removeprefix('fast_') for k in _FAST[: i + 1])}": {
            **SHIPPED,
            "_learner_config": dict.fromkeys(_FAST[: i + 1], True)
            | dict.fromkeys(("foreach_adam", *_FAST[i + 1 :]), False),
        }
        for i in range(len(_FAST))
    },
    # Opt-in, changes the schedule (not the replay ratio): 8 env steps per training step,
    # then 8 updates (training_intensity 64 = batch 64 x 1 update per env step), so env
    # sampling and the weight sync run once per 8 updates; the actor acts on weights up
    # to 8 updates old.
    "fragment8": {
        **SHIPPED,
        "resources.rollout_fragment_length": 8,
        "sac.training_intensity": 64,
    },
}
DEFAULT_VARIANTS = ["rllib_paths", "uniform_b64_1thread"]
"""What `bench.py` runs without --variants: the shipped recipe on RLlib's paths and on the
fast ones (the BENCHMARKS.md figure)."""


def run_rllib_algo(overrides: dict, warmup: int, eps_len: int):  # type: ignore[no-untyped-def]
    """Build RLlib SAC for one variant; return it and a (env steps, updates) reader."""
    import ray

    from jpo.train.trainer import build_sac_config, load_train_config

    overrides = dict(overrides)
    learner_config = overrides.pop("_learner_config", {})
    cfg = load_train_config(
        REPO / "configs" / "train.yaml",
        {
            # plain SAC on both sides: the minimal trainer has no behaviour-cloning term
            # (and no oracle teacher), so the shipped recipe's BC term is switched off
            "env.config": {"split": "train", "episode_length": eps_len},
            "sac.bc_weight": 0.0,
            "sac.num_steps_sampled_before_learning_starts": warmup,
            "reporting.min_sample_timesteps_per_iteration": 100,
            "reporting.progress_bar": False,
            **overrides,
        },
    )
    import torch

    torch.set_num_threads(cfg.resources.torch_threads or DEFAULT_THREADS)
    batch = cfg.sac.train_batch_size_per_learner
    if not ray.is_initialized() and os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)  # a running local Ray (`ray start --head`)
    elif not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=200 * 1024**2,
        )
    config = build_sac_config(cfg, num_learners=0, num_gpus_per_learner=0.0)
    config.learner_config_dict.update(learner_config)
    algo = config.build_algo()

    def counters(res: dict) -> tuple[float, float]:
        env = res["env_runners"]["num_env_steps_sampled_lifetime"]
        learners = res.get("learners", {}).get("__all_modules__", {})
        trained = learners.get("num_env_steps_trained_lifetime", 0.0)
        return float(env), float(trained) / batch

    return algo, counters


def run_rllib(name: str, overrides: dict, steps: int, warmup: int, eps_len: int) -> dict:
    algo, counters = run_rllib_algo(overrides, warmup, eps_len)
    try:
        res = algo.train()
        while counters(res)[0] < warmup + 100:  # past warm-up and one learning iteration
            res = algo.train()
        env0, upd0 = counters(res)
        t0 = time.perf_counter()
        while counters(res)[0] - env0 < steps:
            res = algo.train()
        wall = time.perf_counter() - t0
        env1, upd1 = counters(res)
        timers = {k: v for k, v in res.get("timers", {}).items() if isinstance(v, float)}
    finally:
        algo.stop()
    return {
        "variant": name,
        "overrides": overrides,
        "env_steps": env1 - env0,
        "updates": upd1 - upd0,
        "wall_s": wall,
        "env_steps_per_s": (env1 - env0) / wall,
        "updates_per_s": (upd1 - upd0) / wall,
        "updates_per_env_step": (upd1 - upd0) / max(env1 - env0, 1),
        "timers_s": timers,
    }


def run_minimal(
    steps: int, warmup: int, batch: int, ratio: float, eps_len: int, threads: int
) -> dict:
    import torch
    from minimal_sac import Settings, train

    torch.set_num_threads(threads)
    s = Settings(
        env_config={"split": "train", "episode_length": eps_len},
        batch_size=batch,
        warmup=warmup,
        updates_per_step=ratio,
    )
    # Same protocol: rates after warm-up only.
    out = train(s, warmup + steps)
    agent = out.pop("agent")
    del agent
    learn_wall = out["wall_s"] - out["env_time_s"] * warmup / (warmup + steps)
    return {
        "variant": f"minimal_{threads}thread",
        "env_steps": steps,
        "updates": out["updates"],
        "wall_s": learn_wall,
        "env_steps_per_s": steps / learn_wall,
        "updates_per_s": out["updates"] / learn_wall,
        "updates_per_env_step": out["updates"] / steps,
    }


def one_round(args: argparse.Namespace, rep: int) -> list[dict]:
    """Every variant, then the minimal SAC at each batch size: one side-by-side round."""
    rows = []
    for name in args.variants:
        row = run_rllib(name, VARIANTS[name], args.steps, args.warmup, args.episode_length)
        row["batch"] = VARIANTS[name]["sac.train_batch_size_per_learner"]
        row["repeat"] = rep
        print(json.dumps(row), flush=True)
        rows.append(row)
    minimal: dict[int, dict] = {}
    for batch in sorted({r["batch"] for r in rows}, reverse=True):
        ratio = next(r["updates_per_env_step"] for r in rows if r["batch"] == batch)
        row = run_minimal(args.steps, args.warmup, batch, ratio, args.episode_length, 1)
        row["variant"] = f"minimal_b{batch}_1thread"
        row["batch"] = batch
        row["repeat"] = rep
        print(json.dumps(row), flush=True)
        minimal[batch] = row
    rows += list(minimal.values())
    for row in rows:  # ratios within the round: the machine's load moves both sides
        ref = minimal[row["batch"]]
        row["updates_per_s_vs_minimal"] = row["updates_per_s"] / ref["updates_per_s"]
        row["env_steps_per_s_vs_minimal"] = row["env_steps_per_s"] / ref["env_steps_per_s"]
    return rows


def medians(rows: list[dict]) -> list[dict]:
    """Per variant: the median over the rounds of updates/s and of the round's ratio."""
    out = []
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == name]
        out.append(
            {
                "variant": name,
                "repeats": len(mine),
                "updates_per_s_median": statistics.median(r["updates_per_s"] for r in mine),
                "env_steps_per_s_median": statistics.median(r["env_steps_per_s"] for r in mine),
                "updates_per_s_vs_minimal_median": statistics.median(
                    r["updates_per_s_vs_minimal"] for r in mine
                ),
                "updates_per_s_vs_minimal_all": [
                    round(r["updates_per_s_vs_minimal"], 4) for r in mine
                ],
            }
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=1000, help="timed env steps per run")
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--episode-length", type=int, default=8)
    p.add_argument("--variants", nargs="*", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    p.add_argument("--repeats", type=int, default=1, help="side-by-side rounds (medians)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "train" / "bench.json"))
    args = p.parse_args()
    rows = [row for rep in range(args.repeats) for row in one_round(args, rep)]
    summary = medians(rows)
    machine = {
        "nproc": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
        "cpu": next(
            (
                line.split(":", 1)[1].strip()
                for line in subprocess.run(
                    ["lscpu"], capture_output=True, text=True
                ).stdout.splitlines()
                if line.startswith("Model name")
            ),
            platform.processor(),
        ),
        "load_avg_at_end": list(__import__("os").getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    Path(args.out).write_text(
        json.dumps(
            {"machine": machine, "args": vars(args), "summary": summary, "rows": rows},
            indent=2,
            default=str,
        )
    )
    for r in summary:
        print(
            f"{r['variant']:>60}: {r['env_steps_per_s_median']:8.1f} env steps/s  "
            f"{r['updates_per_s_median']:7.1f} updates/s  "
            f"x{r['updates_per_s_vs_minimal_median']:.2f} of minimal (median of {r['repeats']})"
        )


if __name__ == "__main__":
    main()
