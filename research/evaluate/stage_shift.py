"""Issue 27: the CI stage under a shift in cluster contention, with and without the restart.

    python research/evaluate/stage_shift.py --run-only --set training --scenario steady
    ...                                      # one process per set x scenario (all variants)
    python research/evaluate/stage_shift.py  # combine: figures + SELECTION-shift2.md's verdict

Variants: ``main`` (no restart), ``keep`` and ``keep2`` (the second design,
SELECTION-shift2.md), ``judge`` and ``judge2`` (the third, SELECTION-shift3.md);
``restart`` (the first design, SELECTION-shift.md, not shipped) runs only when named
(``--variant restart``); its figures are in stage_shift.json.

Campaigns run through the CI stage itself (``jpo.evaluation.evaluate.evaluate``, the suggest
path) on the training split and the validation set only; the variants are
:class:`jpo.stage.settings.SuggestSettings` handed in (``suggest_settings=``), the shift is
the harness's ``[shift]`` option (``EvaluationSettings.shift_round`` /
``shift_conditions``): no product module is patched. Rule: SELECTION-shift2.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from jpo.reporting.machine import describe_machine  # noqa: E402

SETS = ("training", "validation")
SCENARIOS = ("steady", "shift")
VARIANTS: dict[str, dict[str, dict[str, object]]] = {
    "main": {"incumbent": {"restart_on_shift": False}},
    # the first design (SELECTION-shift.md, not shipped): one rerun restarts, "worse" forgotten
    "restart": {"incumbent": {"restart_on_shift": True}},
    # the second design (SELECTION-shift2.md): the restart keeps the "worse" entries ...
    "keep": {"incumbent": {"restart_on_shift": True, "shift_keeps_worse": True}},
    # ... and also needs two reruns of the best's values below its record
    "keep2": {
        "incumbent": {"restart_on_shift": True, "shift_keeps_worse": True, "shift_reruns": 2}
    },
    # the third design (SELECTION-shift3.md): runs after the best's last matching
    # measurement are judged again against the rerun that showed the shift
    "judge": {
        "incumbent": {"restart_on_shift": True, "shift_keeps_worse": True, "shift_rejudges": True}
    },
    "judge2": {
        "incumbent": {
            "restart_on_shift": True,
            "shift_keeps_worse": True,
            "shift_rejudges": True,
            "shift_reruns": 2,
        }
    },
}
DEFAULT_VARIANTS = ("main", "keep", "keep2", "judge", "judge2")
"""What a run without ``--variant`` runs."""
SHIFT_CONTENTION = 0.6


def shift_round(rounds: int) -> int:
    """Return the first round under the new contention: R/2 + 1."""
    return rounds // 2 + 1


def run_cell(
    set_name: str,
    scenario: str,
    seeds: int,
    rounds: int,
    frames: Path,
    limit: int = 0,
    variants: tuple[str, ...] = DEFAULT_VARIANTS,
) -> None:
    """Run the variants on one set and scenario; write each variant's rounds."""
    from jpo.evaluation.evaluate import evaluate, load_evaluation_settings, load_set
    from jpo.policy.artifact import LocalPolicy
    from jpo.stage.suggest import load_suggest_settings

    policy_path = str(REPO / "jpo" / "data" / "policy")
    shift = {
        "shift_round": shift_round(rounds),
        "shift_conditions": {"contention": SHIFT_CONTENTION},
    }
    base = load_evaluation_settings().with_overrides(
        seeds=seeds,
        rounds=rounds,
        split="all",
        methods=("jpo",),
        **(shift if scenario == "shift" else {"shift_round": 0}),
    )
    catalog, frozen = load_set(base, set_name)
    if limit > 0:  # the first workloads only (the rerun tier's tiny size)
        catalog = dict(list(catalog.items())[:limit])
    frames.mkdir(parents=True, exist_ok=True)
    for variant in variants:
        changes = VARIANTS[variant]
        t0 = time.perf_counter()
        result = evaluate(
            base,
            policy=LocalPolicy.load(policy_path),
            policy_path=policy_path,
            progress=False,
            catalog=catalog,
            frozen=frozen,
            set_name=set_name,
            suggest_settings=load_suggest_settings().updated(changes),
        )
        out = frames / f"{set_name}--{scenario}--{variant}.parquet"
        result.frame().to_parquet(out, index=False)
        print(set_name, scenario, variant, f"{time.perf_counter() - t0:.0f}s", flush=True)


def _paired(a: Any, b: Any) -> dict[str, float]:
    """Mean of b - a per (workload, seed), SE over workloads and over seeds."""
    import numpy as np

    diff = (b - a).dropna()
    per_w = diff.groupby(level="workload").mean().to_numpy(float)
    per_s = diff.groupby(level="seed").mean().to_numpy(float)

    def se(v: Any) -> float:
        return float(np.std(v, ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan

    return {"mean": float(per_w.mean()), "se_workloads": se(per_w), "se_seeds": se(per_s)}


def _per_campaign(frame: Any, rounds: int, scenario: str) -> dict[str, Any]:
    """Per (workload, seed): the figures SELECTION-shift.md names."""
    key = ["workload", "seed"]
    tuning = frame[frame["round"] > 0]
    final = frame[frame["round"] == rounds].set_index(key)
    start = shift_round(rounds)
    out = {
        "oracle_fraction": final["oracle_fraction"],
        "oracle_fraction_last": final["oracle_fraction_last"],
        "rollbacks": tuning.assign(rb=tuning["note"] == "rolled_back").groupby(key)["rb"].sum(),
    }
    if scenario == "shift":
        post = frame[frame["round"] >= start]
        gain = post["objective_shifted_true"] - post["default_objective_shifted"]
        out["post_shift_objective"] = post.assign(g=gain).groupby(key)["g"].mean()
        out["final_objective_shifted"] = (
            final["objective_shifted_true"] - final["default_objective_shifted"]
        )
        after = tuning[tuning["round"] > start]
        out["rollbacks_after_shift"] = (
            after.assign(rb=after["note"] == "rolled_back").groupby(key)["rb"].sum()
        )
    return out


def summarize(frames: Path, rounds: int) -> dict[str, Any]:
    """Per set and scenario: each variant's figures and its paired difference to main."""
    import pandas as pd

    from jpo.evaluation.evaluate import EvaluationResult, load_evaluation_settings, method_summary

    keys = ("oracle_fraction_mean", "oracle_fraction_last_mean", "val_loss_ok_share",
            "oom_runs", "failed_runs", "harmful_runs", "tuning_runs")  # fmt: skip
    settings = load_evaluation_settings().with_overrides(rounds=rounds, methods=("jpo",))
    out: dict[str, Any] = {}
    for set_name in SETS:
        if not (frames / f"{set_name}--steady--main.parquet").exists():
            continue  # a set not run (yet)
        for scenario in SCENARIOS:
            cell: dict[str, Any] = {}
            per: dict[str, dict[str, Any]] = {}
            for variant in VARIANTS:
                path = frames / f"{set_name}--{scenario}--{variant}.parquet"
                if not path.exists():
                    continue  # a variant not run (the first design's frames are kept apart)
                frame = pd.read_parquet(path)
                result = EvaluationResult(frame.to_dict(orient="records"), settings, (), None, None)
                row = method_summary(result).set_index("method").loc["jpo"]
                per[variant] = _per_campaign(frame, rounds, scenario)
                cell[variant] = {k: float(row[k]) for k in keys} | {
                    name: float(series.mean()) if "rollbacks" not in name else int(series.sum())
                    for name, series in per[variant].items()
                }
                cell["workloads"] = int(row["workloads"])
            for variant in per:
                if variant != "main":
                    cell[f"paired_{variant}_minus_main"] = {
                        name: _paired(per["main"][name], per[variant][name]) for name in per["main"]
                    }
            out[f"{set_name}/{scenario}"] = cell
    return out


def _within_one_se(diff: dict[str, float]) -> bool:
    """Return whether a paired difference is not lower than 0 by more than one SE."""
    return diff["mean"] >= -diff["se_workloads"]


def _no_more_failures(m: dict[str, Any], r: dict[str, Any]) -> bool:
    """Return whether OOM and failed runs are not more than main's."""
    return bool(r["oom_runs"] <= m["oom_runs"] and r["failed_runs"] <= m["failed_runs"])


def _harm_ok(m: dict[str, Any], r: dict[str, Any]) -> bool:
    """Return whether harmful runs are within main's + 1 per 100 tuning runs."""
    return bool(r["harmful_runs"] <= m["harmful_runs"] + m["tuning_runs"] / 100.0)


def verdict(cells: dict[str, Any], variant: str) -> dict[str, bool]:
    """SELECTION-shift2.md's rule for one variant, condition by condition and set by set."""
    v: dict[str, bool] = {}
    for set_name in SETS:
        steady, shift = cells.get(f"{set_name}/steady"), cells.get(f"{set_name}/shift")
        if steady is None or shift is None or variant not in steady or variant not in shift:
            v[f"{set_name} was run"] = False
            continue
        paired = f"paired_{variant}_minus_main"
        m, r, d = steady["main"], steady[variant], steady[paired]
        v[f"{set_name} 1 steady oracle fraction within one SE"] = _within_one_se(
            d["oracle_fraction"]
        )
        v[f"{set_name} 2 steady OOM/failed/val-loss-ok/harmful"] = (
            _no_more_failures(m, r)
            and r["val_loss_ok_share"] >= m["val_loss_ok_share"]
            and _harm_ok(m, r)
        )
        m, r, d = shift["main"], shift[variant], shift[paired]
        v[f"{set_name} 3 shift rollbacks after the shift"] = (
            r["rollbacks_after_shift"] <= m["rollbacks_after_shift"]
        )
        v[f"{set_name} 4 shift final objective, OOM/failed/harmful"] = (
            _within_one_se(d["final_objective_shifted"])
            and _no_more_failures(m, r)
            and _harm_ok(m, r)
        )
        v[f"{set_name} 5 shift post-shift objective higher"] = d["post_shift_objective"]["mean"] > 0
    return v


def choose(cells: dict[str, Any], candidates: tuple[str, ...]) -> str:
    """Return the variant SELECTION-shift2/3.md ship ("main": none passes)."""
    passing = [v for v in candidates if all(verdict(cells, v).values())]

    def gain(variant: str) -> float:
        diffs = [cells[f"{s}/shift"][f"paired_{variant}_minus_main"] for s in SETS]
        return sum(float(d["post_shift_objective"]["mean"]) for d in diffs) / len(SETS)

    order = list(VARIANTS)
    return max(passing, key=lambda v: (gain(v), -order.index(v)), default="main")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--set", choices=SETS, action="append", help="run only these sets")
    p.add_argument("--scenario", choices=SCENARIOS, action="append", help="only these")
    p.add_argument("--variant", choices=tuple(VARIANTS), action="append", help="only these")
    p.add_argument("--limit", type=int, default=0, help="first N workloads per set (0: all)")
    p.add_argument("--frames", type=Path, default=Path("/tmp/jpo-stage-shift2"))
    p.add_argument("--out", type=Path, default=REPO / "research" / "evaluate" / "stage_shift2.json")
    p.add_argument("--run-only", action="store_true", help="run campaigns, do not combine")
    p.add_argument("--combine-only", action="store_true", help="combine frames already written")
    args = p.parse_args()
    if not args.combine_only:
        for set_name in args.set or SETS:
            for scenario in args.scenario or SCENARIOS:
                run_cell(
                    set_name,
                    scenario,
                    args.seeds,
                    args.rounds,
                    args.frames,
                    args.limit,
                    tuple(args.variant or DEFAULT_VARIANTS),
                )
    if args.run_only:
        return 0
    cells = summarize(args.frames, args.rounds)
    ran = {v for cell in cells.values() for v in VARIANTS if v in cell}
    candidates = tuple(v for v in VARIANTS if v in ran and v not in ("main", "restart"))
    checks = {v: verdict(cells, v) for v in candidates}
    report = {
        "machine": describe_machine(),
        "command": " ".join(["python", *sys.argv]),
        "seeds": args.seeds,
        "rounds": args.rounds,
        "shift": {"round": shift_round(args.rounds), "contention": SHIFT_CONTENTION},
        "cells": cells,
        "rule": checks,
        "ship": choose(cells, candidates),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"rule": checks, "ship": report["ship"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
