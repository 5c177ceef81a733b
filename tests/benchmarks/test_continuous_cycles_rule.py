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


def _run(
    variant: str,
    seed: int,
    cycles: list[tuple[Any, ...]],
    sets: tuple[str, ...] = ("cluster", "holdout"),
) -> dict[str, Any]:
    """A run whose cycles are (one diff per set in ``sets``..., promoted), every SE 1."""
    return {
        "variant": variant,
        "seed": seed,
        "cycles": [
            {
                "cycle": i + 1,
                "promoted": cycle[-1],
                "comparisons": {
                    name: _comp(d, 1.0) for name, d in zip(sets, cycle[:-1], strict=True)
                },
            }
            for i, cycle in enumerate(cycles)
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


# --------------------------------------------------------------------------- §13's rule


def _run13(
    variant: str, seed: int, cycles: list[tuple[float, float, float, bool]]
) -> dict[str, Any]:
    """A run whose cycles are (cluster, validation, held-out diff, promoted), every SE 1."""
    return _run(variant, seed, list(cycles), ("cluster", "validation", "holdout"))


def _three_runs(
    variant: str, cluster: float, validation: float = 0.0, holdout: float = 0.0
) -> list[dict[str, Any]]:
    return [_run13(variant, s, [(cluster, validation, holdout, False)] * 2) for s in (3, 4, 5)]


def test_rule13_scores_six_cluster_differences_and_sums_the_promoted_ones_per_run() -> None:
    m = _script()
    runs = [
        _run13("u1", 3, [(3.0, 0.5, -1.0, True), (-1.0, 0.0, 0.0, False)]),
        _run13("u1", 4, [(0.0, 0.0, 0.0, False)] * 2),
        _run13("u1", 5, [(1.0, 0.0, 0.0, False), (0.0, 0.0, 0.0, False)]),
    ]
    (row,) = m.score_rule13(runs, cycles=2)
    assert row["complete"] and row["eligible"]
    assert row["score"] == 0.5 and abs(row["se"] - 6**0.5 / 6) < 1e-12
    assert row["improves"] is False  # 0.5 - 2 x 0.408 is not above 0
    assert row["net"][3] == {"cluster": 3.0, "validation": 0.5, "holdout": -1.0}
    assert row["terms"] == 1 and row["movement"] == 5e-4  # one update at the recipe's rate
    assert m.choose_rule13([row]) == "u1"  # eligible and above 0: it becomes the default


def test_rule13_forgetting_counts_on_the_validation_set_never_on_the_held_out_split() -> None:
    m = _script()
    held_out_loss = _three_runs("u10lr", 4.0, holdout=-9.0)  # a test set: decides nothing
    assert m.choose_rule13(m.score_rule13(held_out_loss, cycles=2)) == "u10lr"
    forgets = _three_runs("u10lr", 4.0)
    forgets[2]["cycles"][0]["comparisons"]["validation"] = _comp(-2.1, 1.0)
    scored = m.score_rule13(forgets + _three_runs("w_u1", 1.0), cycles=2)
    assert [v["eligible"] for v in scored] == [False, True]
    assert m.choose_rule13(scored) == "w_u1"


def test_rule13_needs_three_complete_runs_with_all_three_sets() -> None:
    m = _script()
    two_seeds = _three_runs("u1", 5.0)[:2]
    no_holdout = _three_runs("w_u1", 5.0)
    del no_holdout[0]["cycles"][1]["comparisons"]["holdout"]
    failed = [*_three_runs("u10lr", 5.0)[:2], {"variant": "u10lr", "seed": 5, "error": "x"}]
    scored = m.score_rule13(two_seeds + no_holdout + failed, cycles=2)
    assert [v["complete"] for v in scored] == [False, False, False]
    assert m.choose_rule13(scored) is None  # the default stays


def test_rule13_keeps_the_default_when_no_eligible_variant_gains() -> None:
    m = _script()
    scored = m.score_rule13(_three_runs("u1", 0.0) + _three_runs("w_u1", -1.0), cycles=2)
    assert m.choose_rule13(scored) is None


def test_rule13_ties_go_to_fewer_terms_then_smaller_movement_then_the_listed_order() -> None:
    m = _script()
    # every score's SE is sqrt(6) / 6 = 0.41: a lead of 0.3 is a tie, 0.5 is not
    tie = m.score_rule13(_three_runs("u100lr", 2.3) + _three_runs("u1", 2.0), cycles=2)
    assert m.choose_rule13(tie) == "u1"  # fewer terms
    lead = m.score_rule13(_three_runs("u100lr", 2.5) + _three_runs("u1", 2.0), cycles=2)
    assert m.choose_rule13(lead) == "u100lr"
    two_terms = _three_runs("u100lr", 2.3) + _three_runs("u10lr", 2.0)
    assert m.choose_rule13(m.score_rule13(two_terms, cycles=2)) == "u10lr"  # 5e-4 < 5e-3
    same = _three_runs("u10lr", 2.3) + _three_runs("w_u1", 2.0)
    assert m.choose_rule13(m.score_rule13(same, cycles=2)) == "w_u1"  # listed first


def test_rule13b_turns_actor_from_served_on_only_if_it_beats_the_shipped_cycles() -> None:
    m = _script()

    def four(variant: str, cluster: float, validation: float = 0.0) -> list[dict[str, Any]]:
        return [_run13(variant, s, [(cluster, validation, 0.0, False)] * 4) for s in (8, 9, 10)]

    def chosen(*runs: list[dict[str, Any]]) -> bool:
        return bool(m.choose_rule13b(m.score_rule13([r for rs in runs for r in rs], cycles=4)))

    # SE of each score: sqrt(12) / 12 = 0.29
    assert chosen(four("served_start", 2.0), four("shipped", 1.5))  # leads by 0.5 > 0.29
    assert not chosen(four("served_start", 2.0), four("shipped", 1.8))  # a tie: fewer terms
    assert chosen(four("served_start", 1.0), four("shipped", 3.0, validation=-2.5))  # forgets
    assert not chosen(four("served_start", 3.0, validation=-2.5), four("shipped", 1.0))
    assert not chosen(four("served_start", -0.5), four("shipped", -1.0))  # no gain
    assert not chosen(four("served_start", 2.0)[:2], four("shipped", 1.0))  # incomplete


def test_rule13c_recommends_fresh_cycles_only_if_later_cycles_gain_without_forgetting() -> None:
    m = _script()

    def fresh(later: float, validation: float = 0.0) -> list[dict[str, Any]]:
        cycles = [(5.0, 0.0, 0.0, True)] + [(later, validation, 0.0, False)] * 3
        return [_run13("fresh", s, cycles) for s in (8, 9, 10)]

    # cycles 2-4 of 3 runs: 9 differences, SE sqrt(9) / 9 = 0.33; cycle 1 does not count
    v = m.verdict_rule13c(fresh(0.7))
    assert v["complete"] and v["eligible"] and abs(v["later_mean"] - 0.7) < 1e-12
    assert v["recommend"]  # 0.7 - 0.67 > 0
    assert not m.verdict_rule13c(fresh(0.6))["recommend"]  # 0.6 - 0.67 is not
    assert not m.verdict_rule13c(fresh(3.0, validation=-2.1))["recommend"]  # forgets
    assert not m.verdict_rule13c(fresh(3.0)[:2])["recommend"]  # a seed missing
    failed = [*fresh(3.0)[:2], {"variant": "fresh", "seed": 10, "error": "x", "cycles": []}]
    assert not m.verdict_rule13c(failed)["complete"]
    held_out_loss = fresh(3.0)
    held_out_loss[0]["cycles"][1]["comparisons"]["holdout"] = _comp(-9.0, 1.0)
    assert m.verdict_rule13c(held_out_loss)["recommend"]  # a test set: decides nothing
