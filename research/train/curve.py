"""Learning curve of the RLlib run: quality (fraction of the oracle) vs wall time.

Trains with configs/train.yaml (overrides below), keeping every checkpoint, then exports
each checkpoint and measures it with research/train/quality.py on the training and the
held-out split. "Time to the quality bar" is the training wall time (RLlib's
time_total_s, evaluation excluded) of the first checkpoint whose mean fraction of the
oracle's improvement on the training split is >= 0.9.

Run: python research/train/curve.py --env-steps 40000 --storage runs/curve \
        --out research/train/curve.json
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

from quality import measure

from jpo.train.trainer import Storage, export_latest, load_train_config, train

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--env-steps", type=int, default=40000)
    p.add_argument("--checkpoint-every", type=int, default=4)
    p.add_argument("--storage", default="runs/curve")
    p.add_argument("--skip-train", action="store_true", help="only evaluate the checkpoints")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "train" / "curve.json"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO)
    cfg = load_train_config(
        REPO / "configs" / "train.yaml",
        {
            "stop.env_steps": args.env_steps,
            "storage.keep": 100000,
            "storage.checkpoint_every": args.checkpoint_every,
            "reporting.progress_bar": False,
        },
    )
    if not args.skip_train:
        train(cfg, storage_path=args.storage, shutdown_ray=True)
    storage = Storage(args.storage)
    progress = {}
    for line in Path(storage.base, "progress.jsonl").read_text().splitlines():
        row = json.loads(line)
        progress[row["iteration"]] = row
    rows = []
    for ckpt in storage.list_checkpoints():
        marker = storage.read_marker(ckpt)
        it = int(marker["iteration"])
        with tempfile.TemporaryDirectory() as tmp:
            out = export_latest(cfg, storage, Path(tmp) / "p", checkpoint=ckpt)
            q = {s: measure(str(out), s, rounds=5, seeds=1) for s in ("train", "holdout")}
        frac = {
            s: next(m["oracle_fraction_mean"] for m in q[s]["methods"] if m["method"] == "jpo")
            for s in q
        }
        ok = {
            s: next(m["val_loss_ok_share"] for m in q[s]["methods"] if m["method"] == "jpo")
            for s in q
        }
        row = {
            "checkpoint": ckpt,
            "iteration": it,
            "env_steps": marker.get("env_steps"),
            "train_wall_s": progress.get(it, {}).get("time_total_s"),
            "episode_return_mean": marker.get("episode_return_mean"),
            "oracle_fraction_train": frac["train"],
            "oracle_fraction_holdout": frac["holdout"],
            "val_loss_ok_train": ok["train"],
            "val_loss_ok_holdout": ok["holdout"],
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    reached = next((r for r in rows if r["oracle_fraction_train"] >= 0.9), None)
    Path(args.out).write_text(
        json.dumps({"args": vars(args), "rows": rows, "reached_0.9_train": reached}, indent=2)
    )


if __name__ == "__main__":
    main()
