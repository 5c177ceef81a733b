"""The numpy policy artifact: round trip, refusals, no heavy imports, agreement with RLlib."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jpo.errors import PolicyError
from jpo.policy.artifact import (
    MANIFEST_FILE,
    WEIGHTS_FILE,
    LocalPolicy,
    latest_artifact,
    set_latest,
    write_artifact,
)

OBS = ("a", "b", "c", "d", "e")
ACT = ("batch_size", "learning_rate", "num_layers")


def _manifest(version: int = 1, fsv: str = "test-1") -> dict:
    return {
        "policy_version": version,
        "feature_spec_version": fsv,
        "observation": {"names": list(OBS), "mean": [0.0] * 5, "std": [1.0] * 5},
        "action": {"names": list(ACT)},
        "network": {
            "layers": [
                {"weight": "l0.weight", "bias": "l0.bias", "activation": "relu"},
                {"weight": "l1.weight", "bias": "l1.bias", "activation": "linear"},
            ]
        },
        "constraints_sha256": "0" * 64,
        "training_data": {"split": "train"},
    }


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "l0.weight": rng.normal(size=(8, 5)).astype("f4"),
        "l0.bias": rng.normal(size=8).astype("f4"),
        "l1.weight": rng.normal(size=(6, 8)).astype("f4"),
        "l1.bias": rng.normal(size=6).astype("f4"),
    }


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    return write_artifact(tmp_path / "policy", _weights(), _manifest())


def test_round_trip_matches_a_hand_computed_forward_pass(artifact: Path) -> None:
    policy = LocalPolicy.load(artifact, expected_feature_spec_version="test-1")
    w = _weights()
    x = np.random.default_rng(1).normal(size=(7, 5))
    hidden = np.maximum(x @ w["l0.weight"].T.astype(float) + w["l0.bias"], 0.0)
    loc = (hidden @ w["l1.weight"].T.astype(float) + w["l1.bias"])[:, :3]
    np.testing.assert_allclose(policy.act(x), np.tanh(loc), atol=1e-6)
    np.testing.assert_allclose(policy.act(x[2]), np.tanh(loc[2]), atol=1e-6)
    assert policy.version == 1
    assert policy.action_names == ACT
    assert policy.observation_names == OBS
    assert policy.manifest.training_data == {"split": "train"}
    assert len(policy.manifest.weights_sha256) == 64


def test_actions_stay_inside_bounds_for_extreme_observations(artifact: Path) -> None:
    policy = LocalPolicy.load(artifact, expected_feature_spec_version="test-1")
    act = policy.act(np.full((3, 5), 1e5))
    assert act.shape == (3, 3)
    assert np.all(act >= -1.0) and np.all(act <= 1.0)


def test_normalization_from_manifest_is_applied(tmp_path: Path) -> None:
    manifest = _manifest()
    manifest["observation"].update(mean=[1.0] * 5, std=[2.0] * 5, clip_low=-0.5, clip_high=0.5)
    plain = LocalPolicy.load(
        write_artifact(tmp_path / "plain", _weights(), _manifest()),
        expected_feature_spec_version="test-1",
    )
    scaled = LocalPolicy.load(
        write_artifact(tmp_path / "scaled", _weights(), manifest),
        expected_feature_spec_version="test-1",
    )
    x = np.array([3.0, 1.0, 1.4, -9.0, 2.0])
    expected = plain.act(np.clip((x - 1.0) / 2.0, -0.5, 0.5))
    np.testing.assert_allclose(scaled.act(x), expected)


def test_tampered_weights_are_refused_naming_the_file(artifact: Path) -> None:
    raw = bytearray((artifact / WEIGHTS_FILE).read_bytes())
    raw[-10] ^= 0xFF
    (artifact / WEIGHTS_FILE).write_bytes(bytes(raw))
    with pytest.raises(PolicyError, match=r"sha256 .* does not match") as err:
        LocalPolicy.load(artifact, expected_feature_spec_version="test-1")
    assert str(artifact / WEIGHTS_FILE) in str(err.value)
    assert "re-export" in str(err.value)


def test_feature_spec_mismatch_is_refused(artifact: Path) -> None:
    with pytest.raises(PolicyError, match=r"feature spec version 'test-1'.*'2'.*retrain"):
        LocalPolicy.load(artifact, expected_feature_spec_version="2")


def test_default_expected_feature_spec_is_jpo_features(tmp_path: Path) -> None:
    from fakes.policy import fixed_action_policy

    from jpo.learning.features import FEATURE_SPEC_VERSION

    # an artifact claiming the running spec must also carry its names (LocalPolicy.load)
    ok = fixed_action_policy(tmp_path / "ok", (0.0, 0.0, 0.0, 0.0))
    assert LocalPolicy.load(ok).manifest.feature_spec_version == FEATURE_SPEC_VERSION
    stale = write_artifact(tmp_path / "stale", _weights(), _manifest(fsv="0-stale"))
    with pytest.raises(PolicyError, match="feature spec version"):
        LocalPolicy.load(stale)


def test_unknown_format_and_broken_manifest_are_refused(artifact: Path) -> None:
    path = artifact / MANIFEST_FILE
    data = json.loads(path.read_text())
    data["format_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(PolicyError, match="format_version 99"):
        LocalPolicy.load(artifact, expected_feature_spec_version="test-1")
    path.write_text("{not json")
    with pytest.raises(PolicyError, match="cannot read policy manifest"):
        LocalPolicy.load(artifact, expected_feature_spec_version="test-1")


def test_missing_artifact_and_wrong_observation_width_are_clear(
    artifact: Path, tmp_path: Path
) -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        LocalPolicy.load(tmp_path / "nope", expected_feature_spec_version="test-1")
    policy = LocalPolicy.load(artifact, expected_feature_spec_version="test-1")
    with pytest.raises(PolicyError, match="expects 5 features"):
        policy.act(np.zeros(4))
    with pytest.raises(PolicyError, match="NaN"):
        policy.act(np.array([0.0, np.nan, 0.0, 0.0, 0.0]))


def test_inconsistent_shapes_are_refused_at_write(tmp_path: Path) -> None:
    weights = _weights()
    weights["l1.weight"] = weights["l1.weight"][:4]
    weights["l1.bias"] = weights["l1.bias"][:4]
    with pytest.raises(PolicyError, match="outputs 4 values"):
        write_artifact(tmp_path / "bad", weights, _manifest())
    assert not (tmp_path / "bad").exists()


def test_versions_folder_resolves_latest_pointer_then_highest(tmp_path: Path) -> None:
    root = tmp_path / "policies"
    write_artifact(root / "v000001", _weights(1), _manifest(1))
    write_artifact(root / "v000002", _weights(2), _manifest(2))
    assert latest_artifact(root).name == "v000002"
    set_latest(root, "v000001")
    assert LocalPolicy.load(root, expected_feature_spec_version="test-1").version == 1
    # Rewriting an artifact in place replaces it whole.
    write_artifact(root / "v000001", _weights(3), _manifest(7))
    assert LocalPolicy.load(root, expected_feature_spec_version="test-1").version == 7


def test_loading_and_acting_imports_neither_torch_nor_ray(artifact: Path) -> None:
    code = (
        "import sys, numpy as np\n"
        "from jpo.policy.artifact import LocalPolicy\n"
        f"p = LocalPolicy.load({str(artifact)!r}, expected_feature_spec_version='test-1')\n"
        "p.act(np.zeros(5))\n"
        "bad = [m for m in ('torch', 'ray') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_numpy_matches_rllib_inference_to_1e_5(tmp_path: Path, activation: str) -> None:
    gym = pytest.importorskip("gymnasium")
    torch = pytest.importorskip("torch")
    from ray.rllib.algorithms.sac import SACConfig
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    from jpo.policy.export import export_policy

    obs_space = gym.spaces.Box(-3.0, 3.0, (5,), np.float32)
    act_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    config = (
        SACConfig()
        .environment(observation_space=obs_space, action_space=act_space)
        .rl_module(
            model_config=DefaultModelConfig(
                fcnet_hiddens=[32, 16], fcnet_activation=activation, head_fcnet_hiddens=[8]
            )
        )
    )
    module = config.get_rl_module_spec().build()
    with torch.no_grad():  # move away from the init so the check is not trivial
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    out = export_policy(
        module,
        tmp_path / "art",
        policy_version=3,
        feature_spec_version="test-1",
        observation_names=OBS,
        action_names=ACT,
    )
    policy = LocalPolicy.load(out, expected_feature_spec_version="test-1")
    x = np.random.default_rng(0).uniform(-3, 3, (256, 5)).astype(np.float32)
    with torch.no_grad():
        logits = module.forward_inference({Columns.OBS: torch.from_numpy(x)})[
            Columns.ACTION_DIST_INPUTS
        ]
    dist = module.get_inference_action_dist_cls().from_logits(logits)
    rllib_action = dist._squash(dist.loc).numpy()  # RLlib's own tanh squash of the loc
    np.testing.assert_allclose(policy.act(x), rllib_action, atol=1e-5, rtol=0)
    assert policy.version == 3


def test_bundled_policy_loads_with_this_feature_spec() -> None:
    from jpo.learning.features import OBSERVATION_NAMES, observation_bounds
    from jpo.workload.types import HYPERPARAMETER_NAMES

    bundled = Path(__file__).resolve().parents[2] / "jpo" / "data" / "policy"
    policy = LocalPolicy.load(bundled)
    assert policy.observation_names == OBSERVATION_NAMES
    assert policy.action_names == HYPERPARAMETER_NAMES
    assert policy.manifest.training_data["split"] == "train"
    # never trained on a held-out workload: catalog workloads of the training split, and
    # synthetic profiles drawn around the training split only (domain randomization)
    from jpo.sim.response import load_catalog

    catalog = load_catalog()
    data = policy.manifest.training_data
    assert data["workloads"]
    assert all(catalog[name].split == "train" for name in data["workloads"])
    if "randomization" in data:
        assert data["randomization"]["base_split"] == "train"
        assert data["randomization"]["profiles"] > 0
    # trained with the action mapping the shipped constraints describe
    from jpo.workload.constraints import load_constraints

    assert policy.learning_rate_follows_batch == load_constraints().learning_rate_follows_batch
    low, high = observation_bounds()
    act = policy.act(np.random.default_rng(0).uniform(low, high, (64, len(low))))
    assert act.shape == (64, len(HYPERPARAMETER_NAMES))
    assert np.all(np.abs(act) <= 1.0)
