"""Issue 30: score the bundled v5 and a retrained candidate on the training split and the
validation set through the CI stage, side by side, and apply SELECTION-v6.md's rule.

    python research/train/select_v6.py --policy v5=jpo/data/policy --run-only
    python research/train/select_v6.py --policy v6=runs/v6/policy --run-only
    python research/train/select_v6.py          # combine: the rule's verdict, select_v6.json

Each policy's rounds land in --frames/<name>--<set>.parquet; the held-out split and the
broad test set are not read here (they are read once, for the shipped policy, by
benchmarks/evaluate/bar.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from jpo.reporting.machine import describe_machine

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


SETS = ("training", "validation")
SUMMARY_KEYS = (
    "oracle_fraction_mean",
    "val_loss_ok_share",
    "oom_runs",
    "invalid_configs",
    "harmful_runs",
    "failed_runs",
)


def run_policy(name: str, policy_path: str, seeds: int, rounds: int, frames: Path) -> None:
    """Score one policy (JPO through the CI stage) on both sets; write its rounds."""
    from jpo.evaluation.evaluate import evaluate, load_evaluation_settings, load_set
    from jpo.policy.artifact import LocalPolicy

    base = load_evaluation_settings().with_overrides(
        seeds=seeds, rounds=rounds, split="all", methods=("jpo",)
    )
    frames.mkdir(parents=True, exist_ok=True)
    for set_name in SETS:
        catalog, frozen = load_set(base, set_name)
        t0 = time.perf_counter()
        result = evaluate(
            base,
            policy=LocalPolicy.load(policy_path),
            policy_path=policy_path,
            progress=False,
            catalog=catalog,
            frozen=frozen,
            set_name=set_name,
        )
        result.frame().to_parquet(frames / f"{name}--{set_name}.parquet", index=False)
        print(name, set_name, f"{time.perf_counter() - t0:.0f}s", flush=True)


def summarize(frames: Path, seeds: int, rounds: int, names: tuple[str, str]) -> dict[str, object]:
    """Per set: both policies' figures and the candidate's paired difference to v5."""
    import pandas as pd

    from jpo.evaluation.evaluate import (
        EvaluationResult,
        load_evaluation_settings,
        method_summary,
        paired_difference,
    )

    served, candidate = names
    settings = load_evaluation_settings().with_overrides(
        seeds=seeds,
        rounds=rounds,
        split="all",
        methods=("jpo", "candidate"),
        tuners={"candidate": "(the retrained policy's jpo rows: a label, never run)"},
    )
    out: dict[str, object] = {}
    for set_name in SETS:
        a = pd.read_parquet(frames / f"{served}--{set_name}.parquet")
        b = pd.read_parquet(frames / f"{candidate}--{set_name}.parquet").assign(method="candidate")
        result = EvaluationResult(
            pd.concat([a, b]).to_dict(orient="records"), settings, (), None, None
        )
        summary = method_summary(result).set_index("method")
        d = paired_difference(result, "candidate", "jpo")
        out[set_name] = {
            served: {k: float(summary.loc["jpo", k]) for k in SUMMARY_KEYS},
            candidate: {k: float(summary.loc["candidate", k]) for k in SUMMARY_KEYS},
            "paired_difference": {
                "mean": d.mean,
                "se_seeds": d.se_seeds,
                "se_workloads": d.se_workloads,
            },
            "workloads": int(summary.loc["jpo", "workloads"]),
        }
    return out


def verdict(sets: dict[str, object], names: tuple[str, str]) -> dict[str, bool]:
    """SELECTION-v6.md's four conditions, each by name."""
    served, candidate = names
    val = sets["validation"]
    train = sets["training"]
    assert isinstance(val, dict) and isinstance(train, dict)
    v_old, v_new = val[served], val[candidate]
    one_workload = 1.0 / float(val["workloads"])
    return {
        "1 validation oracle fraction higher": v_new["oracle_fraction_mean"]
        > v_old["oracle_fraction_mean"],
        "2 no more OOM and invalid on validation": v_new["oom_runs"] <= v_old["oom_runs"]
        and v_new["invalid_configs"] <= v_old["invalid_configs"],
        "3 val-loss-ok share not lower by more than one workload": v_new["val_loss_ok_share"]
        >= v_old["val_loss_ok_share"] - one_workload - 1e-12,
        "4 training split not lower": train[candidate]["oracle_fraction_mean"]
        >= train[served]["oracle_fraction_mean"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", action="append", default=[], help="NAME=PATH (repeatable)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--frames", type=Path, default=Path("/tmp/jpo-select-v6"))
    p.add_argument("--names", nargs=2, default=["v5", "v6"], metavar=("SERVED", "CANDIDATE"))
    p.add_argument("--out", type=Path, default=REPO / "research" / "train" / "select_v6.json")
    p.add_argument("--run-only", action="store_true")
    args = p.parse_args()
    for spec in args.policy:
        name, _, path = spec.partition("=")
        run_policy(name, path, args.seeds, args.rounds, args.frames)
    if args.run_only:
        return 0
    names = (args.names[0], args.names[1])
    sets = summarize(args.frames, args.seeds, args.rounds, names)
    checks = verdict(sets, names)
    record = {
        "rule": "research/train/SELECTION-v6.md",
        "seeds": args.seeds,
        "rounds": args.rounds,
        "sets": sets,
        "checks": checks,
        "ships": names[1] if all(checks.values()) else names[0],
        "machine": describe_machine(),
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
