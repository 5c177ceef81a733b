"""jpo.stage.record: the typed basis and outcome of an audit record, over any stored line."""

from __future__ import annotations

import math
from pathlib import Path

from fakes.suggest_campaign import CONFIG, HP, FakeSource, log_of, make_policy, run

from jpo.stage import audit
from jpo.stage.record import Basis, Outcome, SuggestionRecord, read_suggestions
from jpo.workload.types import WorkloadKey


def test_the_stage_writes_the_documented_keys_and_reads_them_back(tmp_path: Path) -> None:
    config = tmp_path / "app" / "config.ini"
    config.parent.mkdir()
    config.write_text(CONFIG)
    policy = make_policy(tmp_path / "up", (0.5, 0.0, 0.0, 0.0))
    fake = FakeSource()
    fake.add(HP, "run-1", val_loss=0.5)
    first = run(config, fake, policy)
    assert first.after is not None
    fake.add(first.after, "run-2", val_loss=0.45)
    run(config, fake, policy)
    raw = audit.read_records(log_of(config))[0]
    assert set(raw.telemetry) == {
        "run_id",
        "summary",
        "action",
        "action_names",
        "predicted_gain",
        "notes",
    }
    assert raw.outcome is not None
    assert {"run_id", "summary", "reward", "reward_components", "val_loss_change"} <= set(
        raw.outcome
    )
    (typed, _) = read_suggestions(log_of(config), raw.key)
    assert typed.basis.run_id == "run-1" and typed.basis.summary is not None
    assert typed.outcome is not None and typed.outcome.run_id == "run-2"
    assert typed.outcome.good and typed.applied == first.after == typed.ran
    # written again, the stored objects are the same JSON
    assert typed.basis.to_json() == raw.telemetry
    assert audit._finite(typed.outcome.to_json()) == raw.outcome


def test_odd_stored_values_read_as_absent_and_unknown_keys_are_kept() -> None:
    stored = {
        "run_id": 7,
        "reward": "high",
        "summary": {"final_val_loss": 0.4},  # too few fields for a summary
        "degraded": True,
        "status": "ok",  # a key of another writer
    }
    outcome = Outcome.read(stored)
    assert outcome.run_id == "7" and outcome.reward is None and outcome.summary is None
    assert outcome.degraded and not outcome.good
    assert outcome.model_extra == {"status": "ok"}
    assert Outcome.read("not an object") == Outcome()
    assert Outcome.read({"degraded": "yes"}).degraded and not Outcome.read({}).degraded
    basis = Basis.read({"gpu_util_mean": 0.42, "missing": None})
    assert basis.run_id == "" and basis.to_json() == {"gpu_util_mean": 0.42, "missing": None}


def test_a_null_loss_reads_as_infinite_and_bad_values_as_none() -> None:
    utils = ("cpu_util", "mem_util", "gpu_util", "gpu_mem_util")
    names = [f"{m}_{k}" for m in utils for k in ("mean", "p95")]
    summary = dict.fromkeys([*names, "throughput", "duration_s", "gpu_hours"], 0.5)
    got = Outcome.read({"summary": {**summary, "final_val_loss": None, "failure": "oom"}})
    assert got.summary is not None and math.isinf(got.summary.final_val_loss) and got.failed
    record = audit.AuditRecord.for_change(
        WorkloadKey("d", "m", "pytorch"), HP, HP, "policy", outcome={"hyperparameters": "x"}
    )
    typed = SuggestionRecord.of(record)
    assert typed.outcome is not None and typed.ran == HP == typed.applied
