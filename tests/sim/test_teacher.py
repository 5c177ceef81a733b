"""The oracle teacher (jpo/sim/teacher.py) and the replay env's ``teacher`` option."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jpo.errors import ConfigError
from jpo.sim.replay_env import PrometheusReplayEnv
from jpo.sim.teacher import (
    cached_oracle_configs,
    oracle_configs,
    teacher_action,
    unvaried_hyperparameters,
)
from jpo.workload.types import HYPERPARAMETER_NAMES, Hyperparameters


@pytest.fixture(scope="module")
def env() -> PrometheusReplayEnv:
    return PrometheusReplayEnv(
        config={"workloads": ["cifar10-resnet18", "mnist-lenet"], "episode_length": 6}
    )


def test_the_teacher_walks_each_config_to_its_oracle(env: PrometheusReplayEnv) -> None:
    """Each teacher step moves every parameter towards the oracle's value, never past it."""
    oracles = oracle_configs(env.profiles, env.constraints)
    assert set(oracles) == {"cifar10-resnet18", "mnist-lenet"}
    for name, target in oracles.items():
        env.reset(seed=0, options={"workload": name, "start": 0})
        trace = [env.hyperparameters]
        for _ in range(6):  # one episode
            before = env.hyperparameters
            action = teacher_action(env, target, hold=())
            assert np.all(np.abs(action) <= 1.0)
            _, _, _, _, info = env.step(action.astype(np.float32))
            after = env.hyperparameters
            trace.append(after)
            if info["rolled_back"]:
                continue  # a failed run: back to the last good config
            for key in ("batch_size", "learning_rate", "num_layers", "epochs"):
                b, a, t = getattr(before, key), getattr(after, key), getattr(target, key)
                slack = 1e-6 * abs(t)  # the env takes float32 actions
                assert min(b, t) - slack <= a <= max(b, t) + slack, (name, key, b, a, t)
        assert trace[-1] != trace[0]


def test_holding_the_learning_rate_leaves_it_to_the_coupling(env: PrometheusReplayEnv) -> None:
    env.reset(seed=0, options={"workload": "mnist-lenet", "start": 0})
    target = oracle_configs(env.profiles[1:], env.constraints)["mnist-lenet"]
    action = teacher_action(env, target, hold=("learning_rate",))
    assert action[1] == 0.0 and action[0] != 0.0


def test_the_env_puts_the_teacher_action_in_every_info(tmp_path: Path) -> None:
    cache = tmp_path / "oracles.json"
    for step_info in (True, False):
        env = PrometheusReplayEnv(
            config={
                "workloads": ["mnist-lenet"],
                "episode_length": 3,
                "teacher": True,
                "teacher_cache": str(cache),
                "step_info": step_info,
            }
        )
        _, info = env.reset(seed=0, options={"start": 0})
        target = oracle_configs(env.profiles, env.constraints)["mnist-lenet"]  # the same each step
        for _ in range(3):
            action = info["teacher_action"]
            assert action.dtype == np.float32 and action.shape == (4,)
            expected = env.constraints.action_towards(
                env.hyperparameters, target, hold=("learning_rate", "epochs")
            )
            np.testing.assert_allclose(action, expected, rtol=1e-6)
            assert action[1] == 0.0 and action[3] == 0.0  # held: lr and epochs
            *_, info = env.step(action)
    plain = PrometheusReplayEnv(config={"workloads": ["mnist-lenet"], "step_info": False})
    assert plain.reset(seed=0)[1] == {}


def test_the_oracle_cache_is_used_only_for_the_same_profiles(tmp_path: Path) -> None:
    env = PrometheusReplayEnv(config={"workloads": ["cifar10-resnet18", "mnist-lenet"]})
    cache = tmp_path / "oracles.json"
    first = cached_oracle_configs(env.profiles, env.constraints, cache)
    data = json.loads(cache.read_text())
    data["oracles"]["mnist-lenet"]["epochs"] = 999  # a hit would return this
    cache.write_text(json.dumps(data))
    assert cached_oracle_configs(env.profiles, env.constraints, cache)["mnist-lenet"].epochs == 999
    # other profiles: another key, so the search runs again and rewrites the cache
    assert cached_oracle_configs(env.profiles[:1], env.constraints, cache) == {
        "cifar10-resnet18": first["cifar10-resnet18"]
    }
    assert set(json.loads(cache.read_text())["oracles"]) == {"cifar10-resnet18"}


def test_unknown_held_hyperparameter_is_a_config_error() -> None:

    with pytest.raises(ConfigError, match="teacher_hold has unknown hyperparameter"):
        PrometheusReplayEnv(config={"teacher_hold": ["depth"]})


def test_unvaried_hyperparameters_are_those_every_run_shares() -> None:
    a = Hyperparameters(64, 0.01, 4, 10)
    b = Hyperparameters(128, 0.01, 4, 12)
    assert unvaried_hyperparameters([a, b]) == ("learning_rate", "num_layers")
    assert unvaried_hyperparameters([a]) == HYPERPARAMETER_NAMES
    assert unvaried_hyperparameters([]) == HYPERPARAMETER_NAMES


def test_a_history_teacher_holds_what_its_runs_never_varied(tmp_path: Path) -> None:
    """teacher_hold_unvaried: layers were the same in every successful run: held."""
    import pyarrow as pa

    from jpo.sim.response import load_conditions, load_profile, simulate_run

    p = load_profile("mnist-lenet")
    d = p.defaults
    runs = [
        simulate_run(
            p,
            Hyperparameters(batch, d.learning_rate * batch / d.batch_size, d.num_layers, epochs),
            load_conditions(),
            rng=np.random.default_rng(i),
            run_id=f"r{i}",
            start=1.7e9 + 86400.0 * i,
        )
        for i, (batch, epochs) in enumerate(((d.batch_size, d.epochs), (2 * d.batch_size, 3)))
    ]
    table = pa.concat_tables([r.table for r in runs])
    config = {"source": "table", "table": table, "calibrate": False, "split": "all"}
    shipped = ("learning_rate", "epochs")
    assert PrometheusReplayEnv(config).teacher_hold("mnist-lenet") == shipped
    cache = str(tmp_path / "oracles.json")
    u = {**config, "teacher_hold_unvaried": True, "teacher": True, "teacher_cache": cache}
    env = PrometheusReplayEnv(u)
    assert env.teacher_hold("mnist-lenet") == (*shipped, "num_layers")
    _, info = env.reset(seed=0, options={"workload": "mnist-lenet", "start": 0})
    layers = env.constraints.tunable.index("num_layers")
    assert info["teacher_action"][layers] == 0.0
    # the catalog's own simulated history is not recorded evidence: nothing more is held
    catalog = PrometheusReplayEnv({"workloads": ["mnist-lenet"], "teacher_hold_unvaried": True})
    assert catalog.teacher_hold("mnist-lenet") == shipped
