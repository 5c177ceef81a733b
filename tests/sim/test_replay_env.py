"""The replay env: Gymnasium API, seeding, action mapping, rewards, bad configs."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pyarrow as pa
import pytest
from gymnasium.utils.env_checker import check_env

import jpo.sim  # noqa: F401  (registers jpo/PrometheusReplay-v0)
from jpo.errors import ConfigError
from jpo.learning.features import OBSERVATION_NAMES
from jpo.learning.reward import compute_reward
from jpo.sim.replay_env import ENV_ID, PrometheusReplayEnv, load_env_config
from jpo.sim.simulator import generate_runs
from jpo.telemetry.history import append_history
from jpo.telemetry.schema import HISTORY_SCHEMA

SMALL = {
    "workloads": ["cifar10-resnet18", "mnist-lenet"],
    "catalog": {"runs_per_workload": 6},
    "episode_length": 4,
}


@pytest.fixture(scope="module")
def env() -> PrometheusReplayEnv:
    return PrometheusReplayEnv(SMALL)


def rollout(e: gym.Env, seed: int, steps: int) -> list[tuple]:
    obs, info = e.reset(seed=seed)
    e.action_space.seed(seed)
    out = [(obs.tolist(), info["workload"], info["run_id"])]
    for _ in range(steps):
        obs, r, term, trunc, info = e.step(e.action_space.sample())
        out.append((obs.tolist(), r, term, trunc, info["hyperparameters"]))
        if term or trunc:
            obs, info = e.reset()
            out.append((obs.tolist(), info["workload"], info["run_id"]))
    return out


def test_check_env_without_warnings() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        made = gym.make(ENV_ID, config=SMALL)
        check_env(made.unwrapped)
        made.close()
    assert [str(w.message) for w in caught] == []


def test_registered_id_makes_the_env() -> None:
    e = gym.make(ENV_ID, config=SMALL)
    assert isinstance(e.unwrapped, PrometheusReplayEnv)
    assert e.spec is not None and e.spec.id == ENV_ID
    obs, _ = e.reset(seed=0)
    assert obs.shape == (len(OBSERVATION_NAMES),)
    e.close()


def test_config_keys_as_keyword_arguments() -> None:
    e = gym.make(
        ENV_ID, workloads=["mnist-lenet"], episode_length=2, catalog={"runs_per_workload": 3}
    )
    assert e.unwrapped.workloads == ("mnist-lenet",)
    assert e.unwrapped.config.episode_length == 2
    e.close()


def test_step_info_can_be_turned_off() -> None:
    full = PrometheusReplayEnv(SMALL)
    bare = PrometheusReplayEnv({**SMALL, "step_info": False})
    o1, i1 = full.reset(seed=2)
    o2, i2 = bare.reset(seed=2)
    assert i2 == {} and "workload" in i1
    np.testing.assert_array_equal(o1, o2)
    a = np.full(4, 0.5, dtype=np.float32)
    s1, s2 = full.step(a), bare.step(a)
    assert s2[4] == {} and s1[1] == s2[1]
    np.testing.assert_array_equal(s1[0], s2[0])


def test_spaces(env: PrometheusReplayEnv) -> None:
    assert env.action_space.shape == (4,)
    assert float(env.action_space.low.min()) == -1.0 and float(env.action_space.high.max()) == 1.0
    assert env.observation_space.shape == (len(OBSERVATION_NAMES),)
    assert env.observation_space.dtype == np.float32


def test_seeding_reproduces_episodes() -> None:
    a = rollout(PrometheusReplayEnv(SMALL), seed=7, steps=10)
    b = rollout(PrometheusReplayEnv(SMALL), seed=7, steps=10)
    c = rollout(PrometheusReplayEnv(SMALL), seed=8, steps=10)
    assert a == b
    assert a != c


def test_observations_stay_in_space_and_rewards_bounded() -> None:
    e = PrometheusReplayEnv({"split": "all", "catalog": {"runs_per_workload": 4}})
    e.reset(seed=11)
    e.action_space.seed(11)
    for _ in range(2000):
        obs, r, term, trunc, _ = e.step(e.action_space.sample())
        assert e.observation_space.contains(obs), dict(zip(OBSERVATION_NAMES, obs, strict=True))
        assert -5.0 <= r <= 3.5
        if term or trunc:
            e.reset()


def test_noise_is_seeded_not_absent() -> None:
    """Same action from the same state, different seeds: different (noisy) outcomes."""
    results = set()
    for seed in range(3):
        e = PrometheusReplayEnv(SMALL)
        e.reset(seed=seed, options={"workload": "cifar10-resnet18", "start": 0})
        obs, *_ = e.step(np.zeros(4, dtype=np.float32))
        results.add(tuple(obs.tolist()))
    assert len(results) == 3


def test_truncates_after_episode_length() -> None:
    for length in (1, 3):
        e = PrometheusReplayEnv({**SMALL, "episode_length": length})
        e.reset(seed=0)
        flags = []
        for _ in range(length):
            _, _, term, trunc, _ = e.step(np.zeros(4, dtype=np.float32))
            flags.append((term, trunc))
        assert flags == [(False, False)] * (length - 1) + [(False, True)]


def test_step_before_reset_fails() -> None:
    with pytest.raises(gym.error.ResetNeeded):
        PrometheusReplayEnv(SMALL).step(np.zeros(4, dtype=np.float32))


def test_zero_action_keeps_hyperparameters_and_replays_recording(env) -> None:
    _, info = env.reset(seed=0, options={"workload": "cifar10-resnet18", "start": 2})
    start_hp = info["hyperparameters"]
    _, _, _, _, info = env.step(np.zeros(4, dtype=np.float32))
    assert info["hyperparameters"] == start_hp
    assert info["run_id"] == env._replays[env._names["cifar10-resnet18"]].recordings[3].run_id


def test_counterfactual_at_recorded_hp_reproduces_the_recording() -> None:
    e = PrometheusReplayEnv({**SMALL, "noise": 0.0, "residual_clip": 10.0})
    e.reset(seed=0, options={"workload": "cifar10-resnet18", "start": 0})
    for rec in e._w.recordings:
        if rec.summary.failure != "none":
            continue
        cf = e._counterfactual(rec, rec.hp)
        assert cf.throughput == pytest.approx(rec.summary.throughput, rel=1e-6)
        assert cf.gpu_util_mean == pytest.approx(rec.summary.gpu_util_mean, rel=1e-6)
        assert cf.final_val_loss == pytest.approx(rec.summary.final_val_loss, rel=1e-6)


def test_action_respects_trust_region(env) -> None:
    _, info = env.reset(seed=0, options={"workload": "cifar10-resnet18", "start": 0})
    hp0 = info["hyperparameters"]
    _, _, _, _, info = env.step(np.array([1.0, -1.0, 0.0, 0.0], dtype=np.float32))
    hp1 = info["hyperparameters"]
    assert hp1.batch_size == min(2 * hp0.batch_size, 4096)  # trust region x2
    third = max(hp0.learning_rate / 3.0, 1e-4)  # /3
    # humane values (configs/constraints.toml: significant_digits = 3): rounded towards the
    # current value, never past the step, at 3 significant digits
    assert third <= hp1.learning_rate < third * 1.01
    assert float(f"{hp1.learning_rate:.3g}") == hp1.learning_rate
    assert (hp1.num_layers, hp1.epochs) == (hp0.num_layers, hp0.epochs)


def test_frozen_parameters_are_honored() -> None:
    e = PrometheusReplayEnv({**SMALL, "tunable": ["batch_size", "learning_rate"]})
    assert e.action_space.shape == (2,)
    _, info = e.reset(seed=3)
    layers, epochs = info["hyperparameters"].num_layers, info["hyperparameters"].epochs
    e.action_space.seed(3)
    for _ in range(3):
        _, _, _, _, info = e.step(np.ones(2, dtype=np.float32))
        assert (info["hyperparameters"].num_layers, info["hyperparameters"].epochs) == (
            layers,
            epochs,
        )


def test_reward_is_compute_reward_of_the_run(env) -> None:
    _, info0 = env.reset(seed=5, options={"workload": "mnist-lenet", "start": 1})
    w = env._w
    _, r, _, _, info = env.step(np.full(4, 0.3, dtype=np.float32))
    expected = compute_reward(
        info["summary"],
        info0["summary"],
        w.context.best_val_loss,
        env._weights,
        reference_throughput=w.reference_throughput,
        reference_gpu_hours=w.reference_gpu_hours,
    )
    assert r == expected.total == info["reward"].total


def test_oom_is_penalized_and_rolled_back() -> None:
    e = PrometheusReplayEnv({**SMALL, "workloads": ["cifar100-vit"], "episode_length": 20})
    w = e._replays[0]
    start = next(i for i, r in enumerate(w.recordings) if r.summary.failure == "none")
    _, info = e.reset(seed=0, options={"start": start})
    good = info["hyperparameters"]
    for _ in range(12):  # double the batch until it no longer fits
        obs, r, _, _, info = e.step(np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32))
        if info["summary"].failure == "oom":
            break
        good = info["hyperparameters"]
    assert info["summary"].failure == "oom"
    assert r == -5.0
    assert info["rolled_back"]
    o = dict(zip(OBSERVATION_NAMES, obs.tolist(), strict=True))
    assert o["failed_oom"] == 1.0
    assert e._hp == good  # the next suggestion starts from the last good config
    _, _, _, _, info = e.step(np.zeros(4, dtype=np.float32))
    assert info["hyperparameters"] == good


def test_reset_options_validate_workload(env) -> None:
    with pytest.raises(ConfigError, match="not replayed"):
        env.reset(seed=0, options={"workload": "nope"})


# ----------------------------------------------------------------------- sources


def small_history(workloads=("cifar10-resnet18",), runs: int = 4) -> pa.Table:
    sim = generate_runs(list(workloads), runs, seed=1, start=1.7e9)
    return pa.concat_tables([r.table for r in sim])


def test_table_source_without_calibration() -> None:
    e = gym.make(ENV_ID, config={"source": "table", "table": small_history(), "calibrate": False})
    assert e.unwrapped.workloads == ("cifar10-resnet18",)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(e.unwrapped)
    assert [str(w.message) for w in caught] == []


def test_parquet_source(tmp_path) -> None:
    append_history(tmp_path, small_history(("cifar10-resnet18", "mnist-lenet"), runs=3))
    e = PrometheusReplayEnv(
        {"source": "parquet", "history_path": str(tmp_path), "calibrate": False, "split": "all"}
    )
    assert set(e.workloads) == {"cifar10-resnet18", "mnist-lenet"}
    for name in e.workloads:
        assert len(e._replays[e._names[name]].recordings) == 3
    e.reset(seed=0)
    e.step(np.zeros(4, dtype=np.float32))


def test_table_source_with_calibration() -> None:
    from jpo.sim.response import load_profile

    e = PrometheusReplayEnv({"source": "table", "table": small_history(runs=6)})
    fitted = e._replays[0].profile
    assert fitted.key == load_profile("cifar10-resnet18").key
    e.reset(seed=0)
    _, r, *_ = e.step(np.zeros(4, dtype=np.float32))
    assert math.isfinite(r)


def test_unknown_history_workload_needs_calibration() -> None:
    table = small_history(runs=3)
    renamed = table.set_column(
        table.schema.get_field_index("model"),
        "model",
        pa.array(["my-own-net"] * table.num_rows, pa.string()),
    )
    with pytest.raises(ConfigError, match="no catalog profile"):
        PrometheusReplayEnv({"source": "table", "table": renamed, "calibrate": False})
    e = PrometheusReplayEnv({"source": "table", "table": renamed, "split": "all"})
    assert e.workloads == ("cifar10.my-own-net.pytorch",)
    e.reset(seed=0)
    e.step(np.zeros(4, dtype=np.float32))


# ----------------------------------------------------------------------- bad configs


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"episode_length": 0}, "episode_length = 0"),
        ({"episode_length": -3}, "episode_length = -3"),
        ({"episode_length": 2.5}, "must be an integer"),
        ({"workloads": ["no-such-workload"]}, "unknown workload 'no-such-workload'"),
        ({"workloads": "cifar10-resnet18"}, "list of strings"),
        ({"source": "prometheus"}, "source = 'prometheus'"),
        ({"source": "parquet"}, "needs history_path"),
        ({"source": "parquet", "history_path": "/nonexistent/h"}, "does not exist"),
        ({"source": "table"}, "needs key 'table'"),
        ({"source": "table", "table": "rows"}, "pyarrow.Table"),
        ({"episode_lenght": 4}, "unknown env config key 'episode_lenght'"),
        ({"split": "test"}, "split = 'test'"),
        ({"tunable": ["momentum"]}, "unknown hyperparameter"),
        ({"noise": -0.1}, "noise"),
        ({"reward_weights_path": "/nonexistent/r.toml"}, "not found"),
        ({"catalog": {"runs_per_workload": 0}}, "runs_per_workload"),
        ({"catalog": {"max_samples_per_run": -1}}, "max_samples_per_run"),
    ],
)
def test_bad_config_fails_at_construction(config: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        PrometheusReplayEnv(config)
    assert needle in str(info.value)


def test_empty_history_fails_at_construction(tmp_path) -> None:
    with pytest.raises(ConfigError, match="empty"):
        PrometheusReplayEnv({"source": "table", "table": HISTORY_SCHEMA.empty_table()})
    with pytest.raises(ConfigError, match=r"empty|no workload"):
        PrometheusReplayEnv({"source": "parquet", "history_path": str(tmp_path)})


def test_unknown_workload_in_history_fails() -> None:
    with pytest.raises(ConfigError, match="not in the history"):
        PrometheusReplayEnv(
            {"source": "table", "table": small_history(), "workloads": ["mnist-lenet"]}
        )


def test_unreplayable_run_names_the_run() -> None:
    table = small_history(runs=2)
    import pyarrow.compute as pc

    table = table.filter(pc.not_equal(table["metric"], "gpu_util"))
    with pytest.raises(ConfigError, match=r"run 'sim1-0000'.*gpu_util"):
        PrometheusReplayEnv({"source": "table", "table": table, "calibrate": False})


def test_config_file_defaults_load() -> None:
    cfg = load_env_config()
    assert cfg.source == "catalog" and cfg.episode_length >= 1
    assert load_env_config({"episode_length": 1}).episode_length == 1


# ----------------------------------------------------------------------- real Prometheus


@pytest.mark.slow
def test_env_replays_history_pulled_from_real_prometheus(tmp_path, prometheus_factory) -> None:
    """Simulator OpenMetrics -> promtool backfill -> real Prometheus -> history pull
    (PrometheusSource.history, batched range queries) -> Parquet store -> env episodes."""
    import time

    from jpo.sim.simulator import generate_history
    from jpo.telemetry.sources import PrometheusSource

    end = math.floor(time.time() / 15) * 15 - 600
    om = tmp_path / "history.om"
    workloads = ["cifar10-resnet18", "mnist-lenet"]
    result = generate_history(workloads, 4, tmp_path / "sim", openmetrics=om, seed=4, end=end)
    prom = prometheus_factory(openmetrics=[om.read_text()])
    source = PrometheusSource.from_url(prom.url)
    first = min(float(r.times_s[0]) for r in result.runs)
    pulled = source.history(first - 60, end + 60, 15)
    store = tmp_path / "pulled"
    append_history(store, pulled)

    e = gym.make(
        ENV_ID,
        config={
            "source": "parquet",
            "history_path": str(store),
            "calibrate": True,  # fit each workload's profile to the pulled runs
            "split": "all",
            "episode_length": 3,
        },
    )
    replay = e.unwrapped
    assert set(replay.workloads) == set(workloads)
    for name in workloads:
        recorded = {r.run_id for r in replay._replays[replay._names[name]].recordings}
        assert recorded == {r.run_id for r in result.runs if r.profile.name == name}
    e.action_space.seed(0)
    episodes = 0
    obs, _ = e.reset(seed=0)
    for _ in range(12):
        obs, r, term, trunc, _ = e.step(e.action_space.sample())
        assert e.observation_space.contains(obs)
        assert math.isfinite(r)
        if term or trunc:
            episodes += 1
            obs, _ = e.reset()
    assert episodes == 4
    e.close()


def test_workload_whose_recorded_runs_all_failed() -> None:
    """No successful recording: baseline from the model at a batch that fits, best = inf."""
    from jpo.sim.response import load_conditions, load_profile, simulate_run

    profile = load_profile("squad-bert-large")  # its defaults run out of GPU memory
    rng = np.random.default_rng(0)
    runs = [
        simulate_run(
            profile,
            profile.defaults,
            load_conditions(),
            rng=rng,
            run_id=f"r{i}",
            start=1.7e9 + 3600 * i,
        )
        for i in range(3)
    ]
    assert {r.summary.failure for r in runs} == {"oom"}
    e = PrometheusReplayEnv(
        {"source": "table", "table": pa.concat_tables([r.table for r in runs]), "calibrate": False}
    )
    w = e._replays[0]
    assert w.context.best_val_loss == math.inf
    assert w.reference_throughput > 0 and w.reference_gpu_hours > 0
    obs, _ = e.reset(seed=0)
    assert e.observation_space.contains(obs)
    obs, r, *_ = e.step(np.array([-1.0, 0.0, 0.0, 0.0], dtype=np.float32))
    assert e.observation_space.contains(obs) and math.isfinite(r)


def test_catalog_workload_whose_recordings_all_fail_even_at_batch_one() -> None:
    """With a successful reference run (catalog source), the reference stands in for the
    baseline instead of the model at the recording's settings, which cannot fit at all
    (a randomized profile drew such a history at randomized_profiles = 1000)."""
    from dataclasses import replace

    from jpo.sim.oracle import reference_config
    from jpo.sim.replay_env import _build_workload
    from jpo.sim.response import load_conditions, load_profile, simulate_run

    profile = load_profile("squad-bert-large")
    cond = load_conditions()
    deep = replace(profile.defaults, num_layers=20 * profile.defaults.num_layers)
    rng = np.random.default_rng(0)
    runs = [
        simulate_run(profile, deep, cond, rng=rng, run_id=f"r{i}", start=1.7e9 + 3600 * i)
        for i in range(2)
    ]
    assert {r.summary.failure for r in runs} == {"oom"}
    with pytest.raises(ConfigError, match="even batch size 1"):
        _build_workload("deep", profile, [(r.run_id, deep, r.summary) for r in runs], cond, 1.5)
    reference = reference_config(profile, cond)[1]
    w = _build_workload(
        "deep", profile, [(r.run_id, deep, r.summary) for r in runs], cond, 1.5, reference
    )
    assert w.context.best_val_loss == math.inf
    assert w.context.baseline_throughput == reference.throughput
    assert w.reference_gpu_hours == reference.gpu_hours


def test_a_degraded_run_is_kept_and_scores_the_next_one() -> None:
    """A run whose val loss worsened beyond CI's rollback tolerance is not rolled back (the
    env rolls back failed runs only; the opt-in rollback_on_degraded, measured as no gain,
    is gone), and the next run is scored against it."""
    from jpo.stage.suggest import load_suggest_settings

    name = "cifar10-resnet18"
    e = PrometheusReplayEnv({"episode_length": 4, "noise": 0.0, "workloads": [name]})
    e.reset(seed=0, options={"workload": name, "start": 0})
    start_hp, start_run = e._hp, e._prev
    shrink = np.array([0.0, 0.0, -1.0, -1.0], dtype=np.float32)  # fewer layers and epochs
    _, _, _, _, info = e.step(shrink)
    tolerance = load_suggest_settings().rollback.val_loss_tolerance
    assert info["summary"].final_val_loss > start_run.final_val_loss * (1.0 + tolerance)
    assert info["summary"].failure == "none"
    assert info["rolled_back"] is False
    assert e._hp != start_hp
    degraded_run, best = info["summary"], e._ctx.best_val_loss
    _, _, _, _, info = e.step(np.zeros(4, dtype=np.float32))
    expected = compute_reward(
        info["summary"],
        degraded_run,
        best,
        e._weights,
        reference_throughput=e._w.reference_throughput,
        reference_gpu_hours=e._w.reference_gpu_hours,
    )
    assert info["reward"].total == pytest.approx(expected.total)
    with pytest.raises(ConfigError, match="rollback_on_degraded"):
        PrometheusReplayEnv({"rollback_on_degraded": True})


def test_observation_context_is_the_ci_stages() -> None:
    """Each observation uses jpo.learning.features.context_from_runs over the campaign's runs, as
    `jpo suggest` does over the runs its earlier suggestions were based on."""
    from jpo.learning.features import build_observation, context_from_runs
    from jpo.workload.constraints import load_constraints

    env = PrometheusReplayEnv({"episode_length": 5, "noise": 0.0})
    norm = load_constraints()
    obs, info = env.reset(seed=3)
    fw = env._w.profile.framework
    i_thr = OBSERVATION_NAMES.index("throughput_rel")
    i_val = OBSERVATION_NAMES.index("val_loss_rel")
    if info["summary"].throughput > 0:
        assert obs[i_thr] == pytest.approx(1.0)  # the campaign's first run is its baseline
    assert obs[i_val] == 0.0
    seen = [info["summary"]]
    rng = np.random.default_rng(0)
    for _ in range(5):
        obs, _r, _term, _trunc, info = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
        run = info["summary"]
        expected = build_observation(run, env._hp, norm, context_from_runs(run, seen, framework=fw))
        np.testing.assert_array_equal(obs, expected)
        seen.append(run)


def test_building_replays_logs_progress_of_each_step(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Both long steps (simulating the history, replaying each run) say how far they are."""
    from jpo.sim import progress, replay_env

    monkeypatch.setattr(progress, "PROGRESS_EVERY_S", 0.0)  # a line per workload
    with caplog.at_level("INFO", logger="jpo.sim.replay_env"):
        replays = replay_env._build_replays(load_env_config(SMALL))
    lines = [r.getMessage() for r in caplog.records]
    assert len(replays) == 2
    for what in ("simulating history: workloads", "building replays: workloads"):
        steps = [ln.removeprefix(what).split(" (")[0] for ln in lines if ln.startswith(what)]
        assert steps == [" 1/2", " 2/2"], lines
