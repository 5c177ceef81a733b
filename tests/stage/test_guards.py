from __future__ import annotations

import math

import pytest

from jpo.stage.guards import (
    FailedConfig,
    apply_hysteresis,
    approval_needed,
    check_failed_configs,
    memory_guard,
    predicted_gpu_memory_fraction,
    predicted_throughput_gain,
    relative_change,
)
from jpo.telemetry.schema import RunSummary
from jpo.workload.types import Hyperparameters

CUR = Hyperparameters(batch_size=64, learning_rate=0.01, num_layers=18, epochs=30)


def _summary(gpu: float = 0.5, mem: float = 0.4) -> RunSummary:
    return RunSummary(
        cpu_util_mean=0.5,
        cpu_util_p95=0.6,
        mem_util_mean=0.4,
        mem_util_p95=0.5,
        gpu_util_mean=gpu,
        gpu_util_p95=gpu,
        gpu_mem_util_mean=mem,
        gpu_mem_util_p95=mem,
        throughput=1000.0,
        final_val_loss=0.5,
        duration_s=600.0,
        gpu_hours=600 / 3600,
    )


def _hp(**kw: float) -> Hyperparameters:
    return Hyperparameters.from_mapping({**CUR.as_dict(), **kw})


def test_relative_change_edges() -> None:
    assert relative_change(2, 2) == 0
    assert relative_change(2, 3) == pytest.approx(0.5)
    assert math.isinf(relative_change(0, 1))


@pytest.mark.parametrize(
    ("util", "expected"),
    [(0.0, 1.0), (1.0, 0.0), (0.5, 2 / 1.5 - 1)],
)
def test_roofline_gain_of_doubling_the_batch(util: float, expected: float) -> None:
    # idle GPU: all overhead, doubling the batch doubles throughput; saturated: no gain
    gain = predicted_throughput_gain(_summary(gpu=util), CUR, _hp(batch_size=128))
    assert gain == pytest.approx(expected)


def test_memory_model_scales_with_batch_times_layers() -> None:
    bigger = _hp(batch_size=128, num_layers=36)
    assert predicted_gpu_memory_fraction(0.2, CUR, bigger, 1.0) == pytest.approx(0.8)
    assert predicted_gpu_memory_fraction(0.2, CUR, bigger, 0.5) == pytest.approx(0.5)


def test_memory_guard_refuses_a_batch_that_would_not_fit() -> None:
    proposed = _hp(batch_size=128, learning_rate=0.02)
    out = memory_guard(
        CUR,
        proposed,
        observed_fraction=0.6,
        gpu_memory_total_mib=16384,
        max_fraction=0.9,
        activation_fraction=1.0,
    )
    assert out.hyperparameters == _hp(learning_rate=0.02)
    assert "16384 MiB" in out.notes[0] and "memory guard" in out.notes[0]


def test_memory_guard_lets_a_fitting_batch_and_cpu_workloads_through() -> None:
    proposed = _hp(batch_size=128)
    fits = memory_guard(
        CUR,
        proposed,
        observed_fraction=0.3,
        gpu_memory_total_mib=16384,
        max_fraction=0.9,
        activation_fraction=1.0,
    )
    no_gpu = memory_guard(
        CUR,
        proposed,
        observed_fraction=None,
        gpu_memory_total_mib=None,
        max_fraction=0.9,
        activation_fraction=1.0,
    )
    assert fits.hyperparameters == proposed and not fits.changed_by_guard
    assert no_gpu.hyperparameters == proposed


def test_failed_config_is_never_resuggested() -> None:
    failed = _hp(learning_rate=0.05)
    out = check_failed_configs(CUR, failed, [FailedConfig(failed, "diverged", "run-7")])
    assert out.hyperparameters == CUR
    assert "diverged" in out.notes[0] and "run-7" in out.notes[0]


def test_near_repeats_of_a_remembered_config_are_refused_within_the_tolerance() -> None:
    degraded = FailedConfig(_hp(batch_size=128, learning_rate=0.02), "degraded", "run-3")
    close = _hp(batch_size=130, learning_rate=0.0199)  # 1.6 % and 0.5 % away
    assert check_failed_configs(CUR, close, [degraded]).hyperparameters == close  # exact only
    out = check_failed_configs(CUR, close, [degraded], near=0.05)
    assert out.hyperparameters == CUR and "degraded" in out.notes[0]
    far = _hp(batch_size=140, learning_rate=0.02)  # batch 9 % away
    assert check_failed_configs(CUR, far, [degraded], near=0.05).hyperparameters == far


def test_oom_failure_also_blocks_larger_configs_but_not_smaller() -> None:
    oom = FailedConfig(_hp(batch_size=128), "oom")
    assert check_failed_configs(CUR, _hp(batch_size=256), [oom]).hyperparameters == CUR
    smaller = _hp(batch_size=96)
    assert check_failed_configs(CUR, smaller, [oom]).hyperparameters == smaller


def test_hysteresis_drops_tiny_nudges_keeps_real_changes() -> None:
    proposed = _hp(learning_rate=0.0102, epochs=40)
    out = apply_hysteresis(
        _summary(), CUR, proposed, min_relative_change=0.05, min_predicted_gain=0.02
    )
    assert out.hyperparameters == _hp(epochs=40)
    assert any("learning_rate" in n for n in out.notes)


def test_hysteresis_refuses_batch_increase_on_a_saturated_gpu() -> None:
    proposed = _hp(batch_size=128)
    busy = apply_hysteresis(
        _summary(gpu=0.995), CUR, proposed, min_relative_change=0.05, min_predicted_gain=0.02
    )
    idle = apply_hysteresis(
        _summary(gpu=0.3), CUR, proposed, min_relative_change=0.05, min_predicted_gain=0.02
    )
    assert busy.hyperparameters == CUR
    assert idle.hyperparameters == proposed and not idle.notes
    unpriced = apply_hysteresis(
        _summary(gpu=0.995), CUR, proposed, min_relative_change=0.05, min_predicted_gain=None
    )
    assert unpriced.hyperparameters == proposed and not unpriced.notes


def test_hysteresis_lets_batch_decreases_through() -> None:
    proposed = _hp(batch_size=32)
    out = apply_hysteresis(
        _summary(gpu=0.99), CUR, proposed, min_relative_change=0.05, min_predicted_gain=0.02
    )
    assert out.hyperparameters == proposed


def test_approval_flags_only_changes_above_the_threshold() -> None:
    assert approval_needed(CUR, _hp(batch_size=128), 1.0) == ()
    flagged = approval_needed(CUR, _hp(batch_size=256, epochs=31), 1.0)
    assert len(flagged) == 1 and flagged[0].startswith("batch_size 64 -> 256")
