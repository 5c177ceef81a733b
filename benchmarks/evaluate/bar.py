"""Issue 25's bar: JPO, every baseline and the oracle on the validation set, the held-out
split and the broad test set (5 rounds, 10 seeds), with the safety figures.

    python benchmarks/evaluate/bar.py --seeds 10            # every set, every method, report
    # or in parallel pieces (common random numbers: a method's rounds do not depend on
    # which other methods ran), then the report over the pieces:
    python benchmarks/evaluate/bar.py --sets broad --methods rule_of_thumb pattern --run-only
    python benchmarks/evaluate/bar.py --report-only

JPO runs through the CI stage as shipped (configs/suggest.toml); the sets and their roles
are configs/evaluate.toml [sets]. Test sets are read once, for the shipped configuration,
whatever the figures. Per set it prints every method's oracle fraction and safety figures,
the best honest baseline and JPO's paired difference to it (standard errors over seeds and
over workloads) and the bar's checks; reports land in --out/<set>/, figures in --json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from jpo.reporting.machine import describe_machine

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
SETS = ("validation", "holdout", "broad")


def _clean(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def piece_prefix(set_name: str, spec: dict[str, object]) -> str:
    """Return the file-name prefix of a set's pieces: a folder set's names its folder.

    A set read from a folder (``[sets.broad]``: ``configs/testsets/broad-v2`` since issue
    30) puts the folder's name in its pieces' names, so that pieces of an earlier version
    of the set (``broad--*.parquet``, written when it was broad-v1, whose workloads have the
    same names) left in ``--frames`` are never combined with the current version's.
    """
    if spec.get("source") == "folder":
        return f"{set_name}@{Path(str(spec['path'])).name}"
    return set_name


def run_piece(set_name: str, methods: list[str], args: argparse.Namespace) -> None:
    """Evaluate ``methods`` on one set; write the rounds to frames/<prefix>--<methods>--part*."""
    from jpo.evaluation.evaluate import evaluate, load_evaluation_settings, load_set
    from jpo.policy.artifact import LocalPolicy

    base = load_evaluation_settings().with_overrides(
        seeds=args.seeds, rounds=args.rounds, split="all", methods=tuple(methods)
    )
    catalog, frozen = load_set(base, set_name)
    k, n = (int(x) for x in args.part.split("/"))
    names = sorted(catalog)[k - 1 :: n]  # part k of n (parallel processes)
    policy = LocalPolicy.load(args.policy) if "jpo" in methods else None
    ci = None
    if args.probe:  # a CI-stage variant under selection (SELECTION.md), passed, not patched
        from jpo.stage.suggest import load_suggest_settings

        ci = load_suggest_settings().updated({"probe": {"enabled": True}})
    t0 = time.perf_counter()
    result = evaluate(
        base,
        policy=policy,
        policy_path=args.policy,
        progress=False,
        catalog=catalog,
        frozen=frozen,
        set_name=set_name,
        workloads=names,
        suggest_settings=ci,
    )
    args.frames.mkdir(parents=True, exist_ok=True)
    tag = "+".join(methods) + f"--part{k}of{n}"
    frame = result.frame().assign(piece_seconds=time.perf_counter() - t0)
    prefix = piece_prefix(set_name, base.sets[set_name])
    frame.to_parquet(args.frames / f"{prefix}--{tag}.parquet", index=False)
    print(f"{set_name} {tag}: {time.perf_counter() - t0:.0f}s", flush=True)


def report(args: argparse.Namespace) -> dict[str, object]:
    """Combine the pieces per set: summaries, the bar, report folders and the JSON record."""
    from dataclasses import asdict

    import pandas as pd

    from jpo.evaluation.evaluate import (
        METHODS,
        EvaluationResult,
        baseline_bar,
        load_evaluation_settings,
        method_summary,
    )
    from jpo.evaluation.report import write_report
    from jpo.stage.suggest import load_suggest_settings

    ci = load_suggest_settings()
    base = load_evaluation_settings()
    out: dict[str, object] = {
        "policy": args.policy,
        "ci_stage": {
            "probe_enabled": ci.probe.enabled,
        },
        "seeds": args.seeds,
        "rounds": args.rounds,
        "default_runs": base.default_runs,
        "val_loss_tolerance": base.val_loss_tolerance,
        "machine": describe_machine(),
        "sets": {},
    }
    for set_name in args.sets:
        prefix = piece_prefix(set_name, base.sets[set_name])
        pieces = sorted(args.frames.glob(f"{prefix}--*.parquet"))
        if not pieces:
            continue
        frame = pd.concat([pd.read_parquet(p) for p in pieces])
        seconds = float(sum(pd.read_parquet(p)["piece_seconds"].iloc[0] for p in pieces))
        frame = frame.drop(columns="piece_seconds")
        methods = tuple(m for m in METHODS if m in set(frame["method"]))
        settings = base.with_overrides(
            seeds=args.seeds, rounds=args.rounds, split="all", methods=methods
        )
        workloads = tuple(dict.fromkeys(frame["workload"]))
        result = EvaluationResult(
            frame.to_dict(orient="records"), settings, workloads, args.policy, None, set_name
        )
        write_report(result, args.out / set_name)
        summary = method_summary(result)
        spec = base.sets[set_name]
        bar = baseline_bar(result, absolute_min=spec.get("absolute_min"))
        print(f"\n== {set_name} (role {spec['role']}, {len(workloads)} workloads)")
        print(summary[COLUMNS].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        if bar is not None:
            d = bar.difference
            print(
                f"best honest baseline {bar.baseline}: JPO - it = {d.mean:+.3f} "
                f"(SE seeds {d.se_seeds:.3f}, SE workloads {d.se_workloads:.3f})"
            )
            for check, ok in bar.passed.items():
                print(f"  {'PASS' if ok else 'FAIL'}: {check}")
        out["sets"][set_name] = {  # type: ignore[index]
            "role": spec["role"],
            "source": {k: spec[k] for k in ("source", "path", "split", "seed") if k in spec},
            "workloads": len(workloads),
            "methods": [
                {k: _clean(v) for k, v in rec.items()}
                for rec in summary[COLUMNS].to_dict(orient="records")
            ],
            "bar": None if bar is None else asdict(bar) | {"ok": bar.ok},
            "cpu_pieces_wall_s": seconds,
        }
    args.json.write_text(json.dumps(out, indent=2, default=str) + "\n", encoding="utf-8")
    return out


def main() -> int:
    from jpo.evaluation.evaluate import load_evaluation_settings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--sets", nargs="+", default=list(SETS))
    p.add_argument("--methods", nargs="+", default=None, help="default: configs/evaluate.toml")
    p.add_argument("--policy", default=str(REPO / "jpo" / "data" / "policy"))
    p.add_argument("--frames", type=Path, default=Path("/tmp/jpo-bar/frames"))
    p.add_argument("--out", type=Path, default=Path("/tmp/jpo-bar"))
    p.add_argument("--json", type=Path, default=REPO / "benchmarks" / "evaluate" / "bar.json")
    p.add_argument("--part", default="1/1", help="k/n: only every n-th workload from the k-th")
    p.add_argument("--probe", action="store_true", help="JPO with [probe] enabled (a variant)")
    p.add_argument("--run-only", action="store_true")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    methods = args.methods or list(load_evaluation_settings().methods)
    if not args.report_only:
        for set_name in args.sets:
            run_piece(set_name, methods, args)
    if not args.run_only:
        report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
