"""Repeat the real digits-mlp end-to-end run and report medians of its before/after figures.

Each repeat is one ``examples/digits-mlp/run_e2e.py`` (full mode unless ``--short``): run 1
with the example's config.ini, then ``--rounds`` rounds of ``jpo suggest``, a run with what
config.ini then holds and ``jpo feedback``, and what the next ``jpo suggest`` would do.
It reports each run and two ratios to run 1: the first step's run, and the incumbent (the
fastest run whose val loss stayed within 1 % of run 1's). The runs of one repeat run back
to back on the same machine, so their ratios are the figures to read; wall times of
different repeats drift with the machine's load. Nothing else should run meanwhile.

Usage::

    python benchmarks/evaluate/digits_e2e.py --repeats 3 --rounds 5 --out /tmp/digits-e2e
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jpo.reporting.machine import describe_machine

ROOT = Path(__file__).resolve().parents[2]
E2E = ROOT / "examples" / "digits-mlp" / "run_e2e.py"


def one_repeat(out: Path, short: bool, rounds: int) -> dict[str, Any]:
    """Run run_e2e.py once into ``out``; return its e2e.json."""
    cmd = [sys.executable, str(E2E), "--out", str(out), "--rounds", str(rounds)]
    cmd += ["--short"] if short else []
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}")
    summary: dict[str, Any] = json.loads((out / "e2e.json").read_text())
    return summary


FIGURES: dict[str, Callable[[dict[str, Any]], float]] = {
    "wall_s": lambda r: r["wall_s"],
    "final_val_loss": lambda r: r["final_val_loss"],
    "val_accuracy": lambda r: r["val_accuracy"],
    "throughput": lambda r: r["throughput_mean"],
    "cpu_util": lambda r: r["measured"]["cpu_util_mean"],
    "mem_util": lambda r: r["measured"]["mem_util_mean"],
}
"""What each run reports, by name."""


def row(summary: dict[str, Any]) -> dict[str, Any]:
    """Return one repeat's runs and its ratios: first step / run 1, incumbent / run 1."""
    runs, steps = summary["runs"], summary["steps"]
    best = next(r for r in runs if r["run_id"] == summary["incumbent"])
    per_run = []
    for i, run in enumerate(runs):
        step = steps[i - 1] if i else None
        said = json.loads(step["suggest"]["stdout"]) if step else {}
        fed = json.loads(step["feedback"]["stdout"]) if step and step["feedback"] else {}
        per_run.append(
            {
                "run_id": run["run_id"],
                "hyperparameters": run["hyperparameters"],
                "decision": said.get("status"),
                "degraded": fed.get("degraded"),
                "reward": fed.get("reward"),
                **{name: get(run) for name, get in FIGURES.items()},
            }
        )
    following = json.loads(summary["next_suggest"]["stdout"])
    ratios = {
        name: {
            "first_step": get(runs[1]) / get(runs[0]),
            "incumbent": get(best) / get(runs[0]),
        }
        for name, get in FIGURES.items()
    }
    return {
        "runs": per_run,
        "incumbent": summary["incumbent"],
        "next_after": following.get("after"),
        "ratios": ratios,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="run_e2e.py --rounds")
    parser.add_argument("--short", action="store_true", help="run_e2e.py --short (smoke)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    rows = []
    for i in range(args.repeats):
        rows.append(row(one_repeat(args.out / f"repeat-{i}", args.short, args.rounds)))
        print(json.dumps(rows[-1]), flush=True)
    medians = {
        name: {
            which: statistics.median(r["ratios"][name][which] for r in rows)
            for which in ("first_step", "incumbent")
        }
        for name in FIGURES
    }
    result = {
        "machine": describe_machine(),
        "rounds": args.rounds,
        "repeats": rows,
        "medians": medians,
    }
    (args.out / "digits_e2e.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(medians, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
