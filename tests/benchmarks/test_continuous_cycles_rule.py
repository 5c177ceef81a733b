"""benchmarks/train/continuous_cycles.py: RESULTS.md §12's selection rule, each clause alone."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train" / "continuous_cycles.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("continuous_cycles", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _comp(diff: float, se: float) -> dict[str, float]:
    return {"mean_difference": diff, "standard_error": se, "candidate": 0.0, "served": 0.0}


def _run(variant: str, seed: int, cycles: list[tuple[float, float, bool]]) -> dict[str, Any]:
    """A run whose cycles are (cluster diff, held-out diff, promoted), every SE 1."""
    return {
        "variant": variant,
        "seed": seed,
        "cycles": [
            {
                "cycle": i + 1,
                "promoted": p,
                "comparisons": {"cluster": _comp(c, 1.0), "holdout": _comp(h, 1.0)},
            }
            for i, (c, h, p) in enumerate(cycles)
        ],
    }


def _two_runs(variant: str, cluster: float, holdout: float = 0.0) -> list[dict[str, Any]]:
    return [_run(variant, s, [(cluster, holdout, False)] * 2) for s in (0, 1)]


def test_score_is_the_mean_cluster_difference_and_its_se_the_pooled_one() -> None:
    m = _script()
    runs = [
        _run("anchor", 0, [(1.0, 0.0, True), (3.0, 0.5, False)]),
        _run("anchor", 1, [(0.0, 0.0, False)] * 2),
    ]
    (row,) = m.score_variants(runs, cycles=2)
    assert row["complete"] and row["eligible"]
    assert row["score"] == 1.0 and row["se"] == 0.5  # sqrt(4 x 1^2) / 4
    assert row["improves"] is False  # 1.0 - 2 x 0.5 is not above 0
    assert row["net"][0] == {"cluster": 1.0, "holdout": 0.0}  # only the promoted cycle counts


def test_one_run_or_a_missing_cycle_is_not_complete_and_never_chosen() -> None:
    m = _script()
    runs = [_run("anchor", 0, [(5.0, 0.0, False)] * 2), _run("anchor", 1, [(5.0, 0.0, False)])]
    scored = m.score_variants(runs + _two_runs("warmup", -1.0), cycles=2)
    assert [v["complete"] for v in scored] == [False, True]
    assert m.choose(scored) == "warmup"


def test_forgetting_beyond_two_se_in_one_cycle_makes_a_variant_ineligible() -> None:
    m = _script()
    runs = _two_runs("anchor", 5.0)
    runs[1]["cycles"][1]["comparisons"]["holdout"] = _comp(-2.1, 1.0)
    scored = m.score_variants(runs + _two_runs("warmup", -1.0), cycles=2)
    assert [v["eligible"] for v in scored] == [False, True]
    assert m.choose(scored) == "warmup"


def test_ties_go_to_fewer_terms_then_to_the_shipped_variant() -> None:
    m = _script()
    # SE of each score 0.5: warmup_anchor leads by 0.4 < 0.5 -> tie -> one term wins
    scored = m.score_variants(_two_runs("warmup_anchor", 1.4) + _two_runs("warmup", 1.0), cycles=2)
    assert m.choose(scored) == "warmup"
    scored = m.score_variants(_two_runs("warmup_anchor", 1.6) + _two_runs("warmup", 1.0), cycles=2)
    assert m.choose(scored) == "warmup_anchor"  # leads by more than the SE
    scored = m.score_variants(_two_runs("anchor", 1.4) + _two_runs("warmup", 1.0), cycles=2)
    assert m.choose(scored) == "warmup"  # as many terms: the shipped one stays


def test_no_eligible_variant_keeps_the_shipped_default() -> None:
    m = _script()
    scored = m.score_variants(_two_runs("anchor", 2.0, holdout=-3.0), cycles=2)
    assert m.choose(scored) == "warmup"
