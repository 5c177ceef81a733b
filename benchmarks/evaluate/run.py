"""Quality-bar benchmark (issue 8 item 4): JPO vs Optuna TPE, random search, oracle.

Runs ``jpo evaluate``'s protocol on the held-out catalog workloads (5 rounds, several
noise seeds) and prints the quality bar with every figure, plus the machine and how long
it took. The report, plots and Parquet land in ``--out``.

    python benchmarks/evaluate/run.py [--policy PATH] [--seeds 3] [--split holdout]
        [--jpo-path suggest|direct] [--out /tmp/jpo-eval-bench]

Without ``--policy`` the bundled policy (jpo/data/policy) is used; if it does not exist
the benchmark says so and, with ``--random-policy``, measures a random-weights artifact
instead (a floor, NOT a trained JPO).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from jpo.reporting.machine import describe_machine


def random_policy(folder: Path, seed: int = 0) -> Path:
    from jpo.learning.features import FEATURE_SPEC_VERSION, OBSERVATION_NAMES
    from jpo.policy.artifact import write_artifact
    from jpo.workload.types import HYPERPARAMETER_NAMES

    n, k, h = len(OBSERVATION_NAMES), len(HYPERPARAMETER_NAMES), 32
    rng = np.random.default_rng(seed)
    weights = {
        "l0.weight": rng.normal(0, 0.3, (h, n)).astype("f4"),
        "l0.bias": np.zeros(h, "f4"),
        "l1.weight": rng.normal(0, 0.3, (2 * k, h)).astype("f4"),
        "l1.bias": np.zeros(2 * k, "f4"),
    }
    manifest = {
        "policy_version": 0,
        "feature_spec_version": FEATURE_SPEC_VERSION,
        "observation": {"names": list(OBSERVATION_NAMES), "mean": [0.0] * n, "std": [1.0] * n},
        "action": {"names": list(HYPERPARAMETER_NAMES)},
        "network": {
            "layers": [
                {"weight": "l0.weight", "bias": "l0.bias", "activation": "relu"},
                {"weight": "l1.weight", "bias": "l1.bias", "activation": "linear"},
            ]
        },
        "constraints_sha256": "0" * 64,
        "training_data": {"note": "RANDOM WEIGHTS: benchmark floor, not a trained policy"},
    }
    return write_artifact(folder, weights, manifest)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--policy", default=None)
    parser.add_argument("--random-policy", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--split", default="holdout")
    parser.add_argument("--jpo-path", default=None, choices=["suggest", "direct"])
    parser.add_argument(
        "--random-trust-region", action="store_true", help="random search as a trust-region walk"
    )
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "jpo-eval-bench")
    args = parser.parse_args()

    from jpo.evaluation.evaluate import (
        evaluate,
        load_evaluation_settings,
        method_summary,
        quality_bar,
    )
    from jpo.evaluation.report import write_report
    from jpo.policy.artifact import LocalPolicy

    bundled = Path(__file__).resolve().parents[2] / "jpo" / "data" / "policy"
    policy_path = args.policy
    kind = "given"
    if policy_path is None and bundled.exists():
        policy_path, kind = str(bundled), "bundled"
    if policy_path is None:
        if not args.random_policy:
            print("no bundled policy (jpo/data/policy): pass --policy or --random-policy")
            return 2
        policy_path = str(random_policy(args.out / "random-policy"))
        kind = "random weights (floor)"
    settings = load_evaluation_settings().with_overrides(
        rounds=args.rounds,
        seeds=args.seeds,
        split=args.split,
        jpo_path=args.jpo_path,
        random_trust_region=True if args.random_trust_region else None,
    )
    policy = LocalPolicy.load(policy_path)
    t0 = time.perf_counter()
    result = evaluate(settings, policy=policy, policy_path=policy_path, progress=True)
    elapsed = time.perf_counter() - t0
    paths = write_report(result, args.out)
    summary = method_summary(result)
    bar = quality_bar(result)
    cols = [
        "method",
        "oracle_fraction_mean",
        "oracle_fraction_median",
        "oracle_fraction_last_mean",
        "oracle_reach_fraction_mean",
        "oracle_reach_fraction_median",
        "val_loss_ok_share",
        "invalid_configs",
        "oom_runs",
        "diverged_runs",
        "gpu_util_before",
        "gpu_util_after",
        "gpu_hours_before",
        "gpu_hours_after",
        "tuning_gpu_hours",
    ]
    print(summary[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    out = {
        "policy": policy_path,
        "policy_kind": kind,
        "policy_version": policy.version,
        "workloads": list(result.workloads),
        "settings": {
            "rounds": settings.rounds,
            "seeds": settings.seeds,
            "jpo_path": settings.jpo_path,
        },
        "elapsed_s": elapsed,
        "machine": describe_machine(),
        "quality_bar": None if bar is None else {**bar.passed, "ok": bar.ok},
        "oracle_ceiling": None if bar is None else bar.oracle_ceiling,
        "report": str(paths.report),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
