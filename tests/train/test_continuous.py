"""Continuous learning: history refresh, degraded runs, evaluation, promote-if-not-worse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

import jpo.train.continuous as continuous
from jpo.errors import ConfigError
from jpo.telemetry.sources import MetricSource
from jpo.train.continuous import (
    ContinuousConfig,
    _degraded_runs,
    evaluate_policy,
    load_continuous_config,
)
from jpo.workload.types import Hyperparameters, WorkloadKey

WORKLOADS = ("cifar10-resnet18", "higgs-mlp")  # one of the train split, one held out


def _bundled_version() -> int:
    """The bundled policy's version: what is served before any promotion."""
    from jpo.paths import BUNDLED_POLICY_DIR
    from jpo.policy.artifact import LocalPolicy

    return LocalPolicy.load(BUNDLED_POLICY_DIR).version


class FakePrometheus(MetricSource):
    """Simulated runs served as if Prometheus had scraped them."""

    def __init__(self, runs_per_workload: int = 5) -> None:
        from jpo.sim.simulator import generate_runs

        self.runs = generate_runs(list(WORKLOADS), runs_per_workload, seed=7)
        self.history_calls = 0
        self.fetched: list[str] = []

    def _key(self, run) -> WorkloadKey:
        p = run.profile
        return WorkloadKey(p.dataset, p.model, p.framework)

    def list_runs(self, key: WorkloadKey) -> list[str]:
        return [r.run_id for r in self.runs if self._key(r) == key]

    def run_table(self, key, run_id=None, *, lookback=None) -> pa.Table:
        self.fetched.append(str(run_id))
        return next(r.table for r in self.runs if self._key(r) == key and r.run_id == run_id)

    def history(self, start, end, step) -> pa.Table:
        self.history_calls += 1
        # The last run of each workload is "not scraped yet" (only fetched by run id).
        keep = [r for r in self.runs if not r.run_id.endswith("0004")]
        return pa.concat_tables([r.table for r in keep])


class CountingEnv:
    """Reward = first action entry; 3 steps per episode; obs depends on the seed."""

    def reset(self, *, seed=None):
        self.t = 0
        self.seed = seed
        return np.full(2, float(seed), dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(2, np.float32), float(action[0]), False, self.t >= 3, {}

    def close(self):
        pass


def test_evaluate_policy_is_deterministic_mean_return() -> None:
    seen = []

    def act(obs: np.ndarray) -> np.ndarray:
        seen.append(float(obs[0]))
        return np.array([0.5])

    ret = evaluate_policy(act, CountingEnv, episodes=4, seed=10)
    assert ret == pytest.approx(1.5)
    assert [s for s in seen if s] == [10.0, 11.0, 12.0, 13.0]


def test_continuous_section_is_validated() -> None:
    from jpo.train.trainer import TrainConfig

    cfg = TrainConfig(continuous={"budget_iterations": 0, "nonsense": 1})
    with pytest.raises(ConfigError) as err:
        load_continuous_config(cfg)
    assert "continuous.budget_iterations" in str(err.value)
    assert "continuous.nonsense" in str(err.value)


def _degraded_record(audit: Path, source: FakePrometheus, run_id: str) -> None:
    from jpo.stage.audit import AuditRecord, append_record

    run = next(r for r in source.runs if r.run_id == run_id)
    hp = Hyperparameters(batch_size=64, learning_rate=0.01, num_layers=18, epochs=10)
    record = AuditRecord.for_change(
        source._key(run),
        hp,
        hp,
        "policy",
        outcome={"run_id": run_id, "degraded": True, "reward": -3.0},
    )
    append_record(audit, record)


def test_degraded_runs_missing_from_history_are_fetched(tmp_path: Path) -> None:
    from jpo.telemetry.history import append_history, read_history

    source = FakePrometheus()
    conf = ContinuousConfig(
        history_path=str(tmp_path / "history"), audit_log=str(tmp_path / "audit.jsonl")
    )
    append_history(conf.history_path, source.history(0, 1, 15))
    _degraded_record(Path(conf.audit_log), source, "sim7-0004")  # not in the store
    _degraded_record(Path(conf.audit_log), source, "sim7-0001")  # already there
    assert _degraded_runs(conf, source) == (2, 1)
    assert source.fetched == ["sim7-0004"]
    runs = set(read_history(conf.history_path).column("run_id").to_pylist())
    assert "sim7-0004" in runs
    assert _degraded_runs(conf, source) == (2, 0)  # idempotent


NO_FORGETTING = {
    "randomized_profiles": 2,
    "randomization_seed": 777001,
    "catalog_profiles": False,
    "catalog_max_samples_per_run": 2000,
}
"""configs/train.yaml's no-forgetting set (the validation set's draws), 2 profiles of its 24."""


def _config(tmp_path: Path, *, teacher: bool = False) -> Path:
    env_config: dict[str, object] = {"source": "catalog", "split": "train", "episode_length": 4}
    sac: dict[str, object] = {
        "train_batch_size_per_learner": 32,
        "num_steps_sampled_before_learning_starts": 50,
        "replay_buffer": {"capacity": 2000},
    }
    if teacher:  # configs/train.yaml's recipe: SAC + the oracle teacher's BC term
        env_config.update(teacher=True, teacher_cache=str(tmp_path / "oracles.json"))
        sac["bc_weight"] = 1.0
    cfg = {
        "seed": 2,
        "env": {
            "id": "jpo/PrometheusReplay-v0",
            "register_module": "jpo.sim",
            "config": env_config,
            "eval_config": NO_FORGETTING,
        },
        "model": {"fcnet_hiddens": [16, 16]},
        "sac": sac,
        "resources": {"ray_num_cpus": 2, "object_store_memory_mb": 200, "torch_threads": 1},
        "storage": {"path": str(tmp_path / "store"), "checkpoint_every": 5},
        "reporting": {"min_sample_timesteps_per_iteration": 100, "progress_bar": False},
        "continuous": {
            "history_path": str(tmp_path / "history"),
            "audit_log": str(tmp_path / "audit.jsonl"),
            "budget_iterations": 1,
            "eval_episodes": 3,
            "policy_dir": str(tmp_path / "policies"),
            "interval_s": 0,
            "env_overrides_with_history": {"source": "parquet", "calibrate": False},
        },
    }
    path = tmp_path / "continuous.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_promotion_rule_uses_the_paired_noise_margin() -> None:
    conf = ContinuousConfig(tolerance=0.01, noise_z=1.0)
    served = [1.0, 2.0, 3.0, 4.0]
    # differences -0.1, -0.3, 0.1, -0.1: mean -0.1, SE 0.0816 -> margin 0.0816: worse
    worse = continuous.compare([0.9, 1.7, 3.1, 3.9], served, conf)
    assert worse.mean_difference == pytest.approx(-0.1)
    assert worse.standard_error == pytest.approx(0.08165, rel=1e-3)
    assert worse.margin == pytest.approx(worse.standard_error)
    assert not worse.not_worse
    # a uniform shortfall smaller than the tolerance (SE 0): not worse
    assert continuous.compare([0.995, 1.995, 2.995, 3.995], served, conf).not_worse
    assert continuous.compare([0.98, 1.98, 2.98, 3.98], served, conf).not_worse is False
    first = continuous.compare([0.5, 0.5], None, conf)  # nothing served: promote
    assert first.not_worse and first.served is None


def test_the_no_forgetting_set_is_the_validation_set_not_a_test_set() -> None:
    """A promotion is a choice: it reads configs/evaluate.toml's validation draws, no test set."""
    from jpo.evaluation.evaluate import load_evaluation_settings
    from jpo.sim.replay_env import PrometheusReplayEnv, load_env_config
    from jpo.train.trainer import load_train_config

    cfg = load_train_config()
    overrides = {**cfg.env.config, **cfg.env.eval_config, "teacher": False}
    check = load_env_config(overrides)
    validation = load_evaluation_settings().sets["validation"]
    assert validation["role"] == "validation" and validation["source"] == "randomized"
    assert (check.randomized_profiles, check.randomization_seed) == (
        validation["count"],
        validation["seed"],
    )
    assert not check.catalog_profiles  # only the synthetic draws: no catalog split at all
    env = PrometheusReplayEnv(overrides)
    assert len(env.profiles) == validation["count"]
    assert all(p.split == "train" for p in env.profiles)  # drawn around the training split
    # the 48-hour synthetic runs are thinned; the policy was trained on every scrape
    assert load_env_config(cfg.env.config).catalog_max_samples_per_run == 0
    assert 0 < check.catalog_max_samples_per_run <= 5000


@pytest.mark.slow
def test_two_cycles_promote_then_refuse_a_worse_candidate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both policies play the same episodes; versions continue from the bundled one."""
    from jpo.policy.artifact import LocalPolicy
    from jpo.train.trainer import load_train_config

    cfg = load_train_config(_config(tmp_path))
    bundled = _bundled_version()
    source = FakePrometheus()
    _degraded_record(tmp_path / "audit.jsonl", source, "sim7-0004")

    real = continuous.episode_returns
    seeds: list[tuple[str, int]] = []
    bonus = {"candidate": 100.0}  # cycle 1: the candidate scores 100 more per episode

    def rigged(act, make_env, *, episodes, seed):
        values = real(act, make_env, episodes=episodes, seed=seed)
        # the candidate is exported to a temporary folder, the served policy is not
        who = "candidate" if "jpo-candidate-" in str(act.__self__.path) else "served"
        seeds.append((who, seed))
        return [v + bonus["candidate"] for v in values] if who == "candidate" else values

    monkeypatch.setattr(continuous, "episode_returns", rigged)

    r1 = continuous.run_continuous(cfg, max_cycles=1, source=source)[0]
    assert r1.pulled_rows > 0 and r1.env_source == "parquet"
    assert (r1.degraded_runs, r1.degraded_added) == (1, 1)
    assert r1.served_version == bundled  # the bundled policy is what is served before any promotion
    assert r1.comparisons is not None and set(r1.comparisons) == {"cluster", "validation"}
    for c in r1.comparisons.values():
        assert c.served is not None and c.mean_difference == pytest.approx(c.candidate - c.served)
        assert c.mean_difference > 50  # the bonus
    # candidate and served policy played the same seeded episodes of each set
    assert sorted(s for w, s in seeds if w == "candidate") == sorted(
        s for w, s in seeds if w == "served"
    )
    assert r1.promoted and r1.policy_version == bundled + 1 and r1.iterations == 1
    policy = LocalPolicy.load(tmp_path / "policies")
    assert policy.version == bundled + 1
    assert policy.manifest.training_data["previous_policy_version"] == bundled
    assert policy.manifest.training_data["eval_config"] == NO_FORGETTING

    # Cycle 2: a candidate worse than the served (promoted) one by more than the margin stays out.
    bonus["candidate"] = -100.0
    seeds.clear()
    second = continuous.run_continuous(cfg, max_cycles=1, source=source)[0]
    assert second.iterations == 2  # resumed and trained one more iteration
    assert second.served_version == bundled + 1
    assert not second.promoted
    assert second.policy_version == bundled + 1
    assert (tmp_path / "policies" / "LATEST").read_text().strip() == f"v{bundled + 1:06d}"
    assert not (tmp_path / "policies" / f"v{bundled + 2:06d}").exists()
    assert second.pulled_rows == 0  # nothing new since the last pull
    state = json.loads((tmp_path / "store" / "continuous_state.json").read_text())
    assert state["cycles"] == 2


@pytest.mark.slow
def test_a_cycle_on_pulled_history_trains_with_the_teacher(tmp_path: Path) -> None:
    """The shipped recipe (teacher + BC term) also runs on history pulled from Prometheus."""
    from jpo.train.trainer import load_train_config

    cfg = load_train_config(_config(tmp_path, teacher=True))
    result = continuous.run_continuous(cfg, max_cycles=1, source=FakePrometheus())[0]
    assert result.env_source == "parquet" and result.served_version == _bundled_version()
    assert result.comparisons is not None
    # promoted exactly when the rule says so (candidate vs the bundled policy, same episodes)
    assert result.promoted == all(c.not_worse for c in result.comparisons.values())
    # the teacher searched the oracle of the profiles the pulled history was matched to
    assert json.loads((tmp_path / "oracles.json").read_text())["oracles"]
    progress = (tmp_path / "store" / "progress.jsonl").read_text().splitlines()
    assert any("learner/bc_loss" in json.loads(row) for row in progress)
    # the term is live: the replayed workloads found their (calibrated) oracle targets
    assert any((json.loads(row).get("learner/bc_loss") or 0) > 0 for row in progress)


@pytest.mark.slow
def test_the_teacher_steps_towards_the_calibrated_profile_of_a_history_workload(
    tmp_path: Path,
) -> None:
    """History replays keep the catalog name while their profile is "<slug>-calibrated":
    the teacher must still find each replayed workload's oracle."""
    from jpo.sim.replay_env import PrometheusReplayEnv
    from jpo.sim.simulator import generate_runs

    runs = generate_runs(["mnist-lenet"], 5, seed=3)
    env = PrometheusReplayEnv(
        {
            "source": "table",
            "table": pa.concat_tables([r.table for r in runs]),
            "split": "all",
            "teacher": True,
            "teacher_cache": str(tmp_path / "oracles.json"),
        }
    )
    _, info = env.reset(seed=0)
    assert env.profile.name.endswith("-calibrated")
    assert np.isfinite(info["teacher_action"]).all()


@pytest.mark.slow
def test_shipped_config_runs_two_cycles_on_history_of_training_workloads(tmp_path: Path) -> None:
    """`jpo train --continuous` with configs/train.yaml (sizes shrunk by --set only) on a
    store holding only training-split workloads: the case that used to stop with "no
    workload of the history is in split 'holdout'" after the first budget."""
    import subprocess
    import sys

    from jpo.sim.simulator import generate_runs
    from jpo.telemetry.history import append_history

    runs = generate_runs(["cifar10-resnet18", "mnist-lenet"], 5, seed=11)  # both train split
    append_history(tmp_path / "history", pa.concat_tables([r.table for r in runs]))
    sets = {
        "storage.path": tmp_path / "store",
        "continuous.history_path": tmp_path / "history",
        "continuous.policy_dir": tmp_path / "policies",
        "continuous.budget_iterations": 1,
        "continuous.eval_episodes": 3,
        "continuous.interval_s": 0,
        "continuous.env_overrides_with_history.teacher_cache": tmp_path / "oracles.json",
        "sac.num_steps_sampled_before_learning_starts": 50,
        "reporting.min_sample_timesteps_per_iteration": 100,
        "reporting.progress_bar": "false",
        "resources.ray_num_cpus": 2,
        "resources.object_store_memory_mb": 200,
    }
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    proc = subprocess.run(
        [sys.executable, "-m", "jpo.train", "--continuous", "--cycles", "2", *args],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=800,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    cycles = json.loads(proc.stdout.strip().splitlines()[-1])["cycles"]
    assert len(cycles) == 2
    first, second = cycles
    bundled = _bundled_version()
    assert first["env_source"] == "parquet" and first["served_version"] == bundled
    assert f"actor starts from policy v{bundled}" in proc.stderr  # warm start: the bundled actor
    for report in cycles:
        comparisons = report["comparisons"]
        assert set(comparisons) == {"cluster", "validation"}
        assert all(c["served"] is not None for c in comparisons.values())
        rule = all(c["mean_difference"] >= -c["margin"] for c in comparisons.values())
        assert report["promoted"] == rule
    expected_served = bundled + 1 if first["promoted"] else bundled
    assert first["policy_version"] == expected_served
    assert second["served_version"] == expected_served  # versions continue from the served one
    assert second["iterations"] == 2  # resumed the first cycle's checkpoint
    # the teacher's targets: the oracle of the profiles calibrated from this history
    oracles = json.loads((tmp_path / "oracles.json").read_text())["oracles"]
    assert len(oracles) == 2 and all(name.endswith("-calibrated") for name in oracles)


def test_every_cycle_starts_its_actor_from_the_served_policy_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """continuous.actor_from_served: the cycle's training gets the served policy's actor
    also when it resumes a checkpoint (off: only a fresh run starts from it)."""
    import jpo.train.trainer as trainer

    calls: list[dict[str, object]] = []

    class Stop(Exception):
        pass

    def fake_train(cfg, **kwargs):
        calls.append(kwargs)
        raise Stop

    monkeypatch.setattr(trainer, "train", fake_train)
    cfg = trainer.load_train_config(_config(tmp_path))
    storage = trainer.Storage(str(tmp_path / "store"))
    for flag in (True, False):
        conf = ContinuousConfig.model_validate(
            {**cfg.continuous, "actor_from_served": flag, "history_path": str(tmp_path / "none")}
        )
        with pytest.raises(Stop):
            continuous.run_cycle(cfg, conf, storage, cycle=2)
    from jpo.paths import BUNDLED_POLICY_DIR

    assert [c["init_actor_on_resume"] for c in calls] == [True, False]
    assert all(Path(str(c["init_actor"])) == Path(BUNDLED_POLICY_DIR) for c in calls)


@pytest.mark.slow
def test_a_resumed_run_can_start_its_actor_from_a_policy(tmp_path: Path) -> None:
    """train(resume=True, init_actor=P, init_actor_on_resume=True): the actor is P's, the
    rest the checkpoint's (the actor frozen here by a warm-up longer than the run, so the
    exported actor must be P's weights bit for bit); without the flag, the checkpoint's."""
    import shutil

    from jpo.train.trainer import Storage, export_latest, load_train_config, train

    def weights(folder: Path) -> dict[str, np.ndarray]:
        with np.load(next(folder.glob("*.npz"))) as npz:
            return {k: np.asarray(npz[k]) for k in npz.files}

    base = load_train_config(_config(tmp_path))
    policies = {}
    for name, seed in (("a", 2), ("b", 5)):
        cfg = base.model_copy(update={"seed": seed})
        store = str(tmp_path / name)
        train(cfg, stop_iterations=1, storage_path=store)
        policies[name] = export_latest(cfg, Storage(store), tmp_path / f"policy-{name}")
    assert not all(
        np.array_equal(v, weights(policies["b"])[k]) for k, v in weights(policies["a"]).items()
    )
    frozen = base.model_copy(
        update={"sac": base.sac.model_copy(update={"critic_warmup_updates": 10**6})}
    )
    for flag, expected in ((True, "b"), (False, "a")):
        store = tmp_path / f"resumed-{flag}"
        shutil.copytree(tmp_path / "a", store)
        result = train(
            frozen,
            resume=True,
            stop_iterations=2,
            storage_path=str(store),
            init_actor=policies["b"],
            init_actor_on_resume=flag,
        )
        assert result.iterations == 2
        out = export_latest(frozen, Storage(str(store)), tmp_path / f"out-{flag}")
        got, want = weights(out), weights(policies[expected])
        assert set(got) == set(want)
        assert all(np.array_equal(got[k], want[k]) for k in want), flag
