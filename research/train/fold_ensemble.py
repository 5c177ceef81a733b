"""Fold several exported policies into ONE artifact whose actor averages theirs.

Training seeds of one recipe disagree on the held-out workloads more than recipes do
(research/evaluate/RESULTS.md, rounds 5-8). Averaging members is the usual remedy. CI
runs a single artifact with numpy, so the members are folded into one wider MLP:
the first layers are stacked, the hidden layers placed block-diagonally, and the last
layers concatenated and scaled by 1/K. The folded actor's output (``loc`` and ``log_std``
before the tanh squash) is exactly the mean of the members' outputs. Members must share
the architecture, activations, observation normalization and action mapping.

Run: python research/train/fold_ensemble.py --out /tmp/ens /tmp/imit/dagger-s1?
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jpo.policy.artifact import MANIFEST_FILE, write_artifact

_SHARED = ("feature_spec_version", "observation", "action", "constraints_sha256")


def _load(path: Path) -> tuple[dict[str, Any], list[tuple[np.ndarray, np.ndarray, str]]]:
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    weights = np.load(path / manifest["weights_file"])
    layers = [
        (weights[layer["weight"]], weights[layer["bias"]], layer["activation"])
        for layer in manifest["network"]["layers"]
    ]
    return manifest, layers


def fold(members: Sequence[Path], out: Path) -> Path:
    """Write the averaging ensemble of ``members`` as one artifact at ``out``."""
    if len(members) < 2:
        raise SystemExit("fold_ensemble: give at least two policies")
    loaded = [_load(Path(m)) for m in members]
    first, first_layers = loaded[0]
    for path, (manifest, layers) in zip(members[1:], loaded[1:], strict=True):
        for key in _SHARED:
            if manifest[key] != first[key]:
                raise SystemExit(f"{path}: manifest key {key!r} differs from {members[0]}'s")
        shapes = [(w.shape, a) for w, _, a in layers]
        if shapes != [(w.shape, a) for w, _, a in first_layers]:
            raise SystemExit(f"{path}: network differs from {members[0]}'s")
    k = len(loaded)
    n_layers = len(first_layers)
    weights: dict[str, np.ndarray] = {}
    specs = []
    for i in range(n_layers):
        ws = [layers[i][0] for _, layers in loaded]
        bs = [layers[i][1] for _, layers in loaded]
        if n_layers == 1:
            w, b = np.mean(ws, axis=0), np.mean(bs, axis=0)
        elif i == 0:
            w, b = np.concatenate(ws, axis=0), np.concatenate(bs)
        elif i == n_layers - 1:
            w, b = np.concatenate(ws, axis=1) / k, np.mean(bs, axis=0)
        else:
            rows, cols = ws[0].shape
            w = np.zeros((rows * k, cols * k), dtype=ws[0].dtype)
            for j, member in enumerate(ws):
                w[j * rows : (j + 1) * rows, j * cols : (j + 1) * cols] = member
            b = np.concatenate(bs)
        weights[f"l{i}.weight"] = w.astype("f4")
        weights[f"l{i}.bias"] = b.astype("f4")
        specs.append(
            {"weight": f"l{i}.weight", "bias": f"l{i}.bias", "activation": first_layers[i][2]}
        )
    manifest = {
        key: first[key]
        for key in ("policy_version", "feature_spec_version", "observation", "action")
    }
    manifest.update(
        network={"layers": specs},
        constraints_sha256=first["constraints_sha256"],
        training_data={"ensemble_of": [m["training_data"] for m, _ in loaded]},
        source={"algorithm": "ensemble", "members": [str(m) for m in members]},
    )
    return write_artifact(out, weights, manifest)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="artifact folder to write")
    p.add_argument("members", nargs="+", type=Path, help="exported policy folders")
    args = p.parse_args()
    print(fold(args.members, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
