"""jpo.stage.settings: configs/suggest.toml as pydantic models; errors name file, table and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from jpo.errors import ConfigError
from jpo.paths import config_path
from jpo.stage.settings import SuggestSettings, load_suggest_settings


def test_the_shipped_file_holds_the_defaults() -> None:
    assert load_suggest_settings() == SuggestSettings()
    assert load_suggest_settings(config_path("suggest.toml")) == SuggestSettings()


def test_a_partial_file_keeps_the_other_defaults(tmp_path: Path) -> None:
    path = tmp_path / "suggest.toml"
    path.write_text("[rollback]\nval_loss_tolerance = 1\n[endpoint]\nretries = 3\n")
    got = load_suggest_settings(path)
    assert got.rollback.val_loss_tolerance == 1.0 and got.endpoint.retries == 3
    assert got.rollback.recover_failures and got.incumbent == SuggestSettings().incumbent


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("[rollback]\nval_los_tolerance = 0.1", "[rollback] val_los_tolerance"),
        ("[step]\ninitial = 2.0", "step"),  # deleted with jpo/stage/stepping.py
        ("[failed_configs]\nbacktrack_halvings = 1", "[failed_configs] backtrack_halvings"),
        ("[incumbent]\nval_loss_tolerance = 0.03", "[incumbent] val_loss_tolerance"),
        ("[incumbent]\nshift_reruns = 0", "[incumbent] shift_reruns"),
        ("[hysteresis]\nmin_relative_change = -0.1", "[hysteresis] min_relative_change"),
        ("[hysteresis]\nmin_relative_change = nan", "[hysteresis] min_relative_change"),
        ("[fallback]\nlocal = 1", "[fallback] local"),
        ("[endpoint]\nretries = 1.5", "[endpoint] retries"),
        ("[endpoint]\ntimeout_s = true", "[endpoint] timeout_s"),
        ("[telemetry]\nprometheus_url = 9090", "[telemetry] prometheus_url"),
    ],
)
def test_bad_keys_and_values_name_the_file_table_and_key(
    tmp_path: Path, body: str, where: str
) -> None:
    path = tmp_path / "suggest.toml"
    path.write_text(body + "\n")
    with pytest.raises(ConfigError) as err:
        load_suggest_settings(path)
    assert str(path) in str(err.value) and where in str(err.value)


def test_a_named_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read settings"):
        load_suggest_settings(tmp_path / "nope.toml")


def test_updated_changes_keys_and_refuses_unknown_ones() -> None:
    changed = SuggestSettings().updated({"probe": {"enabled": True}})
    assert changed.probe.enabled and changed.probe.lr_factor == 2.0
    assert not SuggestSettings().probe.enabled
    with pytest.raises(ValueError, match="backtrack_halvings"):
        SuggestSettings().updated({"failed_configs": {"backtrack_halvings": 1}})


def test_the_config_dir_set_after_import_is_honoured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "suggest.toml").write_text("[probe]\nenabled = true\n")
    monkeypatch.setenv("JPO_CONFIG_DIR", str(tmp_path))
    assert load_suggest_settings().probe.enabled
    monkeypatch.delenv("JPO_CONFIG_DIR")
    assert not load_suggest_settings().probe.enabled
