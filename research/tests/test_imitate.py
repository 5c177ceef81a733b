"""The imitation trainer (research/train/imitate.py): a short run exports a CI artifact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jpo.errors import PolicyError
from jpo.policy.artifact import LocalPolicy

REPO = Path(__file__).resolve().parents[2]


def test_imitate_exports_a_policy_that_ci_can_load(tmp_path: Path) -> None:
    out = tmp_path / "dagger-s3"
    cache = tmp_path / "oracles.json"
    command = [
        sys.executable, str(REPO / "research" / "train" / "imitate.py"),
        "--seed", "3", "--export", str(out), "--iterations", "2", "--episodes", "6",
        "--epochs", "2", "--oracle-cache", str(cache),
        "--set", "env.config.randomized_profiles=0",
        "--set", f"env.config.teacher_cache={tmp_path / 'env-oracles.json'}",
        "--set", "env.config.episode_length=4",
        "--set", "env.config.workloads=[cifar10-resnet18, mnist-lenet, imdb-lstm]",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["teacher_workloads"] == 3
    assert [it["states"] for it in report["iterations"]] == [24, 48]
    policy = LocalPolicy.load(out)
    action = policy.act(np.zeros(len(policy.observation_names), dtype=np.float32))
    assert action.shape == (4,) and np.all(np.abs(action) <= 1.0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["algorithm"] == "dagger-oracle"
    assert manifest["source"]["hold"] == ["learning_rate"]
    # the oracle cache is reused when the env and the oracle's configs match
    assert set(json.loads(cache.read_text())["oracles"]) == {
        "cifar10-resnet18", "mnist-lenet", "imdb-lstm"
    }  # fmt: skip
    cached = json.loads(cache.read_text())
    del cached["oracles"]["imdb-lstm"]  # a cache hit shows in the number of teachers
    cache.write_text(json.dumps(cached))
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(again.stdout.strip().splitlines()[-1])["teacher_workloads"] == 2


def test_history_students_for_several_seeds_come_from_one_run(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "research" / "train"))
    from campaign_history import history_names, is_history_input, with_history

    command = [
        sys.executable, str(REPO / "research" / "train" / "imitate.py"),
        "--seeds", "3", "4", "--history", "--export", str(tmp_path / "hist-s{seed}"),
        "--iterations", "2", "--episodes", "4", "--epochs", "1",
        "--oracle-cache", str(tmp_path / "oracles.json"),
        "--set", "env.config.randomized_profiles=0",
        "--set", f"env.config.teacher_cache={tmp_path / 'env-oracles.json'}",
        "--set", "env.config.episode_length=3",
        "--set", "env.config.workloads=[cifar10-resnet18, mnist-lenet]",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    reports = [json.loads(line) for line in done.stdout.splitlines() if '"export"' in line]
    assert [r["seed"] for r in reports] == [3, 4]
    from campaign_history import HISTORY_SPEC_VERSION, load_policy

    students = [load_policy(tmp_path / f"hist-s{seed}") for seed in (3, 4)]
    for seed in (3, 4):  # the CI stage's loader refuses a student it cannot feed
        with pytest.raises(PolicyError, match="feature spec version"):
            LocalPolicy.load(tmp_path / f"hist-s{seed}")
    assert all(p.manifest.feature_spec_version == HISTORY_SPEC_VERSION for p in students)
    spec = LocalPolicy.load(REPO / "jpo" / "data" / "policy").observation_names
    for policy in students:
        assert tuple(policy.observation_names) == history_names(spec)
        assert is_history_input(policy.observation_names)
        source = json.loads((policy.path / "manifest.json").read_text())["source"]
        assert source["history"] is True
        x = with_history(np.zeros(len(spec)), np.ones(len(spec)))
        assert policy.act(x).shape == (4,)
    # one student per seed: different seeds, different weights
    probe = with_history(np.full(len(spec), 0.5), None)
    assert not np.allclose(students[0].act(probe), students[1].act(probe))


def test_several_seeds_need_a_seed_placeholder_in_the_export(tmp_path: Path) -> None:
    command = [
        sys.executable, str(REPO / "research" / "train" / "imitate.py"),
        "--seeds", "3", "4", "--export", str(tmp_path / "one-folder"),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert done.returncode != 0 and "{seed}" in done.stderr
