"""Reward values pinned on hand-computed cases (formula: jpo/learning/reward.py docstring)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from jpo.errors import ConfigError
from jpo.learning.reward import (
    RewardWeights,
    compute_reward,
    load_reward_weights,
    objective,
    per_gpu_throughput,
)
from jpo.telemetry.schema import RunSummary

W = RewardWeights()


def run(
    *,
    gpu: float = 0.8,
    gpu_mem: float = 0.5,
    cpu: float = 0.4,
    mem: float = 0.6,
    throughput: float = 100.0,
    loss: float = 1.0,
    duration_s: float = 3600.0,
    gpu_hours: float = 1.0,
    failure: str = "none",
) -> RunSummary:
    return RunSummary(
        cpu_util_mean=cpu,
        cpu_util_p95=cpu,
        mem_util_mean=mem,
        mem_util_p95=mem,
        gpu_util_mean=gpu,
        gpu_util_p95=gpu,
        gpu_mem_util_mean=gpu_mem,
        gpu_mem_util_p95=gpu_mem,
        throughput=throughput,
        final_val_loss=loss,
        duration_s=duration_s,
        gpu_hours=gpu_hours,
        failure=failure,  # type: ignore[arg-type]
    )


# E for the default run: 0.5*0.8 + 0.2*0.5 + 0.15*0.4 + 0.15*0.6 = 0.65
E_DEFAULT = 0.65


def test_default_weights_file_matches_dataclass_defaults() -> None:
    assert load_reward_weights() == RewardWeights()


def test_throughput_doubling_same_loss() -> None:
    r = compute_reward(run(throughput=200.0), run(throughput=100.0), 1.0, W)
    assert r.efficiency == pytest.approx(E_DEFAULT)
    assert r.throughput_term == pytest.approx(0.5 * math.log(2.0))  # 0.346574
    assert r.quality_term == 0.0
    assert r.degradation_penalty == 0.0
    assert r.failure_penalty == 0.0
    assert r.total == pytest.approx(0.65 + 0.346574, abs=1e-6)


def test_degradation_vs_previous_and_best() -> None:
    # d_prev = 0.10, d_best = 0.15/0.95 = 0.157895
    # x = (0.10 - 0.01) + (0.157895 - 0.03) = 0.2178947
    # D = 3 tanh(10 x / 3) = 3 tanh(0.7263158) = 1.862419
    r = compute_reward(run(loss=1.10), run(loss=1.0), 0.95, W)
    assert r.val_loss_change_previous == pytest.approx(0.10)
    assert r.val_loss_change_best == pytest.approx(0.15 / 0.95)
    assert r.degradation_penalty == pytest.approx(1.862419, abs=1e-6)
    assert r.quality_term == 0.0
    assert r.total == pytest.approx(0.65 + 0.0 - 1.862419, abs=1e-6)


def test_more_utilization_with_worse_loss_is_punished() -> None:
    better_util = run(gpu=1.0, gpu_mem=1.0, cpu=1.0, mem=1.0, loss=1.2)
    same = run(loss=1.0)
    prev = run(loss=1.0)
    assert (
        compute_reward(better_util, prev, 1.0, W).total < compute_reward(same, prev, 1.0, W).total
    )


def test_degradation_within_tolerance_is_free() -> None:
    # 0.5 % worse than previous and best: below both tolerances (1 %, 3 %)
    r = compute_reward(run(loss=1.005), run(loss=1.0), 1.0, W)
    assert r.degradation_penalty == 0.0


def test_degradation_penalty_saturates_at_the_cap() -> None:
    # x = 0.99 + 0.97 = 1.96: D = 3 tanh(19.6 / 3) = 2.999987
    r = compute_reward(run(loss=2.0), run(loss=1.0), 1.0, W)
    assert r.degradation_penalty == pytest.approx(2.999987, abs=1e-6)
    assert r.total == pytest.approx(0.65 - 2.999987, abs=1e-6)
    # still monotone well past the cap's knee: a worse run is always punished more
    r30 = compute_reward(run(loss=1.3), run(loss=1.0), 1.0, W).degradation_penalty
    r50 = compute_reward(run(loss=1.5), run(loss=1.0), 1.0, W).degradation_penalty
    assert 0 < r30 < r50 < 3.0


def test_small_degradation_is_about_proportional() -> None:
    # 0.5 % beyond the 1 % tolerance vs previous (best far better is not the case here)
    # x = 0.005: D = 3 tanh(0.05 / 3) = 0.049995 ~ 10 * 0.005
    r = compute_reward(
        run(loss=1.015), run(loss=1.0), 0.99, dataclasses.replace(W, tolerance_best=1.0)
    )
    assert r.degradation_penalty == pytest.approx(0.049995, abs=1e-6)


def test_improvement_bonus() -> None:
    # d_best = -0.1 -> Q = 1.0 * 0.1
    r = compute_reward(run(loss=0.9), run(loss=1.0), 1.0, W)
    assert r.quality_term == pytest.approx(0.1)
    assert r.degradation_penalty == 0.0
    assert r.total == pytest.approx(0.65 + 0.1)


@pytest.mark.parametrize("failure", ["oom", "diverged", "failed"])
def test_failure_is_a_flat_penalty(failure: str) -> None:
    r = compute_reward(run(failure=failure, loss=math.inf), run(), 1.0, W)
    assert r.total == -5.0
    assert r.failure_penalty == 5.0
    assert r.efficiency == r.throughput_term == r.degradation_penalty == 0.0


def test_failure_penalties_are_per_kind() -> None:
    w = dataclasses.replace(W, failure_oom=2.0, failure_diverged=3.0, failure_other=4.0)
    assert compute_reward(run(failure="oom"), None, 1.0, w).total == -2.0
    assert compute_reward(run(failure="diverged"), None, 1.0, w).total == -3.0
    assert compute_reward(run(failure="failed"), None, 1.0, w).total == -4.0


def test_no_previous_and_no_reference_means_no_throughput_term() -> None:
    r = compute_reward(run(throughput=1e6), None, math.inf, W)
    assert r.throughput_term == 0.0
    assert r.degradation_penalty == 0.0
    assert r.total == pytest.approx(E_DEFAULT)


def test_throughput_log_ratio_is_clipped() -> None:
    r = compute_reward(run(throughput=10_000.0), None, 1.0, W, reference_throughput=100.0)
    assert r.throughput_term == pytest.approx(0.5 * 2.0)
    r = compute_reward(run(throughput=0.0), None, 1.0, W, reference_throughput=100.0)
    assert r.throughput_term == pytest.approx(-0.5 * 2.0)


def test_throughput_is_per_gpu() -> None:
    # 2 GPUs for one hour: gpu_hours = 2, 400 samples/s -> 200 samples/s per GPU
    two = run(throughput=400.0, gpu_hours=2.0)
    assert per_gpu_throughput(two) == pytest.approx(200.0)
    r = compute_reward(two, None, 1.0, W, reference_throughput=100.0)
    assert r.throughput_term == pytest.approx(0.5 * math.log(2.0))


def test_failed_previous_is_not_a_reference() -> None:
    r = compute_reward(run(loss=1.0), run(failure="oom", loss=math.inf), 1.0, W)
    assert r.val_loss_change_previous == 0.0
    assert r.throughput_term == 0.0


def test_cost_of_gpu_hours() -> None:
    # twice the GPU-hours of the previous run at the same per-GPU throughput:
    # C = 0.5 * ln 2 = 0.346574; duration doubles too, so rho is unchanged
    r = compute_reward(run(duration_s=7200.0, gpu_hours=2.0), run(), 1.0, W)
    assert r.throughput_term == pytest.approx(0.0)
    assert r.cost_term == pytest.approx(0.5 * math.log(2.0))
    assert r.total == pytest.approx(0.65 - 0.346574, abs=1e-6)
    # half the GPU-hours: a bonus of the same size
    r = compute_reward(run(duration_s=1800.0, gpu_hours=0.5), run(), 1.0, W)
    assert r.cost_term == pytest.approx(-0.5 * math.log(2.0))
    # explicit reference, clipped at 2: 100x the GPU-hours costs 0.5 * 2
    r = compute_reward(run(), None, 1.0, W, reference_gpu_hours=0.01)
    assert r.cost_term == pytest.approx(1.0)


def test_utilization_above_one_is_clipped() -> None:
    r = compute_reward(run(gpu=1.0, gpu_mem=1.0, cpu=1.4, mem=1.0), None, 1.0, W)
    assert r.efficiency == pytest.approx(1.0)


def test_objective_matches_reward_without_previous() -> None:
    s = run(throughput=150.0, loss=1.02)
    expected = compute_reward(
        s, None, 1.0, W, reference_throughput=100.0, reference_gpu_hours=2.0
    ).total
    assert objective(s, 1.0, W, 100.0, 2.0) == expected
    # 0.65 + 0.5 ln 1.5 - 0 (2 % is inside the 3 % tolerance vs best) - 0.5 ln(1 / 2)
    assert expected == pytest.approx(0.65 + 0.5 * math.log(1.5) + 0.5 * math.log(2.0))
    # without references, T and C are 0
    assert objective(s, 1.0, W) == pytest.approx(0.65)


def test_custom_weights_file(tmp_path) -> None:
    p = tmp_path / "r.toml"
    p.write_text("[efficiency]\nweight = 2.0\n[failure]\noom = 7\n")
    w = load_reward_weights(p)
    assert w.efficiency_weight == 2.0
    assert w.failure_oom == 7.0
    assert w.share_gpu == RewardWeights().share_gpu


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[efficiency]\nwieght = 1.0\n", "unknown key 'wieght'"),
        ("[bonus]\nweight = 1.0\n", "unknown section [bonus]"),
        ("[degradation]\nweight = -1.0\n", "degradation_weight"),
        ("[failure]\noom = 'big'\n", "must be a number"),
        ("[efficiency]\ngpu = 0\ngpu_mem = 0\ncpu = 0\nmem = 0\n", "sum to 0"),
        ("this is not toml", "cannot read"),
    ],
)
def test_bad_weights_file(tmp_path, text: str, needle: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=None) as info:
        load_reward_weights(p)
    assert needle in str(info.value)
    assert str(p) in str(info.value)


def test_missing_weights_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_reward_weights(tmp_path / "nope.toml")


def test_reward_is_bounded_for_sac() -> None:
    # extremes of every term: best case and worst case stay O(1)
    best = compute_reward(
        run(gpu=1, gpu_mem=1, cpu=1, mem=1, throughput=1e9, loss=0.01), run(), 1.0, W
    )
    worst = compute_reward(
        run(gpu=0, gpu_mem=0, cpu=0, mem=0, throughput=0, loss=1e9), run(), 1.0, W
    )
    assert best.total == pytest.approx(1.0 + 1.0 + 0.5)
    assert worst.total == pytest.approx(0.0 - 1.0 - 3.0)
    cheap = run(gpu=1, gpu_mem=1, cpu=1, mem=1, throughput=1e9, loss=0.01, gpu_hours=1e-6)
    dear = run(gpu=0, gpu_mem=0, cpu=0, mem=0, throughput=0, loss=1e9, gpu_hours=1e6)
    assert compute_reward(cheap, run(), 1.0, W).total == pytest.approx(3.5)
    assert compute_reward(dear, run(), 1.0, W).total == pytest.approx(-5.0)
    assert compute_reward(run(failure="oom"), run(), 1.0, W).total == -5.0
