"""Leave-workloads-out transfer score of an imitation recipe, without the held-out split.

Why: recipes are chosen for transfer to workloads the policy never saw, but the synthetic
validation profiles do not rank teacher-trained recipes as the held-out split does
(research/evaluate/RESULTS.md, rounds 9-10), and choosing by the held-out split spends
the test set. This measures transfer inside the training split: the catalog's training
workloads are dealt into ``--folds`` folds; for each fold, ``imitate.py`` trains a
student on the other training workloads plus the recipe's randomized profiles, and
``jpo.evaluation.evaluate`` (the shipped CI stage, ``--seeds`` noise seeds, 5 rounds) scores it on
the fold's workloads. Each training workload is scored once, by the student that never
saw it; the recipe's figure is the mean over all of them. No held-out workload is used.

    python research/train/lwo.py --seed 0 --out /tmp/lwo/lr-epochs-s0 \\
        [--folds 4] [--seeds 3] -- --hold learning_rate,epochs [more imitate.py options]

Every option after ``--`` goes to ``imitate.py`` (not ``--seed``, ``--export``,
``--oracle-cache``: this script sets them). One fold costs ~2-3 min of one core (most of
it building the env); the oracle configurations are cached per fold under ``--cache``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMITATE = Path(__file__).resolve().parent / "imitate.py"


def training_workloads() -> list[str]:
    """Return the catalog's training-split workload names, sorted."""
    from jpo.sim.response import load_catalog

    return sorted(n for n, p in load_catalog().items() if p.split == "train")


def folds_of(names: list[str], folds: int) -> list[list[str]]:
    """Deal ``names`` into ``folds`` folds (round robin, so sizes differ by at most one)."""
    if not 2 <= folds <= len(names):
        raise SystemExit(f"--folds must be in 2..{len(names)}, got {folds}")
    return [names[k::folds] for k in range(folds)]


def score_fold(policy: Path, workloads: list[str], seeds: int) -> dict[str, float]:
    """Return the student's oracle fraction per workload (the evaluation protocol)."""
    from jpo.evaluation.evaluate import evaluate, load_evaluation_settings, workload_summary
    from jpo.policy.artifact import LocalPolicy

    settings = load_evaluation_settings().with_overrides(
        split="all", seeds=seeds, methods=("jpo", "oracle")
    )
    result = evaluate(
        settings,
        workloads=workloads,
        policy=LocalPolicy.load(policy),
        policy_path=str(policy),
        progress=False,
    )
    per = workload_summary(result)
    per = per[per["method"] == "jpo"]
    pairs = zip(per["workload"], per["oracle_fraction"], strict=True)
    return {str(w): round(float(f), 4) for w, f in pairs}


def main() -> int:
    argv = sys.argv[1:]
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0, help="imitate.py's seed (every fold)")
    p.add_argument("--folds", type=int, default=4)
    p.add_argument(
        "--workloads",
        default="",
        help="comma-separated training workloads to deal into folds (default: all of them)",
    )
    p.add_argument("--seeds", type=int, default=3, help="noise seeds per scored workload")
    p.add_argument("--out", type=Path, required=True, help="folder for students and scores")
    p.add_argument(
        "--cache",
        type=Path,
        default=ROOT / "runs" / "lwo",
        help="folder of the per-fold oracle caches (reused across recipes and seeds)",
    )
    args = p.parse_args(argv)
    for flag in ("--seed", "--export", "--oracle-cache"):
        if any(a == flag or a.startswith(flag + "=") for a in extra):
            raise SystemExit(f"{flag} is set by lwo.py; do not pass it to imitate.py")

    names = training_workloads()
    if args.workloads:
        chosen = [w for w in args.workloads.split(",") if w]
        unknown = [w for w in chosen if w not in names]
        if unknown:
            raise SystemExit(f"--workloads {unknown[0]!r}: training workloads: {', '.join(names)}")
        names = sorted(chosen)
    args.out.mkdir(parents=True, exist_ok=True)
    scores: dict[str, float] = {}
    for k, fold in enumerate(folds_of(names, args.folds)):
        t0 = time.perf_counter()
        train_on = [n for n in names if n not in fold]
        student = args.out / f"fold{k}"
        cmd = [
            sys.executable,
            str(IMITATE),
            "--seed",
            str(args.seed),
            "--export",
            str(student),
            "--oracle-cache",
            str(args.cache / f"oracles-{args.folds}folds-{k}.json"),
            "--set",
            f"env.config.workloads={json.dumps(train_on)}",
            *extra,
        ]
        log = args.out / f"fold{k}.log"
        with log.open("w") as fh:
            done = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            raise SystemExit(f"fold {k}: imitate.py failed (rc {done.returncode}); see {log}")
        got = score_fold(student, fold, args.seeds)
        scores.update(got)
        wall = round(time.perf_counter() - t0)
        row = {"fold": k, "left_out": fold, "scores": got, "wall_s": wall}
        print(json.dumps(row), flush=True)
    summary = {
        "seed": args.seed,
        "imitate_args": extra,
        "folds": args.folds,
        "noise_seeds": args.seeds,
        "lwo_mean": round(sum(scores.values()) / len(scores), 4),
        "per_workload": scores,
    }
    (args.out / "lwo.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
