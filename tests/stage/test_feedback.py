"""jpo.stage.feedback: scoring a finished run against its suggestion, and the bad-outcome rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes.suggest_campaign import CONFIG, HP, FakeSource, make_policy, without_gpu_series

from jpo.errors import ConfigError
from jpo.stage import audit
from jpo.stage.feedback import FeedbackOptions, failed_configs, feedback
from jpo.stage.record import suggestion_records
from jpo.stage.rollback import last_known_good, run_outcome_is_bad
from jpo.stage.suggest import SuggestOptions, SuggestSettings, suggest
from jpo.workload.types import Hyperparameters

SETTINGS = SuggestSettings()


def _suggested(config: Path, tmp_path: Path, source: FakeSource) -> Hyperparameters:
    policy = make_policy(tmp_path / "policy", (0.5, 0.0, 0.0, 0.0))
    result = suggest(
        SuggestOptions(config=config, policy_path=policy), metric_source=source, settings=SETTINGS
    )
    assert result.after is not None and result.written
    return result.after


def test_feedback_scores_the_run_and_stores_it(config: Path, tmp_path: Path) -> None:
    source = FakeSource()
    source.add(HP, "run-1", val_loss=0.5)
    new = _suggested(config, tmp_path, source)
    source.add(new, "run-2", val_loss=0.45)
    result = feedback(FeedbackOptions(config=config, run_id="run-2"), metric_source=source)
    assert result.run_id == "run-2" and not result.degraded
    assert result.val_loss_change == pytest.approx(-0.1)
    (record,) = suggestion_records(audit.read_records(config.parent / ".jpo" / "audit.jsonl"))
    assert record.record.outcome is not None
    assert record.record.outcome["reward"] == pytest.approx(result.reward)
    assert record.record.outcome["summary"]["final_val_loss"] == pytest.approx(0.45)
    assert run_outcome_is_bad(record, SETTINGS) is None
    assert last_known_good([record]) == new
    assert any((config.parent / ".jpo" / "history").rglob("*.parquet"))


def test_feedback_of_a_cpu_device_workload(config: Path, tmp_path: Path) -> None:
    """[jpo] device = cpu: scored from the pod's CPU and memory, kept out of the history."""
    config.write_text(CONFIG + "\n[jpo]\ndevice = cpu\n")
    source = FakeSource()
    source.add(HP, "run-1", val_loss=0.5)
    new = _suggested(config, tmp_path, source)
    source.add(new, "run-2", val_loss=0.45)
    source.runs = [without_gpu_series(t) for t in source.runs]
    result = feedback(FeedbackOptions(config=config, run_id="run-2"), metric_source=source)
    assert result.run_id == "run-2" and not result.degraded
    (record,) = suggestion_records(audit.read_records(config.parent / ".jpo" / "audit.jsonl"))
    assert record.record.outcome is not None and record.record.outcome["gpus"] == 1
    summary = record.record.outcome["summary"]
    assert summary["gpu_util_mean"] == summary["cpu_util_mean"]
    assert not (config.parent / ".jpo" / "history").exists()


def test_degraded_and_failed_outcomes_call_for_rollback(config: Path, tmp_path: Path) -> None:
    source = FakeSource()
    source.add(HP, "run-1", val_loss=0.5)
    new = _suggested(config, tmp_path, source)
    source.add(new, "run-2", run_status=3)  # diverged
    result = feedback(FeedbackOptions(config=config, run_id="run-2"), metric_source=source)
    assert result.degraded
    (record,) = suggestion_records(audit.read_records(config.parent / ".jpo" / "audit.jsonl"))
    assert "diverged" in (run_outcome_is_bad(record, SETTINGS) or "")
    assert last_known_good([record]) == HP  # the values before the bad change
    (failed,) = failed_configs([record], None, None, "")
    assert failed.hyperparameters == new and failed.failure == "diverged"


def test_degraded_configs_are_remembered_only_when_asked(config: Path, tmp_path: Path) -> None:
    source = FakeSource()
    source.add(HP, "run-1", val_loss=0.5)
    new = _suggested(config, tmp_path, source)
    source.add(new, "run-2", val_loss=0.8)  # trained, but 60 % worse
    assert feedback(FeedbackOptions(config=config, run_id="run-2"), metric_source=source).degraded
    records = suggestion_records(audit.read_records(config.parent / ".jpo" / "audit.jsonl"))
    assert failed_configs(records, None, None, "") == ()
    (failed,) = failed_configs(records, None, None, "", include_degraded=True)
    assert failed.hyperparameters == new and failed.failure == "degraded"
    assert failed.run_id == "run-2"


def test_tolerance_comes_from_the_settings(config: Path, tmp_path: Path) -> None:
    source = FakeSource()
    source.add(HP, "run-1", val_loss=0.5)
    new = _suggested(config, tmp_path, source)
    source.add(new, "run-2", val_loss=0.52)  # +4 %
    lenient = feedback(
        FeedbackOptions(config=config, run_id="run-2"), metric_source=source, settings=SETTINGS
    )
    assert not lenient.degraded
    strict = SETTINGS.updated({"rollback": {"val_loss_tolerance": 0.01}})
    record = suggestion_records(audit.read_records(config.parent / ".jpo" / "audit.jsonl"))[0]
    assert record.outcome is not None
    assert run_outcome_is_bad(record, strict) is None  # verdict stored at feedback time


def test_feedback_without_a_pending_suggestion_is_a_clear_error(config: Path) -> None:
    source = FakeSource()
    source.add(HP, "run-1")
    with pytest.raises(ConfigError, match="jpo suggest"):
        feedback(FeedbackOptions(config=config, run_id="run-1"), metric_source=source)


def test_no_known_good_values_when_the_values_before_failed_too(
    config: Path, tmp_path: Path
) -> None:
    source = FakeSource()
    source.add(HP, "run-1", run_status=2)  # the defaults ran out of memory
    new = _suggested(config, tmp_path, source)
    source.add(new, "run-2", run_status=2)
    feedback(FeedbackOptions(config=config, run_id="run-2"), metric_source=source)
    (record,) = suggestion_records(audit.read_records(config.parent / ".jpo" / "audit.jsonl"))
    assert run_outcome_is_bad(record, SETTINGS) is not None
    assert last_known_good([record]) is None  # rolling back would repeat run-1's OOM
