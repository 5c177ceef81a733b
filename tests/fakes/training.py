"""A training config small enough for a 2-core CI machine (a few seconds per iteration)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def tiny_train_config(tmp_path: Path, iterations: int = 1, **extra: object) -> Path:
    """Write a tiny ``configs/train.yaml`` look-alike storing under ``tmp_path/store``.

    ``extra`` replaces top-level sections (e.g. ``stop={"iterations": 3}``).
    """
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = {
        "seed": 1,
        "env": {
            "id": "jpo/PrometheusReplay-v0",
            "register_module": "jpo.sim",
            "config": {"source": "catalog", "split": "train", "episode_length": 4},
        },
        "model": {"fcnet_hiddens": [16, 16]},
        "sac": {
            "train_batch_size_per_learner": 32,
            "num_steps_sampled_before_learning_starts": 50,
            "replay_buffer": {"capacity": 2000},
        },
        "resources": {"ray_num_cpus": 2, "object_store_memory_mb": 200, "torch_threads": 1},
        "storage": {"path": str(tmp_path / "store"), "checkpoint_every": 1, "keep": 2},
        "stop": {"iterations": iterations},
        "reporting": {"min_sample_timesteps_per_iteration": 100, "progress_bar": False},
        **extra,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def train_tiny(tmp_path: Path, iterations: int = 1) -> Path:
    """Train ``python -m jpo.train`` on the tiny config; return the config path."""
    config = tiny_train_config(tmp_path, iterations)
    proc = subprocess.run(
        [sys.executable, "-m", "jpo.train", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return config
