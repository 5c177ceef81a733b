"""Repeat the real digits-mlp end-to-end run and report medians of its before/after figures.

Each repeat is one ``examples/digits-mlp/run_e2e.py`` (full mode unless ``--short``): run 1
with the example's config.ini, ``jpo suggest``, run 2 with what config.ini then holds,
``jpo feedback``, and what the next ``jpo suggest`` would do. Before and after of one
repeat run back to back on the same machine, so their ratio is the figure to read; wall
times of different repeats drift with the machine's load. Nothing else should run
meanwhile.

Usage::

    python benchmarks/evaluate/digits_e2e.py --repeats 3 --out /tmp/digits-e2e
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
E2E = ROOT / "examples" / "digits-mlp" / "run_e2e.py"


def one_repeat(out: Path, short: bool) -> dict[str, Any]:
    """Run run_e2e.py once into ``out``; return its e2e.json."""
    cmd = [sys.executable, str(E2E), "--out", str(out), *(["--short"] if short else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}")
    summary: dict[str, Any] = json.loads((out / "e2e.json").read_text())
    return summary


def row(summary: dict[str, Any]) -> dict[str, Any]:
    """Return the figures of one repeat: before, after and after/before."""
    before, after = summary["before"], summary["after"]
    suggested = json.loads(summary["suggest"]["stdout"])
    fed = json.loads(summary["feedback"]["stdout"]) if summary["feedback"] else None
    following = json.loads(summary["next_suggest"]["stdout"]) if summary["next_suggest"] else None
    figures: dict[str, Any] = {
        "suggest_exit_code": summary["suggest"]["exit_code"],
        "hp_before": before["hyperparameters"],
        "hp_after": after["hyperparameters"],
        "proposed": suggested.get("after"),
        "reward": fed["reward"] if fed else None,
        "degraded": fed["degraded"] if fed else None,
        # the next suggestion after run 2 (dry run): back to run 1's values after a degraded run
        "next_after": following.get("after") if following else None,
    }
    for name, get in (
        ("wall_s", lambda r: r["wall_s"]),
        ("final_val_loss", lambda r: r["final_val_loss"]),
        ("val_accuracy", lambda r: r["val_accuracy"]),
        ("throughput", lambda r: r["throughput_mean"]),
        ("cpu_util", lambda r: r["measured"]["cpu_util_mean"]),
        ("mem_util", lambda r: r["measured"]["mem_util_mean"]),
    ):
        b, a = get(before), get(after)
        figures[name] = {"before": b, "after": a, "ratio": a / b if b else None}
    return figures


def machine() -> str:
    """Return the CPU model, core count and memory of this machine."""
    model = platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            ln.split(":", 1)[1].strip()
            for ln in cpuinfo.read_text().splitlines()
            if ln.startswith("model name")
        ]
        model = names[0] if names else model
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return f"{model}, {os.cpu_count()} cores, {mem_gib:.0f} GiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--short", action="store_true", help="run_e2e.py --short (smoke)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    rows = []
    for i in range(args.repeats):
        rows.append(row(one_repeat(args.out / f"repeat-{i}", args.short)))
        print(json.dumps(rows[-1]), flush=True)
    medians = {
        name: {k: statistics.median(r[name][k] for r in rows) for k in ("before", "after", "ratio")}
        for name in (
            "wall_s",
            "final_val_loss",
            "val_accuracy",
            "throughput",
            "cpu_util",
            "mem_util",
        )
    }
    result = {
        "machine": machine(),
        "repeats": rows,
        "medians": medians,
    }
    (args.out / "digits_e2e.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(medians, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
