"""Domain randomization (jpo.sim.randomization) and its use by the replay env."""

import math
from dataclasses import replace
from pathlib import Path

import pytest

from jpo.errors import ConfigError
from jpo.sim.oracle import reference_config
from jpo.sim.randomization import input_bound_cpu_s_per_sample, load_randomization, random_profiles
from jpo.sim.replay_env import PrometheusReplayEnv, load_env_config
from jpo.sim.response import _steady, load_catalog, load_conditions
from jpo.workload.constraints import load_constraints


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def drawn(catalog):
    return random_profiles(catalog, 40, conditions=load_conditions())


def test_profiles_are_reproducible_and_prefix_stable(catalog, drawn) -> None:
    again = random_profiles(catalog, 10, conditions=load_conditions())
    assert again == drawn[:10]
    assert len({p.name for p in drawn}) == len(drawn)
    assert len({p.key for p in drawn}) == len(drawn)


def test_profiles_are_training_profiles_around_the_training_split_only(catalog, drawn) -> None:
    train = {n for n, p in catalog.items() if p.split == "train"}
    frameworks = {catalog[n].framework for n in train}
    for p in drawn:
        assert p.split == "train"
        assert p.name.startswith("rand-")
        base = p.source.rsplit("<-", 1)[1]
        assert base in train  # never a held-out profile
        assert p.framework in frameworks
        assert p.limits == catalog[base].limits


def test_defaults_fit_the_constraints_and_the_reference_trains(drawn) -> None:
    constraints = load_constraints()
    s = load_randomization()
    cond = load_conditions()
    for p in drawn:
        assert not constraints.violations(p.defaults)
        _hp, ref = reference_config(p, cond)
        assert ref.failure == "none"
        assert s.min_default_hours <= ref.duration_s / 3600 <= s.max_default_hours


def test_a_share_is_input_pipeline_bound(drawn) -> None:
    bound = 0
    for p in drawn:
        d = p.defaults
        t_step = _steady(p, d.batch_size, d.num_layers, 0.0, 0.0)[3]
        cores = p.limits.cpu_cores - p.trainer_cpu_cores
        t_cpu = d.batch_size * p.cpu_s_per_sample / cores
        bound += t_cpu >= t_step * (1 - 1e-9)
    # configs/randomization.toml: input_bound_share = 0.35 of 40 draws (binomial)
    assert 5 <= bound <= 30


def test_balance_point_is_where_the_input_pipeline_takes_the_gpus_step_time(catalog) -> None:
    for p in catalog.values():
        d = p.defaults
        t_gpu = _steady(replace(p, cpu_s_per_sample=0.0), d.batch_size, d.num_layers, 0.0, 0.0)[3]
        for ratio in (0.5, 1.0, 2.5):
            cpu_s = input_bound_cpu_s_per_sample(p.as_toml_dict(), ratio)
            bound = replace(p, cpu_s_per_sample=cpu_s)
            t_step = _steady(bound, d.batch_size, d.num_layers, 0.0, 0.0)[3]
            assert t_step == pytest.approx(max(ratio, 1.0) * t_gpu, rel=1e-9)


def test_bad_settings_are_named(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    text = Path("configs/randomization.toml").read_text(encoding="utf-8")
    path.write_text(text.replace("batch_size = 4.0", "batch_size = 0.5"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[spread.defaults\] batch_size must be >= 1"):
        load_randomization(path)
    path.write_text(text + "\n[spread.nonsense]\nx = 2.0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown section"):
        load_randomization(path)
    path.write_text(text + "\n[spread.limits]\ngpu_model = 2.0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key 'gpu_model'"):
        load_randomization(path)


def test_env_replays_catalog_and_synthetic_profiles() -> None:
    env = PrometheusReplayEnv({"randomized_profiles": 3, "episode_length": 2})
    names = env.workloads
    assert len(names) == 11 + 3
    assert names[-3:] == ("rand-00000", "rand-00001", "rand-00002")
    obs, _info = env.reset(seed=0, options={"workload": "rand-00001"})
    assert env.observation_space.contains(obs)
    _obs, reward, *_ = env.step(env.action_space.sample())
    assert math.isfinite(reward)


def test_env_replays_only_the_synthetic_draws_of_its_own_seed() -> None:
    """catalog_profiles = false + randomization_seed: a set of fresh draws (a validation set)."""
    base = {"randomized_profiles": 2, "episode_length": 2, "catalog_profiles": False}
    default = PrometheusReplayEnv(base)
    other = PrometheusReplayEnv({**base, "randomization_seed": 777001})
    assert default.workloads == other.workloads == ("rand-00000", "rand-00001")
    reseeded = load_randomization(seed=777001)
    assert reseeded == replace(load_randomization(), seed=777001)  # only the seed differs
    expected = random_profiles(load_catalog(), 2, settings=reseeded, conditions=load_conditions())
    assert [p.key for p in other.profiles] == [p.key for p in expected]
    assert [p.key for p in other.profiles] != [p.key for p in default.profiles]
    other.reset(seed=0)
    _obs, reward, *_ = other.step(other.action_space.sample())
    assert math.isfinite(reward)


def test_env_rejects_randomization_outside_the_training_catalog() -> None:
    with pytest.raises(ConfigError, match="randomized_profiles"):
        load_env_config({"randomized_profiles": 2, "split": "holdout"})
    with pytest.raises(ConfigError, match="randomized_profiles"):
        load_env_config({"randomized_profiles": -1})
    with pytest.raises(ConfigError, match="catalog_profiles = false"):
        load_env_config({"catalog_profiles": False})  # nothing left to replay
    with pytest.raises(ConfigError, match="randomization_seed = -2"):
        load_env_config({"randomized_profiles": 2, "randomization_seed": -2})


def test_catalog_reward_references_are_the_oracles(catalog) -> None:
    """The env's ρ_ref / G_ref on the catalog source are the oracle's reference run's."""
    from jpo.learning.reward import per_gpu_throughput

    env = PrometheusReplayEnv({"workloads": ["higgs-mlp"], "split": "all"})
    w = env._replays[0]
    _hp, ref = reference_config(catalog["higgs-mlp"], load_conditions())
    assert w.reference_gpu_hours == pytest.approx(ref.gpu_hours)
    assert w.reference_throughput == pytest.approx(per_gpu_throughput(ref))


def test_pod_limits_move_only_when_named(catalog) -> None:
    """[spread.limits] randomizes pod limits (GPUs as powers of two); without it they stay."""
    bases = {(p.limits.gpus, p.limits.memory_bytes) for p in catalog.values() if p.split == "train"}
    plain = random_profiles(catalog, 30)
    assert {(p.limits.gpus, p.limits.memory_bytes) for p in plain} <= bases
    box = load_randomization("research/train/recipes/randomization-box.toml")
    drawn = random_profiles(catalog, 30, settings=box)
    gpus = {p.limits.gpus for p in drawn}
    assert gpus <= {1, 2, 4, 8, 16} and len(gpus) > 1
    assert {(p.limits.gpus, p.limits.memory_bytes) for p in drawn} - bases
