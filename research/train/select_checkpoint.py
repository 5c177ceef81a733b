"""Pick the checkpoint to bundle on VALIDATION profiles, never on the held-out workloads.

Every checkpoint of a training run is exported and scored with ``jpo.evaluation.evaluate``'s
protocol (5 rounds, suggest path, fraction of the oracle's improvement) on synthetic
validation profiles: domain-randomized profiles drawn like the training ones
(``configs/randomization.toml``) but with another seed, so no training profile is among
them. The held-out catalog workloads stay the test set: choosing a checkpoint by its
held-out score would overfit the figure the quality bar reports.

    python research/train/select_checkpoint.py --storage runs/v4 [--profiles 24]
        [--seed 777001] [--seeds 1] [--iterations 60 300] [--out selection.json]
        [--export jpo/data/policy]

A second stage with fresh profiles (another ``--seed``), more of them and more noise
seeds, restricted to the first stage's leaders (``--iterations``), avoids picking a
checkpoint for the luck of the first draw (winner's curse).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from jpo.evaluation.evaluate import evaluate, load_evaluation_settings, method_summary
from jpo.policy.artifact import LocalPolicy
from jpo.sim.randomization import load_randomization, random_profiles
from jpo.sim.response import load_catalog
from jpo.train.trainer import Storage, export_latest, load_train_config

REPO = Path(__file__).resolve().parents[2]


def validation_profiles(count: int, seed: int) -> dict:
    """Return ``count`` synthetic profiles drawn like the training ones, with ``seed``."""
    settings = load_randomization(seed=seed)
    profiles = random_profiles(load_catalog(), count, settings=settings)
    return {f"val-{p.name}": dataclasses.replace(p, name=f"val-{p.name}") for p in profiles}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", required=True, help="training storage (checkpoints/)")
    p.add_argument("--config", default=str(REPO / "configs" / "train.yaml"))
    p.add_argument("--profiles", type=int, default=24)
    p.add_argument("--seed", type=int, default=777001, help="randomization seed (not training's)")
    p.add_argument("--seeds", type=int, default=1, help="noise seeds per profile")
    p.add_argument("--iterations", type=int, nargs="*", help="only these checkpoints")
    p.add_argument("--out", default=None, help="JSON file for every checkpoint's score")
    p.add_argument("--export", default=None, help="export the selected checkpoint here")
    args = p.parse_args()
    if args.seed == load_randomization().seed:
        raise SystemExit("--seed equals the training randomization seed: pick another")
    cfg = load_train_config(Path(args.config), {})
    storage = Storage(args.storage)
    catalog = validation_profiles(args.profiles, args.seed)
    settings = load_evaluation_settings().with_overrides(
        split="all", seeds=args.seeds, methods=("jpo", "oracle")
    )
    rows = []
    for ckpt in storage.list_checkpoints():
        marker = storage.read_marker(ckpt)
        if args.iterations and marker.get("iteration") not in args.iterations:
            continue
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            out = export_latest(cfg, storage, Path(tmp) / "p", checkpoint=ckpt)
            result = evaluate(
                settings,
                policy=LocalPolicy.load(out),
                policy_path=str(out),
                progress=False,
                catalog=catalog,
            )
        jpo = method_summary(result).set_index("method").loc["jpo"]
        row = {
            "checkpoint": ckpt,
            "iteration": marker.get("iteration"),
            "env_steps": marker.get("env_steps"),
            "validation_oracle_fraction": float(jpo["oracle_fraction_mean"]),
            "validation_val_loss_ok": float(jpo["val_loss_ok_share"]),
            "validation_oom_runs": int(jpo["oom_runs"]),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    best = max(rows, key=lambda r: r["validation_oracle_fraction"])
    print(json.dumps({"selected": best}))
    if args.export:
        export_latest(cfg, storage, Path(args.export), checkpoint=best["checkpoint"])
    if args.out:
        Path(args.out).write_text(
            json.dumps({"args": vars(args), "rows": rows, "selected": best}, indent=2)
        )


if __name__ == "__main__":
    main()
