"""jpo.sim.yardstick: the teacher judges configurations as `jpo evaluate` does."""

from __future__ import annotations

from pathlib import Path

import pytest

from jpo.errors import ConfigError
from jpo.evaluation.evaluate import evaluation_oracle_settings, load_evaluation_settings
from jpo.sim.response import load_conditions
from jpo.sim.yardstick import load_yardstick


def test_the_yardstick_is_the_evaluations() -> None:
    settings = load_evaluation_settings()
    yardstick = load_yardstick()
    assert yardstick.oracle_settings == evaluation_oracle_settings(settings)
    assert yardstick.conditions == load_conditions(None, **settings.conditions)
    assert yardstick.oracle_settings.tolerance == settings.val_loss_tolerance


def test_the_oracle_tolerance_and_conditions_come_from_the_file(tmp_path: Path) -> None:
    file = tmp_path / "evaluate.toml"
    file.write_text(
        "[quality_bar]\nval_loss_tolerance = 0.02\nmust_beat = ['random']\n"
        "[scoring]\noracle_val_loss_tolerance = 0.03\n"
        "[conditions]\ncontention = 0.2\n"
    )
    yardstick = load_yardstick(file)
    assert yardstick.oracle_settings.tolerance == 0.03
    assert yardstick.conditions.contention == 0.2
    file.write_text("[quality_bar]\nval_loss_tolerance = 0.02\n")
    assert load_yardstick(file).oracle_settings.tolerance == 0.02
    file.write_text("[quality_bar]\nval_loss_tolerance = 'x'\n")
    with pytest.raises(ConfigError, match=r"\[quality_bar\] val_loss_tolerance"):
        load_yardstick(file)
