"""Continuous learning: history refresh, degraded runs, evaluation, promote-if-not-worse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

import jpo.continuous as continuous
from jpo.continuous import ContinuousConfig, _degraded_runs, evaluate_policy, load_continuous_config
from jpo.errors import ConfigError
from jpo.telemetry import MetricSource
from jpo.workload import Hyperparameters, WorkloadKey

WORKLOADS = ("cifar10-resnet18", "higgs-mlp")  # one of the train split, one held out


class FakePrometheus(MetricSource):
    """Simulated runs served as if Prometheus had scraped them."""

    def __init__(self, runs_per_workload: int = 5) -> None:
        from envs.simulator import generate_runs

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
    from jpo.train import TrainConfig

    cfg = TrainConfig(continuous={"budget_iterations": 0, "nonsense": 1})
    with pytest.raises(ConfigError) as err:
        load_continuous_config(cfg)
    assert "continuous.budget_iterations" in str(err.value)
    assert "continuous.nonsense" in str(err.value)


def _degraded_record(audit: Path, source: FakePrometheus, run_id: str) -> None:
    from jpo.audit import AuditRecord, append_record

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
    from jpo.history import append_history, read_history

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
            "register_module": "envs",
            "config": env_config,
            "eval_config": {"split": "holdout"},
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


@pytest.mark.slow
def test_two_cycles_promote_then_refuse_a_worse_candidate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jpo.policy import LocalPolicy
    from jpo.train import load_train_config

    cfg = load_train_config(_config(tmp_path))
    source = FakePrometheus()
    _degraded_record(tmp_path / "audit.jsonl", source, "sim7-0004")

    first = continuous.run_continuous(cfg, max_cycles=1, source=source)
    assert len(first) == 1
    r1 = first[0]
    assert r1.pulled_rows > 0 and r1.env_source == "parquet"
    assert (r1.degraded_runs, r1.degraded_added) == (1, 1)
    assert r1.promoted and r1.policy_version == 1 and r1.current_return is None
    assert r1.iterations == 1
    policy = LocalPolicy.load(tmp_path / "policies")
    assert policy.version == 1
    assert policy.manifest.training_data["eval_config"] == {"split": "holdout"}
    assert np.isfinite(policy.manifest.training_data["eval_return"])

    # Cycle 2: a candidate scored worse than the current policy must not be promoted.
    real = continuous.evaluate_policy
    calls: list[float] = []

    def rigged(act, make_env, *, episodes, seed):
        value = real(act, make_env, episodes=episodes, seed=seed)
        calls.append(value)
        return value - 100.0 if len(calls) == 1 else value  # first call: the candidate

    monkeypatch.setattr(continuous, "evaluate_policy", rigged)
    second = continuous.run_continuous(cfg, max_cycles=1, source=source)[0]
    assert second.iterations == 2  # resumed and trained one more iteration
    assert not second.promoted
    assert second.policy_version == 1
    assert (tmp_path / "policies" / "LATEST").read_text().strip() == "v000001"
    assert not (tmp_path / "policies" / "v000002").exists()
    assert second.pulled_rows == 0  # nothing new since the last pull
    state = json.loads((tmp_path / "store" / "continuous_state.json").read_text())
    assert state["cycles"] == 2


@pytest.mark.slow
def test_a_cycle_on_pulled_history_trains_with_the_teacher(tmp_path: Path) -> None:
    """The shipped recipe (teacher + BC term) also runs on history pulled from Prometheus."""
    from jpo.train import load_train_config

    cfg = load_train_config(_config(tmp_path, teacher=True))
    result = continuous.run_continuous(cfg, max_cycles=1, source=FakePrometheus())[0]
    assert result.env_source == "parquet" and result.promoted
    # the teacher searched the oracle of the profiles the pulled history was matched to
    assert json.loads((tmp_path / "oracles.json").read_text())["oracles"]
    progress = (tmp_path / "store" / "progress.jsonl").read_text().splitlines()
    assert any("learner/bc_loss" in json.loads(row) for row in progress)
