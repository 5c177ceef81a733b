"""Train a `configs/train.yaml` recipe with the minimal PyTorch SAC and export a policy.

A research tool, not the product's trainer: the bundled policy comes from RLlib
(`python -m jpo.train`). RLlib performs about 9x fewer gradient updates per second than
`minimal_sac.py` on this problem (benchmarks/train/RESULTS.md), so one 150k-step RLlib run
costs ~90 min of a core, and rounds 5-6 of benchmarks/evaluate showed that one training
run cannot rank recipes: seeds of one recipe differ on the held-out split by more than
recipes do. This script trains the same recipe (env config, network widths, learning
rates, gamma, tau, batch, warm-up, buffer, one update per env step) several times as fast,
so that a recipe can be judged by its mean over seeds before an RLlib run is spent on it.
The actor is exported through `jpo.policy.export.export_policy`, the exporter of RLlib
checkpoints, so `benchmarks/evaluate/run.py --policy DIR` scores it like any artifact.

Run: python research/train/fast_sac.py --config configs/train.yaml --steps 150000 \
        --seed 0 --export /tmp/pol-fast-s0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import yaml
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
# minimal_sac.py stays in benchmarks/train (the training benchmark compares against it)
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "train"))
from minimal_sac import Settings, train

from jpo.policy.export import export_policy
from jpo.train.trainer import describe_env, load_train_config


class _ActorView:
    """What `export_policy` reads from an RLlib SAC module: pi_encoder, pi, action_space."""

    def __init__(self, actor: nn.Sequential, action_space: Any):
        self.pi_encoder = actor
        self.pi = nn.Identity()
        self.action_space = action_space


def export_actor(
    actor: nn.Sequential,
    out: str,
    cfg: Any,
    desc: Any,
    *,
    training_data: dict[str, Any],
    source: dict[str, Any],
) -> None:
    """Export a [loc, log_std] actor MLP as a CI artifact, with the recipe's manifest."""
    n_act = len(desc.action_names)
    export_policy(
        _ActorView(actor, gym.spaces.Box(-1.0, 1.0, (n_act,), np.float32)),
        out,
        policy_version=cfg.export.policy_version,
        feature_spec_version=desc.feature_spec_version,
        observation_names=desc.observation_names,
        action_names=desc.action_names,
        constraints_sha256=desc.constraints_sha256,
        learning_rate_follows_batch=desc.learning_rate_follows_batch,
        training_data={**desc.training_data, **training_data},
        source=source,
    )


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Parse repeated ``--set KEY=VALUE`` options (YAML values)."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        overrides[key] = yaml.safe_load(value)
    return overrides


def settings_from_config(cfg: Any, seed: int) -> Settings:
    """Map a TrainConfig onto the minimal SAC's settings (same recipe numbers)."""
    sac = cfg.sac
    return Settings(
        env_id=cfg.env.id,
        env_config=dict(cfg.env.config),
        hidden=tuple(cfg.model.fcnet_hiddens),
        batch_size=int(sac.train_batch_size_per_learner),
        actor_lr=float(sac.actor_lr),
        critic_lr=float(sac.critic_lr),
        alpha_lr=float(sac.alpha_lr),
        gamma=float(sac.gamma),
        tau=float(sac.tau),
        buffer=int(sac.replay_buffer.capacity),
        warmup=int(sac.num_steps_sampled_before_learning_starts),
        updates_per_step=float(sac.training_intensity or 1.0),
        seed=seed,
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/train.yaml")
    p.add_argument("--steps", type=int, default=150_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export", required=True, help="artifact folder to write")
    p.add_argument(
        "--export-every",
        type=int,
        default=0,
        help="also export snapshots every N env steps to EXPORT-<steps> (0: only the end)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value (dotted key, YAML value), e.g. "
        "env.config.randomized_profiles=1000; repeatable",
    )
    p.add_argument(
        "--init-actor",
        default="",
        help="start from this artifact's actor (e.g. one of imitate.py) instead of random "
        "weights; it also acts during the warm-up",
    )
    p.add_argument(
        "--actor-delay",
        type=int,
        default=0,
        help="env steps after the warm-up during which only the critics learn",
    )
    p.add_argument(
        "--bc-weight",
        type=float,
        default=0.0,
        help="weight of behaviour cloning towards the oracle teacher (teacher.py; "
        "TD3+BC style, 0 = plain SAC)",
    )
    p.add_argument(
        "--bc-hold",
        default="learning_rate",
        help="comma-separated hyperparameters the teacher never moves on its own",
    )
    p.add_argument("--oracle-cache", default="", help="JSON cache of the oracle configurations")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    overrides = parse_overrides(args.set)
    cfg = load_train_config(args.config, overrides)
    if cfg.model.fcnet_activation != "relu" or cfg.model.head_fcnet_hiddens:
        raise SystemExit("fast_sac.py builds relu MLPs without head layers only")
    if float(cfg.sac.initial_alpha) != 1.0:
        raise SystemExit("minimal_sac.py starts alpha at 1.0; set sac.initial_alpha: 1.0")
    s = dataclasses.replace(
        settings_from_config(cfg, args.seed),
        init_actor=args.init_actor,
        actor_delay=args.actor_delay,
        bc_weight=args.bc_weight,
        bc_hold=tuple(h for h in args.bc_hold.split(",") if h),
        oracle_cache=args.oracle_cache,
    )
    t_build = time.perf_counter()
    desc = describe_env(cfg)  # builds the env once; train() reuses the cached replays
    build_s = time.perf_counter() - t_build

    def export(agent: Any, out: str, env_steps: int, extra: dict[str, Any]) -> None:
        export_actor(
            agent.actor,
            out,
            cfg,
            desc,
            training_data={"env_steps": env_steps, **extra},
            source={
                "algorithm": "minimal-sac",
                "config": args.config,
                "overrides": overrides,
                "seed": args.seed,
                "init_actor": args.init_actor,
                "actor_delay": args.actor_delay,
                "bc_weight": args.bc_weight,
                "bc_hold": args.bc_hold,
            },
        )

    next_snapshot = args.export_every

    def on_episode(step: int, ep_ret: float, agent: Any) -> None:
        nonlocal next_snapshot
        if step >= next_snapshot:
            n = next_snapshot
            name = f"{args.export}-{n // 1000}k" if n % 1000 == 0 else f"{args.export}-{n}"
            export(agent, name, step, {})
            next_snapshot += args.export_every

    t0 = time.perf_counter()
    out = train(s, args.steps, on_episode=on_episode if args.export_every else None)
    agent = out.pop("agent")
    export(agent, args.export, args.steps, {"last_returns_mean": out["last_returns_mean"]})
    out["wall_s"] = time.perf_counter() - t0
    out["env_build_s"] = build_s
    print(json.dumps({"seed": args.seed, "config": args.config, "overrides": overrides, **out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
