"""The imitation trainer (benchmarks/train/imitate.py): a short run exports a CI artifact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from jpo.policy import LocalPolicy

REPO = Path(__file__).resolve().parents[2]


def test_imitate_exports_a_policy_that_ci_can_load(tmp_path: Path) -> None:
    out = tmp_path / "dagger-s3"
    cache = tmp_path / "oracles.json"
    command = [
        sys.executable, str(REPO / "benchmarks" / "train" / "imitate.py"),
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
