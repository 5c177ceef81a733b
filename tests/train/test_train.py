"""Training entry point: config validation, storage, GPU resolution, and tiny real runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes.training import tiny_train_config

from jpo.errors import ConfigError
from jpo.train.trainer import (
    DEFAULT_CONFIG_PATH,
    ResourcesSection,
    StopSection,
    Storage,
    _should_stop,
    load_train_config,
    resolve_learner_resources,
)

REPO = Path(__file__).resolve().parents[2]


def tiny_config(tmp_path: Path, **extra: object) -> Path:
    """The shared tiny training config (tests/fakes/training.py), two iterations."""
    return tiny_train_config(tmp_path, iterations=2, **extra)


def test_bundled_config_validates() -> None:
    cfg = load_train_config(DEFAULT_CONFIG_PATH)
    assert cfg.env.id == "jpo/PrometheusReplay-v0"
    assert cfg.resources.num_gpus_per_learner == "auto"


def test_unknown_key_and_bad_value_name_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("sac:\n  actor_lr: -1\n  learning_speed: 3\n")
    with pytest.raises(ConfigError) as err:
        load_train_config(path)
    msg = str(err.value)
    assert str(path) in msg and "sac.actor_lr" in msg and "sac.learning_speed" in msg


def test_broken_yaml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("sac: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_train_config(path)
    with pytest.raises(ConfigError, match="cannot read training config"):
        load_train_config(tmp_path / "absent.yaml")


def test_overrides_apply_dotted_keys(tmp_path: Path) -> None:
    cfg = load_train_config(tiny_config(tmp_path), {"stop.iterations": 7, "sac.gamma": 0.5})
    assert cfg.stop.iterations == 7
    assert cfg.sac.gamma == 0.5


@pytest.mark.parametrize(
    ("learners", "gpus", "cluster_gpus", "cuda", "expected"),
    [
        (0, "auto", 0.0, False, (0, 0.0)),  # laptop: CPU learner in the driver
        (0, "auto", 1.0, True, (0, 1.0)),  # GPU box: driver-local learner on the GPU
        (0, "auto", 4.0, False, (1, 1.0)),  # CPU head, GPU workers: one remote learner
        (2, "auto", 4.0, False, (2, 1.0)),
        (0, 0.0, 4.0, True, (0, 0.0)),  # explicit 0 wins
    ],
)
def test_gpu_auto_resolution(learners, gpus, cluster_gpus, cuda, expected) -> None:
    res = ResourcesSection(num_learners=learners, num_gpus_per_learner=gpus)
    assert resolve_learner_resources(res, cluster_gpus=cluster_gpus, local_cuda=cuda) == expected


def test_stop_criteria_any_of() -> None:
    row = {"iteration": 3, "env_steps": 500, "episode_return_mean": float("nan")}
    assert _should_stop(StopSection(iterations=5), row, 0.0) is None
    assert "iterations" in _should_stop(StopSection(iterations=3), row, 0.0)
    assert "env_steps" in _should_stop(StopSection(iterations=None, env_steps=400), row, 0.0)
    assert "time_s" in _should_stop(StopSection(iterations=None, time_s=1.0), row, 2.0)
    assert _should_stop(StopSection(iterations=None, episode_return_mean=-1.0), row, 0.0) is None


@pytest.mark.parametrize("uri", ["local", "mock:///bucket/run"])
def test_storage_lists_only_complete_checkpoints_and_prunes(tmp_path: Path, uri: str) -> None:
    storage = Storage(str(tmp_path / "s") if uri == "local" else uri)
    for it in (1, 2, 3):
        path = storage.checkpoint_path(it)
        storage.fs.create_dir(path, recursive=True)
        with storage.fs.open_output_stream(f"{path}/state.bin") as out:
            out.write(b"x")
        if it != 3:  # iteration 3 crashed before its marker was written
            storage.mark_complete(path, {"iteration": it})
    assert storage.latest_checkpoint() == storage.checkpoint_path(2)
    storage.prune(1)
    assert storage.list_checkpoints() == [storage.checkpoint_path(2)]
    assert storage.read_marker(storage.checkpoint_path(2)) == {"iteration": 2}
    storage.append_progress({"iteration": 1, "episode_return_mean": float("nan")})
    storage.append_progress({"iteration": 2, "episode_return_mean": -3.0})
    with storage.fs.open_input_stream(f"{storage.base}/progress.jsonl") as src:
        rows = [json.loads(line) for line in src.read().decode().splitlines()]
    assert rows == [
        {"iteration": 1, "episode_return_mean": None},
        {"iteration": 2, "episode_return_mean": -3.0},
    ]
    local = storage.local_copy(storage.checkpoint_path(2), tmp_path / "copy")
    assert (local / "state.bin").read_bytes() == b"x"


@pytest.mark.slow
def test_pendulum_style_action_bounds_are_recorded(tmp_path: Path) -> None:
    gym = pytest.importorskip("gymnasium")
    from ray.rllib.algorithms.sac import SACConfig

    from jpo.policy.artifact import LocalPolicy
    from jpo.policy.export import export_policy

    env = gym.make("Pendulum-v1")
    module = (
        SACConfig()
        .environment(observation_space=env.observation_space, action_space=env.action_space)
        .get_rl_module_spec()
        .build()
    )
    out = export_policy(
        module,
        tmp_path / "p",
        policy_version=1,
        feature_spec_version="x",
        observation_names=["c", "s", "w"],
        action_names=["torque"],
    )
    policy = LocalPolicy.load(out, expected_feature_spec_version="x")
    assert (policy.manifest.action.low, policy.manifest.action.high) == (-2.0, 2.0)
    assert np.all(np.abs(policy.act(np.ones((5, 3)))) <= 2.0)


def test_bad_storage_uri_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"storage\.path"):
        Storage("nosuchscheme://x/y")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jpo.train", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )


def random_observations(n: int) -> np.ndarray:
    """``n`` observations drawn uniformly inside the feature spec's bounds (seeded)."""
    from jpo.learning.features import observation_bounds

    low, high = observation_bounds()
    return np.random.default_rng(0).uniform(low, high, (n, len(low))).astype(np.float32)


def rllib_actions(module: Any, x: np.ndarray) -> np.ndarray:
    """The SAC module's deterministic actions: RLlib's own tanh squash of the loc."""
    import torch
    from ray.rllib.core.columns import Columns

    with torch.no_grad():
        logits = module.forward_inference({Columns.OBS: torch.from_numpy(x)})[
            Columns.ACTION_DIST_INPUTS
        ]
    dist = module.get_inference_action_dist_cls().from_logits(logits)
    return np.asarray(dist._squash(dist.loc).numpy())


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("train")
    config = tiny_config(tmp)
    proc = _run("--config", str(config), "--export", str(tmp / "policy"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp


@pytest.mark.slow
def test_train_checkpoints_logs_and_exports(trained: Path) -> None:
    ckpts = sorted((trained / "store" / "checkpoints").iterdir())
    assert [p.name for p in ckpts] == ["iter_000001", "iter_000002"]
    assert (ckpts[-1] / "jpo_checkpoint.json").is_file()
    rows = [json.loads(x) for x in (trained / "store" / "progress.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]
    assert rows[-1]["env_steps"] >= 200
    assert "learner/qf_loss" in rows[-1]
    manifest = json.loads((trained / "policy" / "manifest.json").read_text())
    assert manifest["training_data"]["iterations"] == 2
    assert manifest["training_data"]["split"] == "train"
    assert "cifar10-resnet18" in manifest["training_data"]["workloads"]
    assert manifest["action"]["names"] == ["batch_size", "learning_rate", "num_layers", "epochs"]
    # The action mapping's coupling travels with the policy (configs/constraints.toml [action]).
    assert manifest["action"]["learning_rate_follows_batch"] == 1.0
    assert "reward/degradation_penalty" in rows[-1]  # reward components are logged


@pytest.mark.slow
def test_exported_policy_matches_rllib_checkpoint_to_1e_5(trained: Path) -> None:
    pytest.importorskip("torch")
    from jpo.learning.features import OBSERVATION_NAMES
    from jpo.policy.artifact import LocalPolicy
    from jpo.policy.export import load_module_from_checkpoint

    module = load_module_from_checkpoint(trained / "store" / "checkpoints" / "iter_000002")

    policy = LocalPolicy.load(trained / "policy")  # feature spec of this JPO
    assert policy.observation_names == OBSERVATION_NAMES
    x = random_observations(256)
    np.testing.assert_allclose(policy.act(x), rllib_actions(module, x), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_resume_continues_from_the_latest_checkpoint(trained: Path) -> None:
    proc = _run("--config", str(trained / "tiny.yaml"), "--resume", "--stop-iters", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr and "iter_000002" in proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["iterations"] == 3
    assert summary["env_steps"] >= 300  # counters came back with the checkpoint
    names = sorted(p.name for p in (trained / "store" / "checkpoints").iterdir())
    assert names == ["iter_000002", "iter_000003"]  # keep: 2


@pytest.mark.slow
def test_bad_config_exits_with_invalid_input_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("stop: {iterations: 0}\n")
    proc = _run("--config", str(bad))
    assert proc.returncode == 2
    assert "stop.iterations" in proc.stderr


@pytest.mark.slow
def test_export_only_exports_the_latest_checkpoint(trained: Path) -> None:
    proc = _run(
        "--config", str(trained / "tiny.yaml"), "--export-only", "--export", str(trained / "again")
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((trained / "again" / "manifest.json").read_text())
    assert manifest["source"]["checkpoint"].endswith("iter_000003") or manifest["source"][
        "checkpoint"
    ].endswith("iter_000002")


def test_jpo_train_command_is_registered_and_maps_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from typer.testing import CliRunner

    from jpo.cli.app import build_app

    runner = CliRunner()
    app = build_app()
    assert "--continuous" in runner.invoke(app, ["train", "--help"]).output
    bad = tmp_path / "bad.yaml"
    bad.write_text("resources: {num_learners: -1}\n")
    from jpo.cli.app import main

    assert main(["train", "--config", str(bad)]) == 2
    assert "resources.num_learners" in capsys.readouterr().err
    assert main(["train", "--set", "sac.nonsense=1"]) == 2  # jpo train --set, same errors
    assert "sac.nonsense (from --set sac.nonsense" in capsys.readouterr().err


@pytest.mark.slow
def test_checkpoints_go_through_a_pyarrow_filesystem_uri(tmp_path: Path) -> None:
    """``mock://`` is pyarrow's in-memory filesystem: the code path of s3:// and gs://."""
    from jpo.policy.artifact import LocalPolicy
    from jpo.train.trainer import train

    cfg = load_train_config(tiny_config(tmp_path), {"stop.iterations": 1})
    result = train(
        cfg, storage_path="mock:///bucket/jpo", export_dir=tmp_path / "p", shutdown_ray=True
    )
    assert result.checkpoint == "bucket/jpo/checkpoints/iter_000001"
    assert LocalPolicy.load(tmp_path / "p").manifest.source["checkpoint"] == result.checkpoint


def test_set_overrides_parse_yaml_values_and_name_the_bad_key(tmp_path: Path) -> None:
    from jpo.train.trainer import parse_set_overrides

    sets = parse_set_overrides(["stop.iterations=3", "model.fcnet_hiddens=[8, 8]", "seed=null"])
    assert sets == {"stop.iterations": 3, "model.fcnet_hiddens": [8, 8], "seed": None}
    cfg = load_train_config(tiny_config(tmp_path), sets)
    assert (cfg.stop.iterations, cfg.model.fcnet_hiddens, cfg.seed) == (3, [8, 8], None)
    with pytest.raises(ConfigError, match=r"--set stop\.iterations"):
        parse_set_overrides(["stop.iterations"])  # no '='
    with pytest.raises(ConfigError, match=r"sac\.learning_speed \(from --set sac\.learning_speed"):
        load_train_config(tiny_config(tmp_path), {"sac.learning_speed": 3})
    with pytest.raises(ConfigError, match=r"stop\.iterations \(from --set"):
        load_train_config(tiny_config(tmp_path), parse_set_overrides(["stop.iterations=0"]))
    with pytest.raises(ConfigError, match=r"seed in .* is a value, not a section"):
        load_train_config(tiny_config(tmp_path), {"seed.x": 1})


@pytest.mark.slow
def test_set_progress_and_export_only_use_the_run_s_own_config(tmp_path: Path) -> None:
    """A short run configured by --set logs every phase; export-only without --config
    writes a manifest describing THAT run (not configs/train.yaml)."""
    cache = tmp_path / "oracles.json"
    proc = _run(
        "--config",
        str(tiny_config(tmp_path)),
        "--set",
        "stop.iterations=1",
        "--set",
        "env.config.episode_length=3",
        "--set",
        "env.config.teacher=true",
        "--set",
        f"env.config.teacher_cache={cache}",
        "--set",
        "sac.bc_weight=0.5",
        "--set",
        "export.policy_version=42",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stderr
    phases = [
        "phase 1/3 setup",
        "building replays",
        "oracle search of the teacher",
        "built replays",
        "phase 2/3 RLlib",
        "phase 3/3 training",
        "iter 1 | steps",
        "checkpoint ",
    ]
    positions = [log.find(p) for p in phases]
    assert all(p >= 0 for p in positions), dict(zip(phases, positions, strict=True))
    ckpt = tmp_path / "store" / "checkpoints" / "iter_000001"
    recorded = json.loads((ckpt / "jpo_train_config.json").read_text())
    assert recorded["config"]["export"]["policy_version"] == 42
    assert recorded["config"]["sac"]["bc_weight"] == 0.5

    out = tmp_path / "exported"
    proc = _run("--export-only", "--storage", str(tmp_path / "store"), "--export", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["policy_version"] == 42
    assert manifest["training_data"]["episode_length"] == 3
    assert manifest["source"]["bc_weight"] == 0.5
    assert manifest["source"]["seed"] == 1
    assert "building replays" not in proc.stderr  # described from the record, no env built
