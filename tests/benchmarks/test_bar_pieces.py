"""benchmarks/evaluate/bar.py: a folder set's pieces name their folder (issue 30's broad-v2)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from jpo.evaluation.evaluate import load_evaluation_settings

BAR = Path(__file__).resolve().parents[2] / "benchmarks" / "evaluate" / "bar.py"


def _bar() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bar", BAR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pieces_of_two_versions_of_a_folder_set_never_share_a_prefix() -> None:
    """broad-v1's old pieces (``broad--*``) are not read as broad-v2's (same workload names)."""
    bar = _bar()
    sets = load_evaluation_settings().sets
    prefix = bar.piece_prefix("broad", sets["broad"])
    assert prefix == "broad@broad-v2"
    assert bar.piece_prefix("broad-v1", sets["broad-v1"]) == "broad-v1@broad-v1"
    assert not Path("broad--jpo--part1of1.parquet").match(f"{prefix}--*.parquet")
    assert bar.piece_prefix("validation", sets["validation"]) == "validation"  # not a folder
    assert bar.piece_prefix("holdout", sets["holdout"]) == "holdout"
