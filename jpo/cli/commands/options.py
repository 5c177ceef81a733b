"""The CLI's one option vocabulary, and the old spellings kept as hidden aliases.

Across commands the same thing has the same name: ``--config`` the workload's
config.ini, ``--log`` the audit log, ``--history`` the Parquet history store,
``--prometheus`` the Prometheus URL, ``--policy`` a local policy artifact, ``--json``
machine output. Old spellings (``jpo check PATH``, ``jpo log --path``, ``jpo history
show/pull --out``) still work for one release: hidden from ``--help``, with a note on
stderr naming the new spelling (silenced by ``-q``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, TypeVar

import typer

from jpo.errors import ConfigError

__all__ = [
    "AuditLogOption",
    "JsonOption",
    "MetricCatalogOption",
    "WorkloadConfigOption",
    "deprecated_alias",
]

# The options several commands share, declared once so their names and help agree.
WorkloadConfigOption = Annotated[Path, typer.Option("--config", help="The workload's config.ini.")]
AuditLogOption = Annotated[
    Path | None,
    typer.Option("--log", help="Audit log (default: $JPO_AUDIT_LOG or .jpo/audit.jsonl)."),
]
MetricCatalogOption = Annotated[
    Path | None,
    typer.Option("--metrics", help="Metric catalog (default configs/metrics.toml)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]

T = TypeVar("T")


def deprecated_alias(value: T | None, old_value: T | None, *, new: str, old: str) -> T | None:
    """Return ``value``, or ``old_value`` given under the old spelling (with a note).

    Raises:
        ConfigError: both spellings were given with different values.
    """
    if old_value is None:
        return value
    from jpo.console import print_note

    if value is not None and value != old_value:
        raise ConfigError(f"{old} and {new} name the same thing; fix: give only {new}")
    print_note(f"note: {old} is the old spelling of {new} and goes away next release; use {new}")
    return old_value
