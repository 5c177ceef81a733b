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
        raise ConfigError(
            f"{file}: cannot read settings ({err.strerror or err}); restore the file or pass "
            "another path (or set JPO_CONFIG_DIR to a folder holding it)"
        ) from err
    if file.suffix in (".yaml", ".yml"):
        return _parse_yaml(file, text)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{file}: not valid TOML ({err}); fix the line it names") from err


def _parse_yaml(file: Path, text: str) -> dict[str, Any]:
    import yaml  # only the training and serving configs are YAML (their extras ship pyyaml)

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{file}: not valid YAML ({err}); fix the line it names") from err
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
        where = _where(Path(file), section, tuple(first["loc"]))
        more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        value = f" = {first['input']!r}" if first["type"] != "missing" else ""
        hint = (
            "remove it or check its spelling against the shipped file"
            if first["type"] == "extra_forbidden"
            else "fix the value"
        )
        raise ConfigError(f"{where}{value}: {first['msg']}{more}; {hint}") from err


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
