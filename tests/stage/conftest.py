"""Fixtures the CI stage's tests share: the workload file, its run history, a batch-up policy."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes.suggest_campaign import HP, FakeSource, make_policy, write_config


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """The example workload's config.ini in a fresh app folder."""
    return write_config(tmp_path)


@pytest.fixture
def source() -> FakeSource:
    """One simulated cifar10-resnet18 run (run-1) at the example config's values."""
    fake = FakeSource()
    fake.add(HP, "run-1")
    return fake


@pytest.fixture
def policy_up(tmp_path: Path) -> Path:
    """Batch size up by half the trust region, everything else kept."""
    return Path(make_policy(tmp_path / "policy-up", (0.5, 0.0, 0.0, 0.0)))
