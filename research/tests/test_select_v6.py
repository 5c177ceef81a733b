"""SELECTION-v6.md's rule as research/train/select_v6.py applies it."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "research" / "train"))
from select_v6 import verdict  # noqa: E402

NAMES = ("v5", "v6")


def _figures(
    fraction: float, ok: float, oom: float = 0.0, invalid: float = 0.0
) -> dict[str, float]:
    return {
        "oracle_fraction_mean": fraction,
        "val_loss_ok_share": ok,
        "oom_runs": oom,
        "invalid_configs": invalid,
    }


def _sets(val_new: dict[str, float], train_new: float = 0.5) -> dict[str, object]:
    return {
        "validation": {"v5": _figures(0.40, 0.75), "v6": val_new, "workloads": 24},
        "training": {"v5": _figures(0.45, 0.8), "v6": _figures(train_new, 0.8)},
    }


def test_a_candidate_better_everywhere_ships() -> None:
    assert all(verdict(_sets(_figures(0.41, 0.75)), NAMES).values())


def test_each_condition_can_refuse_on_its_own() -> None:
    refusals = {
        "1 validation oracle fraction higher": _sets(_figures(0.40, 0.75)),
        "2 no more OOM and invalid on validation": _sets(_figures(0.41, 0.75, oom=1)),
        "3 val-loss-ok share not lower by more than one workload": _sets(
            _figures(0.41, 0.75 - 2 / 24)
        ),
        "4 training split not lower": _sets(_figures(0.41, 0.75), train_new=0.44),
    }
    for name, sets in refusals.items():
        checks = verdict(sets, NAMES)
        assert not checks[name], name
        assert all(ok for other, ok in checks.items() if other != name), name


def test_one_workload_less_with_quality_held_is_allowed() -> None:
    assert all(verdict(_sets(_figures(0.41, 0.75 - 1 / 24)), NAMES).values())
