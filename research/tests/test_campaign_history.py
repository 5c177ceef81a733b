"""The campaign-history input of round 12 (research/train/campaign_history.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "research" / "train"))
from campaign_history import (  # noqa: E402
    HAS_PREVIOUS,
    history_names,
    is_history_input,
    with_history,
)


def test_history_names_put_the_previous_run_after_this_one_then_the_flag() -> None:
    names = history_names(("gpu_util", "val_loss"))
    assert names == ("gpu_util", "val_loss", "prev_gpu_util", "prev_val_loss", HAS_PREVIOUS)
    assert is_history_input(names)


@pytest.mark.parametrize(
    "names",
    [
        ("gpu_util", "val_loss"),  # a spec-1 observation
        ("gpu_util", "prev_gpu_util"),  # no flag
        ("a", "prev_b", HAS_PREVIOUS),  # previous names that do not mirror
        (HAS_PREVIOUS,),  # nothing to mirror
    ],
)
def test_other_inputs_are_not_history_inputs(names: tuple[str, ...]) -> None:
    assert not is_history_input(names)


def test_first_run_of_a_campaign_has_zeros_and_no_flag() -> None:
    obs = np.array([0.5, 2.0], dtype=np.float32)
    x = with_history(obs, None)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, [0.5, 2.0, 0.0, 0.0, 0.0])


def test_later_runs_carry_the_previous_observation_and_the_flag() -> None:
    x = with_history(np.array([0.5, 2.0]), np.array([0.25, 3.0]))
    np.testing.assert_array_equal(x, [0.5, 2.0, 0.25, 3.0, 1.0])


def test_a_previous_observation_of_another_shape_is_refused() -> None:
    with pytest.raises(ValueError, match=r"shape \(3,\), expected \(2,\)"):
        with_history(np.zeros(2), np.zeros(3))
