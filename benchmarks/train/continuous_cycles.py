"""Continuous-learning cycles against the served policy: RESULTS.md §8-§9's setup, rerunnable.

A history store of catalog workloads the bundled policy never trained on (held-out split;
simulated runs written with :func:`jpo.sim.simulator.generate_runs` and
:func:`jpo.telemetry.history.append_history`), then ``python -m jpo.train --continuous``
with ``configs/train.yaml``, sizes and variants changed by ``--set`` only. Each variant
and RLlib seed (``--seeds``) runs in its own storage and policy folder (its own cycles
from the bundled policy); the history and the teacher's oracle cache are shared. Each
cycle's candidate-vs-served comparison (same seeded episodes, cluster set and held-out
set) goes into ``--out``, rewritten after every run. A run that fails is retried once
(``--retries``); a run that fails again is recorded with its error and the next one starts.

Run (from the repository root, ``PYTHONPATH=.``)::

    python benchmarks/train/continuous_cycles.py --variants warmup warmup_anchor \
        --seeds 0 1 --cycles 2 --budget-iterations 2 --out benchmarks/train/continuous.json
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

WORKLOADS = ("higgs-mlp", "criteo-dlrm", "xsum-bart", "coco-yolov5")  # held-out split (§8)

# variant -> --set overrides on top of the shared ones (RESULTS.md §9 says what each is)
VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {  # §8: fresh critics steer v5's actor at once, the recipe's actor rate
        "continuous.critic_warmup_updates": 0,
        "continuous.actor_lr": None,
        "continuous.anchor_weight": 0,
    },
    "warmup": {  # actor frozen for the first 300 updates of the first cycle
        "continuous.critic_warmup_updates": 300,
        "continuous.actor_lr": None,
        "continuous.anchor_weight": 0,
    },
    "lowlr": {  # a tenth of the recipe's actor learning rate
        "continuous.critic_warmup_updates": 0,
        "continuous.actor_lr": 0.00005,
        "continuous.anchor_weight": 0,
    },
    "anchor": {  # distillation towards the served policy's actions, weight 3 (as BC's)
        "continuous.critic_warmup_updates": 0,
        "continuous.actor_lr": None,
        "continuous.anchor_weight": 3,
    },
    "warmup_anchor": {  # the warm-up and the anchor together (RESULTS.md §12)
        "continuous.critic_warmup_updates": 300,
        "continuous.actor_lr": None,
        "continuous.anchor_weight": 3,
    },
    "all": {  # the three together
        "continuous.critic_warmup_updates": 300,
        "continuous.actor_lr": 0.00005,
        "continuous.anchor_weight": 3,
    },
    "shipped": {},  # configs/train.yaml's continuous table as it is
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", nargs="+", default=["shipped"], choices=sorted(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="RLlib seeds: one run each")
    p.add_argument("--retries", type=int, default=1, help="reruns of a run that fails")
    p.add_argument("--cycles", type=int, default=2)
    p.add_argument("--budget-iterations", type=int, default=2, help="x 500 env steps per cycle")
    p.add_argument("--eval-episodes", type=int, default=32)
    p.add_argument("--runs", type=int, default=8, help="simulated runs per workload")
    p.add_argument("--seed", type=int, default=21, help="seed of the simulated history")
    p.add_argument("--work", default="/tmp/jpo-continuous", help="scratch folder")
    p.add_argument("--out", default="benchmarks/train/continuous.json")
    p.add_argument(
        "--summarize", nargs="+", metavar="JSON", help="no runs: merge these --out files, apply §12"
    )
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    return p


def write_history(root: Path, runs: int, seed: int) -> None:
    """Write the simulated history of :data:`WORKLOADS` once."""
    import pyarrow as pa

    from jpo.sim.simulator import generate_runs
    from jpo.telemetry.history import append_history

    if root.is_dir():
        return
    sim = generate_runs(list(WORKLOADS), runs, seed=seed)
    append_history(root, pa.concat_tables([r.table for r in sim]))


def _yaml(value: Any) -> str:
    return "null" if value is None else str(value)


def run_variant(name: str, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Run ``--cycles`` cycles of one variant and seed in a fresh folder; return its reports."""
    folder = work / f"{name}-s{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    sets: dict[str, Any] = {
        "seed": seed,
        "storage.path": folder / "store",
        "continuous.history_path": work / "history",
        "continuous.policy_dir": folder / "policies",
        "continuous.budget_iterations": args.budget_iterations,
        "continuous.eval_episodes": args.eval_episodes,
        "continuous.interval_s": 0,
        "continuous.env_overrides_with_history.teacher_cache": work / "oracles.json",
        "reporting.progress_bar": "false",
        "resources.ray_num_cpus": 1,
        **VARIANTS[name],
    }
    cmd = [sys.executable, "-m", "jpo.train", "--continuous", "--cycles", str(args.cycles)]
    cmd += [a for k, v in sets.items() for a in ("--set", f"{k}={_yaml(v)}")]
    cmd += [a for item in args.extra for a in ("--set", item)]
    folder.mkdir(parents=True)
    t0 = time.monotonic()
    with (folder / "log.txt").open("w") as log:
        proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"variant {name} seed {seed} failed ({proc.returncode}): see {folder}")
    cycles = json.loads(proc.stdout.strip().splitlines()[-1])["cycles"]
    return {
        "variant": name,
        "seed": seed,
        "sets": {k: _yaml(v) for k, v in sets.items()},
        "wall_s": wall,
        "command": " ".join(cmd[1:]),
        "cycles": cycles,
    }


def table(results: list[dict[str, Any]]) -> str:
    """Markdown rows: variant, cycle, set, candidate, served, paired difference, SE, promoted."""
    rows = [
        "| variant | seed | cycle | set | candidate | served | mean diff | SE | promoted |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        if "error" in res:
            rows.append(f"| {res['variant']} | {res['seed']} | failed: {res['error']} |")
        for c in res.get("cycles", []):
            for set_name, comp in (c["comparisons"] or {}).items():
                rows.append(
                    f"| {res['variant']} | {res['seed']} | {c['cycle']} | {set_name} | "
                    f"{comp['candidate']:.3f} | "
                    f"{comp['served']:.3f} | {comp['mean_difference']:+.3f} | "
                    f"{comp['standard_error']:.3f} | {'yes' if c['promoted'] else 'no'} |"
                )
    return "\n".join(rows)


def _terms(variant: str) -> int:
    """Number of fine-tuning terms a variant turns on (warm-up, actor rate, anchor)."""
    sets = VARIANTS.get(variant, {})
    return sum(
        (
            bool(sets.get("continuous.critic_warmup_updates")),
            sets.get("continuous.actor_lr") is not None,
            bool(sets.get("continuous.anchor_weight")),
        )
    )


def _diffs(runs: list[dict[str, Any]], set_name: str) -> list[tuple[float, float]]:
    """(mean paired difference, SE) of one set in every cycle of ``runs``."""
    return [
        (
            c["comparisons"][set_name]["mean_difference"],
            c["comparisons"][set_name]["standard_error"],
        )
        for r in runs
        for c in r["cycles"]
    ]


def _net(run: dict[str, Any], set_name: str) -> float:
    """The served policy after the run's cycles vs the first served one: promoted diffs summed."""
    return float(
        sum(c["comparisons"][set_name]["mean_difference"] for c in run["cycles"] if c["promoted"])
    )


def score_variants(results: list[dict[str, Any]], cycles: int) -> list[dict[str, Any]]:
    """RESULTS.md §12's rule, per variant: complete?, score and SE, eligible?, net gains."""
    out = []
    for name in dict.fromkeys(r["variant"] for r in results):
        runs = [r for r in results if r["variant"] == name and "error" not in r]
        runs = [r for r in runs if len(r["cycles"]) == cycles]
        complete = len(runs) >= 2 and all(
            {"cluster", "holdout"} <= set(c["comparisons"] or {}) for r in runs for c in r["cycles"]
        )
        row: dict[str, Any] = {"variant": name, "terms": _terms(name), "complete": complete}
        if complete:
            cluster = _diffs(runs, "cluster")
            row["score"] = sum(d for d, _ in cluster) / len(cluster)
            row["se"] = math.sqrt(sum(se * se for _, se in cluster)) / len(cluster)
            row["eligible"] = all(d >= -2 * se for d, se in _diffs(runs, "holdout"))
            row["improves"] = row["score"] - 2 * row["se"] > 0
            row["net"] = {r["seed"]: {k: _net(r, k) for k in ("cluster", "holdout")} for r in runs}
        out.append(row)
    return out


def choose(scored: list[dict[str, Any]], shipped: str = "warmup") -> str:
    """The default by §12's rule: best eligible score; ties (< the larger SE) -> fewer terms."""
    eligible = [v for v in scored if v["complete"] and v["eligible"]]
    if not eligible:
        return shipped
    best = max(eligible, key=lambda v: v["score"])
    tied = [v for v in eligible if best["score"] - v["score"] < max(best["se"], v["se"])]
    return str(
        min(tied, key=lambda v: (v["terms"], v["variant"] != shipped, -v["score"]))["variant"]
    )


def summary(results: list[dict[str, Any]], cycles: int) -> str:
    """Markdown: per variant the rule's figures, then the default it chooses."""
    scored = score_variants(results, cycles)
    rows = [
        "| variant | terms | complete | score (SE) | eligible | improves (score - 2 SE > 0) |"
        " served after the cycles vs the first served, per seed: cluster / held-out |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in scored:
        if not v["complete"]:
            rows.append(f"| {v['variant']} | {v['terms']} | no | | | | |")
            continue
        net = "; ".join(
            f"seed {s}: {n['cluster']:+.3f} / {n['holdout']:+.3f}" for s, n in v["net"].items()
        )
        rows.append(
            f"| {v['variant']} | {v['terms']} | yes | {v['score']:+.3f} ({v['se']:.3f}) | "
            f"{'yes' if v['eligible'] else 'no'} | {'yes' if v['improves'] else 'no'} | {net} |"
        )
    none = not any(v["complete"] and v["eligible"] for v in scored)
    why = " (no variant eligible: the shipped one stays)" if none else ""
    rows.append(f"\nchosen by the rule: {choose(scored)}{why}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Build the history, run each variant's cycles, write and print the comparisons."""
    args = _parser().parse_args(argv)
    if args.summarize:
        merged = [r for f in args.summarize for r in json.loads(Path(f).read_text())["results"]]
        print(table(merged))
        print(summary(merged, args.cycles))
        return 0
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    write_history(work / "history", args.runs, args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for name in args.variants:
        for seed in args.seeds:
            results.append(run_with_retries(name, seed, args, work))
            out.write_text(
                json.dumps({"workloads": WORKLOADS, "results": results}, indent=1, default=str)
            )
    print(table(results))
    print(summary(results, args.cycles))
    return 0 if all("error" not in r for r in results) else 1


def run_with_retries(name: str, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Run one variant and seed, retrying ``--retries`` times; a last failure is recorded."""
    errors: list[str] = []
    for _ in range(args.retries + 1):
        t0 = time.monotonic()
        try:
            res = run_variant(name, seed, args, work)
        except RuntimeError as err:
            errors.append(str(err))
            print(f"{err} after {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
            failed = work / f"failed-{name}-s{seed}-{len(errors)}"
            shutil.copytree(work / f"{name}-s{seed}", failed, dirs_exist_ok=True)
            continue
        print(f"variant {name} seed {seed}: {res['wall_s']:.0f} s", file=sys.stderr, flush=True)
        return {**res, "failed_attempts": errors}
    return {"variant": name, "seed": seed, "error": errors[-1], "failed_attempts": errors}


if __name__ == "__main__":
    sys.exit(main())
