"""Where an RLlib SAC update's time goes: cProfile of training iterations after warm-up.

Builds SAC from ``configs/train.yaml`` exactly as ``bench.py``'s shipped variant does
(plain SAC: no BC term, uniform replay, batch 64, one torch thread, learner in the
driver), warms up, then profiles ``--steps`` env steps of ``Algorithm.train()`` and sums
the cumulative time of the parts of one update: replay-buffer sampling, the learner
connector (episodes -> train batch), the torch forward/backward/optimizer step, metrics
logging, and env sampling.

Run:  python benchmarks/train/profile_rllib.py --steps 200 --warmup 250 \
          --out benchmarks/train/profile.json
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks" / "train"))

PARTS = {
    # part -> (file substring, function name) whose cumulative time is that part
    "replay_buffer_sample": ("episode_replay_buffer.py", "sample"),
    "fast_gather_transitions": ("sac_fast.py", "gather_transitions"),
    "replay_buffer_add": ("episode_replay_buffer.py", "add"),
    "weight_sync_rllib": ("env_runner_group.py", "sync_weights"),
    "weight_sync_fast": ("sac_fast.py", "_copy_weights_locally"),
    "target_update": ("dqn_learner.py", "after_gradient_based_update"),
    "target_update_fast": ("sac_fast.py", "after_gradient_based_update"),
    "forward_train": ("torch_rl_module.py", "forward_train"),
    "learner_connector": ("learner_connector_pipeline.py", "__call__"),
    "learner_update_total": ("learner.py", "update"),
    "torch_backward": ("_tensor.py", "backward"),
    "optimizer_step": ("torch_learner.py", "apply_gradients"),
    "loss_forward": ("torch_learner.py", "compute_losses"),
    "metrics_reduce": ("metrics_logger.py", "reduce"),
    "env_runner_sample": ("single_agent_env_runner.py", "sample"),
}


def _part_times(stats: pstats.Stats) -> dict[str, float]:
    out = dict.fromkeys(PARTS, 0.0)
    for (filename, _line, func), row in stats.stats.items():  # type: ignore[attr-defined]
        cumulative = row[3]
        for part, (fsub, fname) in PARTS.items():
            if filename.endswith(fsub) and func == fname:
                out[part] = max(out[part], cumulative)
    return out


def main() -> None:
    """Profile the shipped RLlib variant and print/write where the time goes."""
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=200, help="profiled env steps (1 update each)")
    p.add_argument("--warmup", type=int, default=250)
    p.add_argument("--out", default=None, help="JSON file for the figures")
    p.add_argument(
        "--variant", default="uniform_b64_1thread", help="bench.py variant (rllib_paths: RLlib's)"
    )
    args = p.parse_args()

    from bench import VARIANTS, run_rllib_algo

    algo, counters = run_rllib_algo(VARIANTS[args.variant], args.warmup, 8)
    try:
        res = algo.train()
        while counters(res)[0] < args.warmup + 100:
            res = algo.train()
        env0, upd0 = counters(res)
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        while counters(res)[0] - env0 < args.steps:
            res = algo.train()
        prof.disable()
        wall = time.perf_counter() - t0
        env1, upd1 = counters(res)
    finally:
        algo.stop()
    stats = pstats.Stats(prof, stream=io.StringIO())
    updates = max(upd1 - upd0, 1.0)
    parts = {k: v / updates * 1000 for k, v in _part_times(stats).items()}
    report = {
        "updates": updates,
        "env_steps": env1 - env0,
        "wall_s_profiled": wall,
        "ms_per_update_profiled": wall / updates * 1000,
        "variant": args.variant,
        "ms_per_update_by_part": parts,
    }
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(25)
    print(text.getvalue()[:6000])
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
