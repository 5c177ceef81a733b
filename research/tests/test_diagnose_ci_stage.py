"""diagnose.py ci-stage (round 13): every variant is a valid change of the CI stage's settings."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "research" / "evaluate"))
sys.path.insert(0, str(REPO / "research" / "train"))
import diagnose  # noqa: E402

from jpo.stage.suggest import load_suggest_settings  # noqa: E402


def test_every_variant_names_real_settings_and_the_shipped_one_is_the_old_stage() -> None:
    shipped = load_suggest_settings()
    for name, changes in diagnose.CI_STAGE_VARIANTS.items():
        changed = shipped.updated(changes)  # raises on an unknown key
        assert changed.incumbent.enabled == changes["incumbent"]["enabled"], name
    before = shipped.updated(diagnose.CI_STAGE_VARIANTS["pre-r13"])
    assert not before.incumbent.enabled and not before.failed_configs.retry_more_epochs
    # round 13's choice is what configs/suggest.toml ships
    chosen = shipped.updated(diagnose.CI_STAGE_VARIANTS["inc epochs-retry"])
    assert chosen == shipped


def test_a_ci_variant_is_a_plug_in_of_evaluate_and_leaves_the_product_alone() -> None:
    variant = diagnose.suggest_settings({"incumbent": {"enabled": False}})
    assert set(variant) == {"suggest_settings"}  # a keyword argument of evaluate()
    assert variant["suggest_settings"].incumbent.enabled is False
    assert load_suggest_settings().incumbent.enabled is True
