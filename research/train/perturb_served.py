"""How far does a tiny random change of the served policy's weights move its evaluation?

RESULTS.md §12's control: a continuous cycle's candidate differs from the served policy by
its updates; one Adam step at the cycles' actor rate moves every weight by about the rate
(5e-4). This script adds ``±eps`` (random signs) to every weight of the bundled policy,
``--draws`` times, and scores each perturbed copy against the unperturbed one on the same
seeded episodes of the two sets the promotion check uses (cluster: the history's
calibrated profiles; held-out: the catalog's held-out split), as
:mod:`jpo.train.continuous` does. No training, no Ray.

Run (from the repository root, ``PYTHONPATH=.``; the history of continuous_cycles.py)::

    python research/train/perturb_served.py --history /tmp/cyc12/work/history --draws 4
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--history", required=True, help="Parquet history store (the cluster)")
    p.add_argument("--eps", type=float, default=5e-4, help="size of the change of each weight")
    p.add_argument("--draws", type=int, default=4, help="random perturbations")
    p.add_argument("--episodes", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="seed of the random signs")
    p.add_argument("--out", default=None, help="JSON of the figures")
    return p


def _perturbed(src: Any, eps: float, rng: np.random.Generator, dest: Path) -> Any:
    """Write ``src`` with ±eps added to every weight as an artifact in ``dest``; load it."""
    from jpo.policy.artifact import LocalPolicy, write_artifact

    with np.load(src.path / src.manifest.weights_file) as npz:
        weights = {k: npz[k] + eps * rng.choice([-1.0, 1.0], npz[k].shape) for k in npz.files}
    manifest = src.manifest.model_dump(mode="json")
    for key in ("format_version", "weights_file", "weights_sha256"):
        manifest.pop(key)
    write_artifact(dest, {k: v.astype(np.float32) for k, v in weights.items()}, manifest)
    return LocalPolicy.load(dest)


def main(argv: list[str] | None = None) -> int:
    """Score ``--draws`` perturbed copies of the bundled policy against it on both sets."""
    args = _parser().parse_args(argv)
    from jpo.policy.artifact import LocalPolicy
    from jpo.policy.source import default_policy_path
    from jpo.train.continuous import episode_returns, load_continuous_config
    from jpo.train.trainer import load_train_config, make_env

    cfg = load_train_config()
    conf = load_continuous_config(cfg)
    cluster = {
        **conf.env_overrides_with_history,
        "history_path": str(Path(args.history).resolve()),
        "teacher": False,
    }
    sets = {
        "cluster": lambda: make_env(cfg.env.model_dump(), cluster),
        # the catalog's held-out split, thinned as when §12 ran this (the cycles' check then)
        "holdout": lambda: make_env(
            cfg.env.model_dump(),
            {
                "split": "holdout",
                "randomized_profiles": 0,
                "catalog_max_samples_per_run": 2000,
                "teacher": False,
            },
        ),
    }
    served = LocalPolicy.load(default_policy_path())
    rng = np.random.default_rng(args.seed)
    kwargs = {"episodes": args.episodes, "seed": conf.eval_seed}
    base = {name: episode_returns(served.act, make, **kwargs) for name, make in sets.items()}
    rows = []
    with tempfile.TemporaryDirectory(prefix="jpo-perturb-") as tmp:
        for draw in range(args.draws):
            policy = _perturbed(served, args.eps, rng, Path(tmp) / f"d{draw}")
            row: dict[str, Any] = {"draw": draw}
            for name, make in sets.items():
                d = np.subtract(episode_returns(policy.act, make, **kwargs), base[name])
                row[name] = {
                    "mean_difference": float(d.mean()),
                    "standard_error": float(d.std(ddof=1) / math.sqrt(d.size)),
                    "episodes_changed": int(np.count_nonzero(np.abs(d) > 1e-9)),
                }
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"eps": args.eps, "served": base, "draws": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
