"""Mean env return of a policy artifact vs "keep" (action 0) and random actions.

Run: python research/train/env_return.py --policy jpo/data/policy --episodes 200
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from jpo.policy.artifact import LocalPolicy
from jpo.train.continuous import evaluate_policy
from jpo.train.trainer import make_env


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--policy", required=True)
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--episode-length", type=int, default=8)
    args = p.parse_args()
    policy = LocalPolicy.load(args.policy)
    k = len(policy.action_names)
    rng = np.random.default_rng(0)
    section = {"id": "jpo/PrometheusReplay-v0", "register_module": "jpo.sim", "config": {}}
    out = {}
    for split in ("train", "holdout"):
        cfg = {"split": split, "episode_length": args.episode_length}

        def make(cfg: dict = cfg) -> object:
            return make_env(section, cfg)

        out[split] = {
            "policy": evaluate_policy(policy.act, make, episodes=args.episodes, seed=0),
            "keep": evaluate_policy(lambda o: np.zeros(k), make, episodes=args.episodes, seed=0),
            "random": evaluate_policy(
                lambda o: rng.uniform(-1, 1, k), make, episodes=args.episodes, seed=0
            ),
        }
    print(json.dumps({"policy": args.policy, "version": policy.version, **out}))


if __name__ == "__main__":
    main()
