"""Leave-workloads-out scoring (research/train/lwo.py): folds, and a tiny end-to-end run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "research" / "train"))
from lwo import folds_of, training_workloads  # noqa: E402


def test_every_training_workload_is_left_out_exactly_once() -> None:
    names = training_workloads()
    folds = folds_of(names, 4)
    assert sorted(n for fold in folds for n in fold) == names
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    with pytest.raises(SystemExit, match=r"--folds must be in 2\.\.11"):
        folds_of(names, 12)


@pytest.mark.slow
def test_each_student_is_scored_on_the_workloads_it_never_saw(tmp_path: Path) -> None:
    out = tmp_path / "lwo"
    command = [
        sys.executable, str(REPO / "research" / "train" / "lwo.py"),
        "--seed", "1", "--folds", "2", "--seeds", "1", "--out", str(out),
        "--cache", str(tmp_path / "cache"),
        "--workloads", "cifar10-resnet18,mnist-lenet,imdb-lstm",
        "--", "--iterations", "1", "--episodes", "4", "--epochs", "1",
        "--set", "env.config.randomized_profiles=0",
        "--set", f"env.config.teacher_cache={tmp_path / 'env-oracles.json'}",
        "--set", "env.config.episode_length=3",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in done.stdout.strip().splitlines()]
    folds, summary = rows[:-1], rows[-1]
    assert [f["left_out"] for f in folds] == [["cifar10-resnet18", "mnist-lenet"], ["imdb-lstm"]]
    for fold in folds:
        trained = json.loads((out / f"fold{fold['fold']}.log").read_text().splitlines()[-1])
        seen = trained["overrides"]["env.config.workloads"]
        assert not set(seen) & set(fold["left_out"])  # never trained on what it is scored on
        assert set(fold["scores"]) == set(fold["left_out"])
    assert set(summary["per_workload"]) == {"cifar10-resnet18", "mnist-lenet", "imdb-lstm"}
    assert summary["lwo_mean"] == pytest.approx(sum(summary["per_workload"].values()) / 3, abs=1e-3)
    assert json.loads((out / "lwo.json").read_text()) == summary
    bad = subprocess.run(
        [*command[:2], "--out", str(out), "--", "--seed", "3"],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode != 0 and "--seed is set by lwo.py" in bad.stderr
