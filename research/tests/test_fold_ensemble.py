"""research/train/fold_ensemble.py: one artifact that averages several policies."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from jpo.learning.features import FEATURE_SPEC_VERSION, OBSERVATION_NAMES
from jpo.policy.artifact import LocalPolicy, write_artifact

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "research" / "train"))

from fold_ensemble import fold  # noqa: E402

NAMES = list(OBSERVATION_NAMES)
N = len(NAMES)


def _member(path: Path, seed: int, hidden: int = 6) -> Path:
    rng = np.random.default_rng(seed)
    sizes = [N, hidden, hidden, 4]  # the features -> [loc, log_std] of 2 actions
    weights, layers = {}, []
    for i in range(3):
        scale = 2.0 / np.sqrt(sizes[i])  # fan-in scaled, so that tanh is not saturated
        weights[f"l{i}.weight"] = (scale * rng.normal(size=(sizes[i + 1], sizes[i]))).astype("f4")
        weights[f"l{i}.bias"] = rng.normal(size=sizes[i + 1]).astype("f4")
        act = "relu" if i < 2 else "linear"
        layers.append({"weight": f"l{i}.weight", "bias": f"l{i}.bias", "activation": act})
    manifest = {
        "policy_version": 1,
        "feature_spec_version": FEATURE_SPEC_VERSION,
        "observation": {
            "names": NAMES,
            "mean": [0.1] * N,
            "std": [2.0] * N,
            "clip_low": -5.0,
            "clip_high": 5.0,
        },
        "action": {"names": ["batch_size", "epochs"], "low": -1.0, "high": 1.0, "squash": "tanh"},
        "network": {"layers": layers},
        "constraints_sha256": None,
        "training_data": {"seed": seed},
        "source": {},
    }
    return write_artifact(path, weights, manifest)


def test_folded_actor_is_the_mean_of_the_members(tmp_path: Path) -> None:
    members = [_member(tmp_path / f"m{s}", s) for s in range(3)]
    out = fold(members, tmp_path / "ens")
    policies = [LocalPolicy.load(m) for m in members]
    ensemble = LocalPolicy.load(out)
    x = np.random.default_rng(9).normal(size=(200, N))
    # the action is tanh of the mean of the members' pre-squash means
    locs = [np.arctanh(np.clip(p.act(x), -1 + 1e-7, 1 - 1e-7)) for p in policies]
    unsaturated = np.all(np.abs(np.stack(locs)) < 5.0, axis=(0, 2))
    assert unsaturated.sum() > 50
    expected = np.tanh(np.mean(locs, axis=0))[unsaturated]
    np.testing.assert_allclose(ensemble.act(x)[unsaturated], expected, atol=1e-4)
    assert ensemble.manifest.source["members"] == [str(m) for m in members]


def test_members_must_share_the_network(tmp_path: Path) -> None:
    a = _member(tmp_path / "a", 0)
    b = _member(tmp_path / "b", 1, hidden=7)
    with pytest.raises(SystemExit, match="network differs"):
        fold([a, b], tmp_path / "ens")
    with pytest.raises(SystemExit, match="at least two"):
        fold([a], tmp_path / "ens")
