"""Issue 25's bar: JPO, every baseline and the oracle on the validation set, the held-out
split and the broad test set (5 rounds, 10 seeds), with the safety figures.

    python benchmarks/evaluate/bar.py [--seeds 10] [--sets validation holdout broad]
        [--out /tmp/jpo-bar] [--json benchmarks/evaluate/bar.json]

JPO runs through the CI stage as shipped (configs/suggest.toml); the sets and their roles
are configs/evaluate.toml [sets]. Test sets are read once, for the shipped configuration,
whatever the figures. Per set it prints every method's oracle fraction and safety figures,
the best honest baseline and JPO's paired difference to it (standard errors over seeds and
over workloads), and the bar's checks; the reports land in --out/<set>/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

COLUMNS = [
    "method",
    "oracle_fraction_mean",
    "oracle_fraction_single_mean",
    "oracle_reach_fraction_mean",
    "val_loss_ok_share",
    "invalid_configs",
    "oom_runs",
    "diverged_runs",
    "failed_runs",
    "harmful_runs",
    "rule_breaks",
    "tuning_runs",
]


def machine() -> dict[str, str]:
    cpu = (
        subprocess.run(
            ["grep", "-m1", "model name", "/proc/cpuinfo"],
            capture_output=True,
            text=True,
            check=False,
        )
        .stdout.split(":", 1)[-1]
        .strip()
    )
    return {"nproc": str(os.cpu_count()), "cpu": cpu}


def _clean(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main() -> int:
    from dataclasses import asdict

    from jpo.evaluate import (
        baseline_bar,
        evaluate,
        load_evaluation_settings,
        load_set,
        method_summary,
        write_report,
    )
    from jpo.policy import LocalPolicy
    from jpo.suggest import load_suggest_settings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--sets", nargs="+", default=["validation", "holdout", "broad"])
    p.add_argument("--policy", default=str(REPO / "jpo" / "data" / "policy"))
    p.add_argument("--out", type=Path, default=Path("/tmp/jpo-bar"))
    p.add_argument("--json", type=Path, default=REPO / "benchmarks" / "evaluate" / "bar.json")
    args = p.parse_args()
    base = load_evaluation_settings().with_overrides(
        seeds=args.seeds, rounds=args.rounds, split="all"
    )
    policy = LocalPolicy.load(args.policy)
    ci = load_suggest_settings()
    out: dict[str, object] = {
        "policy": args.policy,
        "policy_version": policy.version,
        "ci_stage": {
            "probe_enabled": ci.probe_enabled,
            "incumbent_val_loss_tolerance": ci.incumbent_val_loss_tolerance,
        },
        "seeds": args.seeds,
        "rounds": args.rounds,
        "default_runs": base.default_runs,
        "val_loss_tolerance": base.val_loss_tolerance,
        "machine": machine(),
        "sets": {},
    }
    t_all = time.perf_counter()
    for name in args.sets:
        t0 = time.perf_counter()
        catalog, frozen = load_set(base, name)
        result = evaluate(
            base,
            policy=policy,
            policy_path=args.policy,
            progress=False,
            catalog=catalog,
            frozen=frozen,
            set_name=name,
        )
        write_report(result, args.out / name)
        summary = method_summary(result)
        spec = base.sets[name]
        bar = baseline_bar(result, absolute_min=spec.get("absolute_min"))
        print(f"\n== {name} (role {spec['role']}, {len(result.workloads)} workloads)")
        print(summary[COLUMNS].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        if bar is not None:
            d = bar.difference
            print(
                f"best honest baseline {bar.baseline}: JPO - it = {d.mean:+.3f} "
                f"(SE seeds {d.se_seeds:.3f}, SE workloads {d.se_workloads:.3f})"
            )
            for check, ok in bar.passed.items():
                print(f"  {'PASS' if ok else 'FAIL'}: {check}")
        out["sets"][name] = {  # type: ignore[index]
            "role": spec["role"],
            "workloads": len(result.workloads),
            "methods": [
                {k: _clean(v) for k, v in rec.items()}
                for rec in summary[COLUMNS].to_dict(orient="records")
            ],
            "bar": None if bar is None else asdict(bar) | {"ok": bar.ok},
            "elapsed_s": time.perf_counter() - t0,
        }
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n", encoding="utf-8")
    out["elapsed_s"] = time.perf_counter() - t_all
    args.json.write_text(json.dumps(out, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
