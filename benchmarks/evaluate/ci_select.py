"""Issue 25 item 3: score CI-stage variants on the VALIDATION set only (SELECTION.md).

    python benchmarks/evaluate/ci_select.py [--seeds 5] [--out benchmarks/evaluate/ci_select.json]

Each variant is a :class:`jpo.suggest.SuggestSettings` handed to ``jpo.evaluate.evaluate``
(``suggest_settings=``): no product module is patched. Applies the rule of SELECTION.md
and prints the choice.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

VARIANTS: dict[str, dict[str, object]] = {
    "today": {"probe_enabled": False, "incumbent_val_loss_tolerance": 1.0},
    "probe": {"probe_enabled": True, "incumbent_val_loss_tolerance": 1.0},
    "probe+tol": {"probe_enabled": True, "incumbent_val_loss_tolerance": 0.01},
    "tol": {"probe_enabled": False, "incumbent_val_loss_tolerance": 0.01},
}


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


def main() -> int:
    from jpo.evaluate import (
        evaluate,
        load_evaluation_settings,
        load_set,
        method_summary,
        paired_difference,
    )
    from jpo.policy import LocalPolicy
    from jpo.suggest import load_suggest_settings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--policy", default=str(REPO / "jpo" / "data" / "policy"))
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "evaluate" / "ci_select.json")
    args = p.parse_args()
    base = load_evaluation_settings().with_overrides(
        seeds=args.seeds, rounds=args.rounds, split="all", methods=("jpo",)
    )
    catalog, frozen = load_set(base, "validation")
    policy = LocalPolicy.load(args.policy)
    suggest = load_suggest_settings()
    t0 = time.perf_counter()
    results = {}
    for name, change in VARIANTS.items():
        settings = dataclasses.replace(suggest, **change)  # type: ignore[arg-type]
        r = evaluate(
            base,
            policy=policy,
            policy_path=args.policy,
            progress=False,
            catalog=catalog,
            frozen=frozen,
            set_name="validation",
            suggest_settings=settings,
        )
        results[name] = r
        print(name, f"{time.perf_counter() - t0:.0f}s", flush=True)
    rows = {}
    for name, r in results.items():
        m = method_summary(r).set_index("method").loc["jpo"]
        rows[name] = {
            k: float(m[k])
            for k in (
                "oracle_fraction_mean",
                "oracle_fraction_single_mean",
                "val_loss_ok_share",
                "oom_runs",
                "harmful_runs",
                "rule_breaks",
                "failed_runs",
                "invalid_configs",
            )
        }
    # paired difference against today: rename the methods so both frames pair up
    import pandas as pd

    today = results["today"].frame()
    qualifying = []
    for name, r in results.items():
        if name == "today":
            continue
        frame = pd.concat([today, r.frame().assign(method="variant")])
        merged = dataclasses.replace(results["today"], rows=frame.to_dict(orient="records"))
        d = paired_difference(merged, "variant", "jpo")
        rows[name] |= {
            "diff_vs_today": d.mean,
            "se_seeds": d.se_seeds,
            "se_workloads": d.se_workloads,
        }
        ok = (
            d.mean > 2 * d.se_seeds
            and rows[name]["oom_runs"] <= rows["today"]["oom_runs"]
            and rows[name]["harmful_runs"] <= rows["today"]["harmful_runs"]
        )
        rows[name]["qualifies"] = bool(ok)
        if ok:
            qualifying.append(name)
    chosen = (
        max(qualifying, key=lambda n: rows[n]["oracle_fraction_mean"]) if qualifying else "today"
    )
    out = {
        "set": "validation",
        "seeds": args.seeds,
        "rounds": args.rounds,
        "variants": VARIANTS,
        "rows": rows,
        "chosen": chosen,
        "elapsed_s": time.perf_counter() - t0,
        "machine": machine(),
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
