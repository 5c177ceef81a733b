"""jpo.stage.stepping: the adaptive step scale replayed from a workload's audit records."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jpo.errors import ConfigError
from jpo.stage.audit import AuditRecord
from jpo.stage.stepping import StepSettings, StepState, step_state
from jpo.stage.suggest import load_suggest_settings
from jpo.telemetry.schema import RunSummary
from jpo.workload.types import Hyperparameters, WorkloadKey

KEY = WorkloadKey("cifar10", "resnet18", "pytorch")
HP = Hyperparameters(64, 0.05, 18, 30)
ON = StepSettings(initial=2.0, expand=2.0, shrink=0.5, min_scale=0.5, max_scale=8.0)


def summary(gpu: float = 0.5, loss: float = 1.0, failure: str = "none") -> RunSummary:
    other = ("cpu_util", "mem_util", "gpu_mem_util")
    return RunSummary(
        **{f"{name}_{stat}": 0.5 for name in other for stat in ("mean", "p95")},
        gpu_util_mean=gpu,
        gpu_util_p95=gpu,
        throughput=100.0,
        final_val_loss=loss,
        duration_s=3600.0,
        gpu_hours=1.0,
        failure=failure,  # type: ignore[arg-type]
    )


def record(
    base: RunSummary,
    outcome: RunSummary | None,
    *,
    reason: str = "policy",
    changed: bool = True,
    degraded: bool = False,
) -> AuditRecord:
    after = Hyperparameters(128, 0.05, 18, 30)
    return AuditRecord.for_change(
        KEY,
        HP,
        after if changed else HP,
        reason,
        telemetry={"run_id": "r", "summary": asdict(base)},
        changed=changed,
        outcome=None
        if outcome is None
        else {"run_id": "r2", "summary": asdict(outcome), "degraded": degraded},
    )


def test_off_by_default_whatever_the_log_says() -> None:
    log = [record(summary(0.5), summary(0.9))]
    assert step_state(log, StepSettings()) == StepState(1.0, 0, 0)
    assert not StepSettings().active


def test_the_first_step_gets_the_initial_scale() -> None:
    assert step_state([], ON) == StepState(2.0, 0, 0)


def test_steps_that_paid_off_expand_up_to_the_maximum() -> None:
    log = [record(summary(0.5), summary(0.6)), record(summary(0.6), summary(0.7))]
    assert step_state(log, ON) == StepState(8.0, 2, 0)  # 2 x 2 x 2


def test_a_worse_failed_or_degraded_step_shrinks() -> None:
    worse = record(summary(0.6), summary(0.5))
    failed = record(summary(0.6), summary(0.9, failure="oom"))
    degraded = record(summary(0.6), summary(0.9), degraded=True)
    for miss in (worse, failed, degraded):
        assert step_state([record(summary(0.5), summary(0.6)), miss], ON) == StepState(2.0, 1, 1)
    assert step_state([worse, worse, worse], ON) == StepState(0.5, 0, 3)  # floor


def test_rollbacks_kept_rounds_and_pending_runs_are_not_steps() -> None:
    log = [
        record(summary(0.5), summary(0.4), reason="rollback: run r failed (oom)"),
        record(summary(0.5), None, reason="unchanged: hysteresis", changed=False),
        record(summary(0.5), None),  # its run has not finished yet
    ]
    assert step_state(log, ON) == StepState(2.0, 0, 0)


def test_the_score_is_the_objective_so_a_worse_loss_can_outweigh_utilization() -> None:
    # GPU utilization up 0.1, validation loss 10 % worse than the campaign's first run
    log = [record(summary(0.5, loss=1.0), summary(0.6, loss=1.1))]
    assert step_state(log, ON).misses == 1


@given(
    scale=st.floats(0.0, 100.0, allow_nan=False),
    action=st.lists(st.floats(-1.0, 1.0, allow_nan=False), min_size=1, max_size=4),
)
def test_a_scaled_action_never_leaves_the_trust_region(scale: float, action: list[float]) -> None:
    scaled = StepState(scale).apply(action)
    assert all(-1.0 <= a <= 1.0 for a in scaled)
    assert all(a * b >= 0 for a, b in zip(scaled, action, strict=True))  # same direction


def test_shipped_settings_leave_it_off() -> None:
    assert not load_suggest_settings().step.active


@pytest.mark.parametrize(
    "body", ["min_scale = 2.0\nmax_scale = 1.0", "shrink = 0.0", "min_scale = 0.0"]
)
def test_bad_step_settings_name_the_section(tmp_path: Path, body: str) -> None:
    path = tmp_path / "suggest.toml"
    path.write_text(f"[step]\n{body}\n")
    with pytest.raises(ConfigError, match=r"suggest\.toml: \[step\]"):
        load_suggest_settings(path)
