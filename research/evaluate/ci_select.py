"""Issue 25 item 3: score CI-stage variants on the VALIDATION set only (SELECTION.md).

    python research/evaluate/ci_select.py [--seeds 3] [--out research/evaluate/ci_select.json]
    # in parallel: one process per variant, then the combine step
    for v in today probe; do
        python research/evaluate/ci_select.py --variant $v &
    done; wait
    python research/evaluate/ci_select.py

Each variant is a :class:`jpo.stage.suggest.SuggestSettings` handed to
``jpo.evaluation.evaluate.evaluate``
(``suggest_settings=``): no product module is patched. Applies the rule of SELECTION.md
and prints the choice.
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


# ({table: {key: value}} of configs/suggest.toml.) The "+tol" variants (an [incumbent]
# drift check at 1 %) measured no gain and left the product; their rows stay in the
# round's record.
VARIANTS: dict[str, dict[str, dict[str, object]]] = {
    "today": {"probe": {"enabled": False}},
    "probe": {"probe": {"enabled": True}},
}


def run_variant(name: str, seeds: int, rounds: int, policy_path: str, frames: Path) -> None:
    """Score one variant on the validation set; write its rounds to frames/<name>.parquet."""
    from jpo.evaluation.evaluate import evaluate, load_evaluation_settings, load_set
    from jpo.policy.artifact import LocalPolicy
    from jpo.stage.suggest import load_suggest_settings

    base = load_evaluation_settings().with_overrides(
        seeds=seeds, rounds=rounds, split="all", methods=("jpo",)
    )
    catalog, frozen = load_set(base, "validation")
    settings = load_suggest_settings().updated(VARIANTS[name])
    t0 = time.perf_counter()
    r = evaluate(
        base,
        policy=LocalPolicy.load(policy_path),
        policy_path=policy_path,
        progress=False,
        catalog=catalog,
        frozen=frozen,
        set_name="validation",
        suggest_settings=settings,
    )
    frames.mkdir(parents=True, exist_ok=True)
    r.frame().assign(variant=name).to_parquet(frames / f"{name}.parquet", index=False)
    print(name, f"{time.perf_counter() - t0:.0f}s", flush=True)


def combine(
    frames: Path, seeds: int, rounds: int, out_path: Path, from_bar: dict[str, Path] | None = None
) -> dict[str, object]:
    """Apply SELECTION.md's rule to the variants' rounds; return and write the record."""
    import pandas as pd

    from jpo.evaluation.evaluate import (
        EvaluationResult,
        load_evaluation_settings,
        method_summary,
        paired_difference,
    )

    settings = load_evaluation_settings().with_overrides(
        seeds=seeds,
        rounds=rounds,
        split="all",
        methods=("jpo", "variant"),
        tuners={"variant": "(a CI-stage variant's jpo rows: a label, never run)"},
    )
    data = {
        n: pd.read_parquet(frames / f"{n}.parquet")
        for n in VARIANTS
        if (frames / f"{n}.parquet").exists()
    }
    for name, folder in (from_bar or {}).items():
        # a variant's validation rounds from bar.py pieces (SELECTION.md, the cuts)
        pieces = [pd.read_parquet(p) for p in sorted(folder.glob("validation--*.parquet"))]
        frame = pd.concat(pieces).drop(columns="piece_seconds")
        frame = frame[(frame["method"] == "jpo") & (frame["seed"] < seeds)]
        data[name] = frame.assign(variant=name)
    data = {"today": data.pop("today"), **data}
    rows: dict[str, dict[str, object]] = {}
    qualifying = []
    for name, frame in data.items():
        both = pd.concat([data["today"], frame.assign(method="variant")]).drop(columns="variant")
        result = EvaluationResult(both.to_dict(orient="records"), settings, (), None, None)
        m = method_summary(result).set_index("method").loc["variant"]
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
        if name == "today":
            continue
        d = paired_difference(result, "variant", "jpo")
        rows[name] |= {
            "diff_vs_today": d.mean,
            "se_seeds": d.se_seeds,
            "se_workloads": d.se_workloads,
        }
        ok = (
            d.mean > 2 * d.se_seeds
            and rows[name]["oom_runs"] <= rows["today"]["oom_runs"]  # type: ignore[operator]
            and rows[name]["harmful_runs"] <= rows["today"]["harmful_runs"]  # type: ignore[operator]
        )
        rows[name]["qualifies"] = bool(ok)
        if ok:
            qualifying.append(name)
    chosen = (
        max(qualifying, key=lambda n: float(rows[n]["oracle_fraction_mean"]))  # type: ignore[arg-type]
        if qualifying
        else "today"
    )
    record = {
        "set": "validation",
        "seeds": seeds,
        "rounds": rounds,
        "variants": VARIANTS,
        "rows": rows,
        "chosen": chosen,
        "machine": describe_machine(),
    }
    out_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--policy", default=str(REPO / "jpo" / "data" / "policy"))
    p.add_argument("--variant", choices=list(VARIANTS), help="score one variant (parallel runs)")
    p.add_argument("--frames", type=Path, default=Path("/tmp/jpo-ci-select"))
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "evaluate" / "ci_select.json")
    p.add_argument(
        "--from-bar",
        nargs="*",
        default=[],
        help="NAME=DIR: take variant NAME's validation rounds from bar.py frames in DIR",
    )
    args = p.parse_args()
    if args.variant:
        run_variant(args.variant, args.seeds, args.rounds, args.policy, args.frames)
        return 0
    from_bar = dict(
        (name, Path(folder)) for name, _, folder in (v.partition("=") for v in args.from_bar)
    )
    if not from_bar:
        missing = [n for n in VARIANTS if not (args.frames / f"{n}.parquet").exists()]
        for name in missing:
            run_variant(name, args.seeds, args.rounds, args.policy, args.frames)
    record = combine(args.frames, args.seeds, args.rounds, args.out, from_bar)
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
