"""Quality of an exported policy: jpo.evaluation.evaluate's fraction of the oracle's improvement.

Runs the evaluation protocol of jpo/evaluation/evaluate.py (tuning campaigns of ``--rounds`` rounds
from each workload's default configuration, scored with the oracle's objective) for the
policy, no tuning and the oracle, on one catalog split, and prints one JSON line per
method.

Run: python research/train/quality.py --policy jpo/data/policy --split holdout
"""

from __future__ import annotations

import argparse
import json
import time

from jpo.evaluation.evaluate import evaluate, load_evaluation_settings, method_summary, quality_bar
from jpo.policy.artifact import LocalPolicy


def measure(policy_path: str, split: str, rounds: int, seeds: int) -> dict:
    settings = load_evaluation_settings().with_overrides(
        split=split, rounds=rounds, seeds=seeds, methods=("jpo", "no_tuning", "oracle")
    )
    policy = LocalPolicy.load(policy_path)
    t0 = time.perf_counter()
    result = evaluate(settings, policy=policy, policy_path=policy_path, progress=False)
    summary = method_summary(result)
    bar = quality_bar(result)
    cols = [
        "method",
        "workloads",
        "oracle_fraction_mean",
        "oracle_fraction_median",
        "val_loss_ok_share",
        "invalid_configs",
        "oom_runs",
        "failed_runs",
    ]
    return {
        "policy": policy_path,
        "policy_version": policy.version,
        "split": split,
        "rounds": rounds,
        "seeds": seeds,
        "wall_s": time.perf_counter() - t0,
        "methods": summary[cols].to_dict(orient="records"),
        "quality_bar_passed": None if bar is None else bar.passed,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--policy", required=True)
    p.add_argument("--split", default="holdout")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seeds", type=int, default=1)
    args = p.parse_args()
    print(json.dumps(measure(args.policy, args.split, args.rounds, args.seeds), default=str))


if __name__ == "__main__":
    main()
