"""The one settings loader: file lookup, JPO_CONFIG_DIR, and errors that name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from jpo.errors import ConfigError
from jpo.paths import config_dir
from jpo.settings import Settings, load_settings


class Limits(Settings):
    timeout_s: float = 3.0
    retries: int = 2


class Grid(Settings):
    limits: Limits = Limits()
    name: str = "x"


def test_section_is_validated_and_defaults_fill_in(tmp_path: Path) -> None:
    f = tmp_path / "a.toml"
    f.write_text("[outer.limits]\nretries = 5\n")
    got = load_settings(Limits, "a.toml", f, section="outer.limits")
    assert got == Limits(retries=5)


def test_unknown_key_names_file_table_and_key(tmp_path: Path) -> None:
    f = tmp_path / "a.toml"
    f.write_text("name = 'y'\n[limits]\nretires = 5\n")
    with pytest.raises(ConfigError) as err:
        load_settings(Grid, "a.toml", f)
    msg = str(err.value)
    assert str(f) in msg and "[limits] retires" in msg and "spelling" in msg


def test_bad_type_names_the_value(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("limits:\n  timeout_s: soon\n")
    with pytest.raises(ConfigError, match=r"\[limits\] timeout_s = 'soon'"):
        load_settings(Grid, "a.yaml", f)


def test_broken_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    f = tmp_path / "a.toml"
    f.write_text("[limits\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(Grid, "a.toml", f)
    with pytest.raises(ConfigError, match="cannot read settings"):
        load_settings(Grid, "a.toml", tmp_path / "nope.toml")


def test_config_dir_env_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "grid.toml").write_text("name = 'from-env'\n")
    monkeypatch.setenv("JPO_CONFIG_DIR", str(tmp_path))
    assert config_dir() == tmp_path
    assert load_settings(Grid, "grid.toml").name == "from-env"
    assert load_settings(Grid, "absent.toml", missing_ok=True) == Grid()


def test_settings_are_frozen() -> None:
    with pytest.raises(ValueError):
        Limits().retries = 3  # type: ignore[misc]
