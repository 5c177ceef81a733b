"""The one loader of JPO's settings files (``configs/*.toml`` and ``*.yaml``) into pydantic models.

Every settings file is read here: the file is found in the configuration folder
(:func:`jpo.paths.config_dir`, ``$JPO_CONFIG_DIR`` honoured) unless a path is given,
parsed by its suffix, and validated by a frozen pydantic model that forbids unknown keys.
Every failure is a :class:`~jpo.errors.ConfigError` naming the file, the table and key
at fault and what would fix it.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from jpo.errors import ConfigError
from jpo.paths import config_path

__all__ = ["Settings", "config_file", "load_settings", "read_config", "validate_settings"]


class Settings(BaseModel):
    """Base of every settings model: frozen, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


M = TypeVar("M", bound=BaseModel)


def config_file(name: str, path: str | os.PathLike[str] | None = None) -> Path:
    """Return ``path`` if given, else the file ``name`` in the configuration folder."""
    return Path(path) if path is not None else config_path(name)


def read_config(file: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse one TOML or YAML settings file into a dict; unreadable files are ConfigError."""
    file = Path(file)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        reason = "file not found" if isinstance(err, FileNotFoundError) else err.strerror or err
        raise ConfigError(
            f"{file}: cannot read settings ({reason}); restore the file or pass "
            "another path (or set JPO_CONFIG_DIR to a folder holding it)"
        ) from err
    if file.suffix in (".yaml", ".yml"):
        return _parse_yaml(file, text)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(
            f"{file}: invalid TOML ({err}); cannot read settings that are not valid TOML: "
            "fix the line it names"
        ) from err


def _parse_yaml(file: Path, text: str) -> dict[str, Any]:
    import yaml  # only the training and serving configs are YAML (their extras ship pyyaml)

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(
            f"{file}: invalid YAML ({err}); cannot read settings that are not valid YAML: "
            "fix the line it names"
        ) from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{file}: the top level must be a mapping of keys, not {type(data).__name__}"
        )
    return data


def _where(file: Path, section: str | None, loc: tuple[int | str, ...]) -> str:
    keys = [str(p) for p in loc]
    if section:
        keys = [*section.split("."), *keys]
    if not keys:
        return str(file)
    if len(keys) == 1:
        return f"{file}: {keys[0]}"
    return f"{file}: [{'.'.join(keys[:-1])}] {keys[-1]}"


_PHRASES = {
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
}
"""Plain words for the commonest pydantic error types (the pydantic message follows)."""


def _unknown(file: Path, section: str | None, loc: tuple[int | str, ...], value: Any) -> str:
    """Describe an unknown key or table: ``unknown section [a.b]`` / ``unknown key 'k'``."""
    keys = [*(section.split(".") if section else ()), *(str(p) for p in loc)]
    if isinstance(value, dict):
        return f"{file}: unknown section [{'.'.join(keys)}]"
    table = f" in [{'.'.join(keys[:-1])}]" if len(keys) > 1 else ""
    return f"{_where(file, section, loc)}: unknown key {keys[-1]!r}{table}"


def validate_settings(
    model: type[M],
    data: Mapping[str, Any],
    file: str | os.PathLike[str],
    section: str | None = None,
) -> M:
    """Validate ``data`` (read from ``file``) as ``model``; errors name the file and key."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as err:
        first = err.errors()[0]
        loc = tuple(first["loc"])
        more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        if first["type"] == "extra_forbidden":
            head = _unknown(Path(file), section, loc, first["input"])
            hint = "remove it or check its spelling against the shipped file"
            raise ConfigError(f"{head}{more}; {hint}") from err
        where = _where(Path(file), section, loc)
        value = f" = {first['input']!r}" if first["type"] != "missing" else ""
        phrase = _PHRASES.get(first["type"])
        msg = f"{phrase} ({first['msg']})" if phrase else first["msg"]
        raise ConfigError(f"{where}{value}: {msg}{more}; fix the value") from err


def load_settings(
    model: type[M],
    name: str,
    path: str | os.PathLike[str] | None = None,
    *,
    section: str | None = None,
    missing_ok: bool = False,
) -> M:
    """Load settings file ``name`` (or ``path``), optionally one dotted table of it, as ``model``.

    With ``missing_ok`` a default file that does not exist gives the model's defaults;
    a path the caller named must always exist.
    """
    file = config_file(name, path)
    if missing_ok and path is None and not file.is_file():
        return model()
    data: Any = read_config(file)
    for part in section.split(".") if section else ():
        data = data.get(part, {}) if isinstance(data, dict) else data
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: [{section}] must be a table; see the shipped file")
    return validate_settings(model, data, file, section)
