"""$JPO_CONFIG_DIR reaches every settings loader, set after import (issue 28).

configs/ is copied to a temporary folder, one value is changed in each file, the variable
is set, and every loader must see its change: no default path is computed at import time.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jpo.paths import REPO_ROOT

CONFIGS = REPO_ROOT / "configs"


def _load_metrics() -> Any:
    from jpo.telemetry.promql import load_catalog

    return load_catalog().settings.retries


def _load_policy_limits() -> Any:
    from jpo.policy.artifact import load_artifact_limits

    return load_artifact_limits().max_arrays


def _load_features() -> Any:
    from jpo.learning.features import _load_spec_constants

    return _load_spec_constants()["utilization_max"]


def _load_reward() -> Any:
    from jpo.learning.reward import load_reward_weights

    return load_reward_weights().failure_oom


def _load_constraints() -> Any:
    from jpo.workload.constraints import load_constraints

    return load_constraints().spec("epochs").max


def _load_schema() -> Any:
    from jpo.workload.config_file import load_workload_schema

    return load_workload_schema().label_value_max_length


def _load_env() -> Any:
    from jpo.sim.replay_env import load_env_config

    return load_env_config().episode_length


def _load_conditions() -> Any:
    from jpo.sim.response import load_conditions

    return load_conditions().contention


def _load_history() -> Any:
    from jpo.sim.simulator import load_history_settings

    return load_history_settings().gap_s


def _load_oracle() -> Any:
    from jpo.sim.oracle import load_oracle_settings

    return load_oracle_settings().starts


def _load_calibration() -> Any:
    from jpo.sim.calibration import load_calibration_settings

    return load_calibration_settings().max_nfev


def _load_randomization() -> Any:
    from jpo.sim.randomization import load_randomization

    return load_randomization().seed


def _load_profile() -> Any:
    from jpo.sim.response import load_catalog, load_profile

    assert load_catalog()["mnist-lenet"].b_noise == load_profile("mnist-lenet").b_noise
    return load_profile("mnist-lenet").b_noise


def _load_train() -> Any:
    from jpo.train.trainer import load_train_config

    return load_train_config().seed


def _load_continuous() -> Any:
    from jpo.train.continuous import load_continuous_config
    from jpo.train.trainer import load_train_config

    return load_continuous_config(load_train_config()).budget_iterations


def _load_serve() -> Any:
    pytest.importorskip("ray.serve")
    from jpo.serving.app import ServeSettings, default_settings

    return ServeSettings.model_validate(default_settings()).poll_interval_s


def _load_dashboard() -> Any:
    from jpo.reporting.dashboard import load_dashboard

    return load_dashboard()["title"]


# file, pattern of the one line changed, its replacement, the loader, the changed value
CHANGES: list[tuple[str, str, str, Callable[[], Any], Any]] = [
    ("metrics.toml", r"(?m)^retries = 2$", "retries = 5", _load_metrics, 5),
    ("policy.toml", r"(?m)^max_arrays = 64$", "max_arrays = 65", _load_policy_limits, 65),
    (
        "features.toml",
        r"(?m)^utilization_max = 1\.5$",
        "utilization_max = 1.25",
        _load_features,
        1.25,
    ),
    ("reward.toml", r"(?m)^oom = 5\.0$", "oom = 6.5", _load_reward, 6.5),
    ("constraints.toml", r"(?m)^max = 1000 ", "max = 999 ", _load_constraints, 999),
    (
        "workload_schema.toml",
        r"(?m)^label_value_max_length = 63$",
        "label_value_max_length = 60",
        _load_schema,
        60,
    ),
    ("env.toml", r"(?m)^episode_length = 16$", "episode_length = 5", _load_env, 5),
    ("cluster.toml", r"(?m)^contention = 0\.15 ", "contention = 0.25 ", _load_conditions, 0.25),
    ("cluster.toml", r"(?m)^gap_s = 900\.0 ", "gap_s = 901.0 ", _load_history, 901.0),
    ("oracle.toml", r"(?m)^starts = 8$", "starts = 9", _load_oracle, 9),
    ("calibration.toml", r"(?m)^max_nfev = 3000 ", "max_nfev = 3001 ", _load_calibration, 3001),
    ("randomization.toml", r"(?m)^seed = 1234 ", "seed = 4321 ", _load_randomization, 4321),
    ("workloads/mnist-lenet.toml", r"(?m)^b_noise = 500 ", "b_noise = 501 ", _load_profile, 501),
    ("train.yaml", r"(?m)^seed: 0 ", "seed: 3 ", _load_train, 3),
    (
        "train.yaml",
        r"(?m)^  budget_iterations: 20 ",
        "  budget_iterations: 21 ",
        _load_continuous,
        21,
    ),
    ("serve.yaml", r"(?m)^( +)poll_interval_s: 30$", r"\1poll_interval_s: 31", _load_serve, 31),
    (
        "k8s/dashboards/jpo-fleet.json",
        r'"title": "JPO fleet"',
        '"title": "JPO fleet (copy)"',
        _load_dashboard,
        "JPO fleet (copy)",
    ),
]


@pytest.fixture(scope="module")
def changed_configs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of configs/ with one value changed per entry of CHANGES."""
    folder = tmp_path_factory.mktemp("configs")
    shutil.copytree(CONFIGS, folder, dirs_exist_ok=True)
    for name, pattern, replacement, _, _ in CHANGES:
        file = folder / name
        text, n = re.subn(pattern, replacement, file.read_text(encoding="utf-8"), count=1)
        assert n == 1, f"{name}: {pattern!r} not found (the shipped file changed?)"
        file.write_text(text, encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    ("name", "load", "expected"),
    [(c[0], c[3], c[4]) for c in CHANGES],
    ids=[c[3].__name__.removeprefix("_load_") for c in CHANGES],
)
def test_every_loader_reads_the_config_dir_set_after_import(
    changed_configs: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    load: Callable[[], Any],
    expected: Any,
) -> None:
    shipped = load()  # imported and read once with the shipped configs/
    assert shipped != expected
    monkeypatch.setenv("JPO_CONFIG_DIR", str(changed_configs))
    assert load() == expected, f"the loader of {name} ignores JPO_CONFIG_DIR"
    monkeypatch.delenv("JPO_CONFIG_DIR")
    assert load() == shipped


def test_every_shipped_settings_file_has_a_loader_here() -> None:
    covered = {c[0] for c in CHANGES}
    not_ours = {"suggest.toml", "evaluate.toml"}  # their owners test them (issue 28)
    shipped = {p.name for p in CONFIGS.glob("*.toml")} | {p.name for p in CONFIGS.glob("*.yaml")}
    assert shipped - not_ours <= covered
