"""JPO's Grafana dashboard (``configs/k8s/dashboards/jpo-fleet.json``): its panels' queries.

The dashboard shows the fleet from the metrics JPO exports: ``jpo metrics`` (suggestions
by decision, rollbacks, rewards, the policy behind each suggestion: :mod:`jpo.reporting.monitoring`)
and the Serve replicas through Ray's metrics export (the served policy version, answered
suggestions: :mod:`jpo.serving.app`; Ray Serve's own latency histogram). The helpers here let
tests and operators list every panel query, the metric names it reads, and run it against
a Prometheus with the dashboard's variables filled in.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jpo.errors import ConfigError
from jpo.paths import config_dir

__all__ = ["PanelQuery", "instantiate", "metric_names", "panel_queries"]

_DASHBOARD = ("k8s", "dashboards", "jpo-fleet.json")
"""The dashboard's place in the configuration folder (a Grafana file, not JPO settings)."""
_METRIC = re.compile(r"\b(?:jpo|ray)_[a-z0-9_]+\b")
_VARIABLES = {"$dataset": ".*"}
"""Values the dashboard's template variables take when a query runs outside Grafana."""


@dataclass(frozen=True)
class PanelQuery:
    """One query of one panel."""

    panel: str
    ref_id: str
    expr: str


def __getattr__(name: str) -> Path:
    """Resolve ``DASHBOARD_PATH`` when read (``$JPO_CONFIG_DIR`` may change after import)."""
    if name == "DASHBOARD_PATH":
        return config_dir().joinpath(*_DASHBOARD)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_dashboard(path: Path | None = None) -> dict[str, Any]:
    """Return the dashboard JSON (default: ``configs/k8s/dashboards/jpo-fleet.json``).

    Raises:
        ConfigError: the file is missing or not JSON.
    """
    path = path if path is not None else config_dir().joinpath(*_DASHBOARD)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the dashboard ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("panels"), list):
        raise ConfigError(f"{path}: not a Grafana dashboard (no panels list)")
    return data


def panel_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    """Return every query of every panel (rows' nested panels included)."""
    out: list[PanelQuery] = []
    stack = list(dashboard.get("panels", []))
    while stack:
        panel = stack.pop(0)
        stack.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            out.append(PanelQuery(str(panel.get("title", "")), str(target.get("refId", "")),
                                  str(target.get("expr", ""))))  # fmt: skip
    return out


def metric_names(expr: str) -> set[str]:
    """Return the JPO and Ray metric names a PromQL expression reads."""
    return set(_METRIC.findall(expr))


def instantiate(expr: str) -> str:
    """Return the expression with the dashboard's template variables filled in."""
    for name, value in _VARIABLES.items():
        expr = expr.replace(name, value)
    return expr
