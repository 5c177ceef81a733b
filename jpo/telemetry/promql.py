"""Safe PromQL: escaped label values and the metric catalog's templates, rendered.

Queries are built by JPO, never by pasting user values into strings. Every label value
passes through :func:`escape_label_value`, which writes it as a PromQL double-quoted
string under Go's escaping rules (PromQL strings are Go string literals, see
https://prometheus.io/docs/prometheus/latest/querying/basics/#string-literals), so a value
can never close the string and change the query's shape. Invalid UTF-8 is rejected.

The templates live in ``configs/metrics.toml`` (see that file for the placeholders);
:func:`load_catalog` reads it and :meth:`MetricCatalog.render` fills one template.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field

from jpo.errors import ConfigError
from jpo.settings import Settings, config_file, read_config, validate_settings
from jpo.telemetry.schema import METRICS
from jpo.workload.types import WorkloadKey

WORKLOAD_FIELDS: tuple[str, ...] = ("dataset", "model", "framework", "run_id")
"""Canonical workload columns, in the order queries group by them."""

RUNS = "__runs__"
GPUS = "__gpus__"
"""Pseudo-metric name under which :meth:`MetricCatalog.render` renders ``[runs]``."""

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_PLACEHOLDER = re.compile(r"\{\{([a-zA-Z_][a-zA-Z0-9_]*)\}\}")
_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
_SIMPLE_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_SIMPLE_ESCAPES |= {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\v": "\\v"}


def escape_label_value(value: str | bytes) -> str:
    r"""Return ``value`` as a PromQL double-quoted string literal, quotes included.

    Backslash, double quote and the C escapes (``\\n``, ``\\t``, ...) are backslash-escaped;
    other control characters (C0, DEL, C1) become ``\\xHH`` / ``\\uHHHH``; printable
    non-ASCII is kept as UTF-8. Bytes must be valid UTF-8.

    Raises:
        ConfigError: the value is not valid UTF-8 (or contains lone surrogates).
    """
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"label value {value!r} is not valid UTF-8; Prometheus label values must be"
                " UTF-8: fix the value at its source"
            ) from err
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ConfigError(
            f"label value {value!r} contains a lone surrogate and is not valid UTF-8;"
            " fix the value at its source"
        ) from err
    out = ['"']
    for ch in value:
        if ch in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        elif 0x80 <= ord(ch) <= 0x9F or ch in "\u2028\u2029":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def check_label_name(name: str) -> str:
    """Return ``name`` if it is a valid Prometheus label name, else raise ConfigError."""
    if not _LABEL_NAME.match(name) or name.startswith("__"):
        raise ConfigError(
            f"{name!r} is not a usable Prometheus label name (letters, digits, _; not"
            " starting with a digit or __): fix it in configs/metrics.toml"
        )
    return name


def matcher(label: str, value: str, op: str = "=") -> str:
    """Return one escaped label matcher, e.g. ``label_model="resnet18"``."""
    if op not in ("=", "!="):
        raise ConfigError(f"matcher operator {op!r} is not supported; use = or !=")
    return f"{check_label_name(label)}{op}{escape_label_value(value)}"


@dataclass(frozen=True, slots=True)
class MetricTemplate:
    """One canonical metric's PromQL template and the label set its series carry."""

    name: str
    label_set: str
    query: str
    description: str


@dataclass(frozen=True, slots=True)
class QuerySettings:
    """The ``[query]`` and ``[client]`` tunables of the catalog (see metrics.toml)."""

    rate_window: str
    lookback: str
    discovery_step_s: float
    run_step_s: float
    max_points_per_series: int
    min_points: int
    timeout_s: float
    retries: int
    backoff_s: float
    max_parallel_queries: int = 1


@dataclass(frozen=True, slots=True)
class MetricCatalog:
    """The parsed metric catalog: label sets, snippets, templates and query settings."""

    path: Path
    label_sets: Mapping[str, Mapping[str, str]]
    snippets: Mapping[str, str]
    metrics: Mapping[str, MetricTemplate]
    settings: QuerySettings
    runs: MetricTemplate
    runs_series: str = "kube_pod_labels"
    gpus: MetricTemplate | None = None
    """Optional ``[gpus]`` template: GPUs of a run's pods (GPU-hours); None: unknown."""
    run_labels: tuple[str, ...] = ()
    """``[runs] run_labels``: pod labels naming a run, first non-empty wins; () = run_id only."""

    def labels(self, label_set: str) -> tuple[str, ...]:
        """Return the Prometheus label names of ``label_set`` in WORKLOAD_FIELDS order."""
        names = self.label_sets[label_set]
        return tuple(names[field] for field in WORKLOAD_FIELDS)

    def run_naming_labels(self, label_set: str) -> tuple[str, ...]:
        """Return the pod labels that may name a run: ``run_labels``, else the set's run_id."""
        return self.run_labels or (self.label_sets[label_set]["run_id"],)

    def selector(
        self,
        label_set: str,
        key: WorkloadKey | None = None,
        run_id: str | None = None,
        *,
        with_run: bool = True,
    ) -> str:
        """Return escaped matchers (no braces) selecting one workload/run, or all runs.

        ``with_run=False`` leaves out the run label (the run is matched after it is derived
        from ``run_labels``, see :meth:`pod_labels_series`).
        """
        names = self.label_sets[label_set]
        wanted: dict[str, str | None] = {"dataset": None, "model": None, "framework": None}
        if key is not None:
            wanted = {"dataset": key.dataset, "model": key.model, "framework": key.framework}
        if with_run:
            wanted["run_id"] = run_id
        parts = [
            matcher(names[field], value) if value is not None else matcher(names[field], "", "!=")
            for field, value in wanted.items()
        ]
        return ",".join(parts)

    def pod_labels_series(
        self,
        label_set: str,
        key: WorkloadKey | None = None,
        run_id: str | None = None,
        *,
        timestamps: bool = False,
    ) -> str:
        """Return the PromQL of the runs' pod-label series (``{{pod_labels_series}}``).

        Without ``run_labels``: ``kube_pod_labels{<selector>}``. With them, each pod's run
        label is the first non-empty of ``run_labels`` (label_join them with ``;``, then
        take the first non-empty part with label_replace), and the run is matched after
        that: ``and on (run label)`` a one-series vector for one run, ``unless on (run
        label) vector(1)`` to drop pods that name no run. ``timestamps`` wraps the raw
        selector in ``timestamp()`` first, so values stay the samples' own timestamps.
        """
        if not self.run_labels:
            inner = f"{self.runs_series}{{{self.selector(label_set, key, run_id)}}}"
            return f"timestamp({inner})" if timestamps else inner
        run_label = self.label_sets[label_set]["run_id"]
        inner = f"{self.runs_series}{{{self.selector(label_set, key, with_run=False)}}}"
        if timestamps:
            inner = f"timestamp({inner})"
        sources = ", ".join(f'"{name}"' for name in self.run_labels)
        joined = f'label_join({inner}, "{_JOIN_LABEL}", ";", {sources})'
        derived = f'label_replace({joined}, "{run_label}", "$1", "{_JOIN_LABEL}", ";*([^;]+).*")'
        if run_id is None:
            return f"({derived} unless on ({run_label}) vector(1))"
        value = escape_label_value(run_id.replace("$", "$$"))
        one = f'label_replace(vector(1), "{run_label}", {value}, "", "")'
        return f"({derived} and on ({run_label}) {one})"

    def render(
        self,
        metric: str,
        key: WorkloadKey | None = None,
        run_id: str | None = None,
    ) -> str:
        """Return the PromQL of ``metric`` for one workload (and run), or for all of them."""
        if metric == RUNS:
            template = self.runs
        elif metric == GPUS and self.gpus is not None:
            template = self.gpus
        elif metric not in self.metrics:
            raise ConfigError(
                f"metric {metric!r} has no template in {self.path}; known:"
                f" {', '.join(sorted(self.metrics))}"
            )
        else:
            template = self.metrics[metric]
        values = {
            **self.snippets,
            "by": ", ".join(self.labels(template.label_set)),
            "rate_window": self.settings.rate_window,
            "discovery_window": duration(self.settings.discovery_step_s),
            "run_window": duration(self.settings.run_step_s),
        }
        verbatim = {"selector": self.selector(template.label_set, key, run_id)}
        if _PLACEHOLDER_POD_SERIES & set(_expanded_names(template.query, values)):
            verbatim["pod_labels_series"] = self.pod_labels_series(template.label_set, key, run_id)
            verbatim["pod_labels_timestamps"] = self.pod_labels_series(
                template.label_set, key, run_id, timestamps=True
            )
        return render_template(
            template.query, values, verbatim=verbatim, where=f"{self.path} [metrics.{metric}]"
        )


_JOIN_LABEL = "jpo_run_labels"
"""Scratch label holding the joined candidate run labels (dropped by the templates' by())."""

_PLACEHOLDER_POD_SERIES = {"pod_labels_series", "pod_labels_timestamps"}


def _expanded_names(template: str, values: Mapping[str, str]) -> set[str]:
    """Return every placeholder name ``template`` uses, through the snippets it includes."""
    seen: set[str] = set()
    todo = [template]
    for _ in range(10):
        names = {n for text in todo for n in _PLACEHOLDER.findall(text)} - seen
        if not names:
            break
        seen |= names
        todo = [values[n] for n in names if n in values]
    return seen


def duration(seconds: float) -> str:
    """Return ``seconds`` as a Prometheus duration in whole milliseconds, e.g. ``15000ms``."""
    ms = round(seconds * 1000.0)
    if ms < 1:
        raise ConfigError(f"a query window must be at least 1 ms, got {seconds!r} s")
    return f"{ms}ms"


def render_template(
    template: str,
    values: Mapping[str, str],
    *,
    verbatim: Mapping[str, str] | None = None,
    where: str = "template",
) -> str:
    """Fill ``{{name}}`` placeholders: ``values`` recursively (snippets), then ``verbatim``.

    ``verbatim`` values (the escaped selector) are substituted last, in one pass, so text
    inside a label value that looks like a placeholder is never expanded.
    """
    verbatim = verbatim or {}
    text = template
    for _ in range(10):
        names = set(_PLACEHOLDER.findall(text))
        missing = names - set(values) - set(verbatim)
        if missing:
            raise ConfigError(
                f"{where}: unknown placeholder(s) {sorted(missing)}; use selector, by,"
                " rate_window, discovery_window, run_window or a name from [snippets]"
            )
        if not names & set(values):
            return _PLACEHOLDER.sub(lambda m: verbatim[m.group(1)], text)
        text = _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)
    raise ConfigError(f"{where}: placeholders nest more than 10 deep (a snippet uses itself?)")


class _QueryTable(Settings):
    """``[query]`` of metrics.toml."""

    model_config = ConfigDict(strict=True)
    rate_window: str
    lookback: str
    discovery_step_s: float
    run_step_s: float
    max_points_per_series: int
    min_points: int


class _ClientTable(Settings):
    """``[client]`` of metrics.toml."""

    model_config = ConfigDict(strict=True)
    timeout_s: float
    retries: int
    backoff_s: float
    max_parallel_queries: int


class _LabelSet(Settings):
    """One ``[label_sets.<name>]``: the label carrying each workload field."""

    model_config = ConfigDict(strict=True)
    dataset: str
    model: str
    framework: str
    run_id: str


class _Template(Settings):
    """One ``[metrics.<name>]`` or ``[gpus]`` template."""

    model_config = ConfigDict(strict=True)
    label_set: str
    query: str
    description: str = ""


class _RunsTable(Settings):
    """``[runs]``: run discovery."""

    model_config = ConfigDict(strict=True)
    label_set: str
    series: str
    query: str
    run_labels: Any = Field(default_factory=list)  # checked by _run_labels (its message)


class _CatalogFile(Settings):
    """The whole of metrics.toml."""

    query: _QueryTable
    client: _ClientTable
    label_sets: dict[str, _LabelSet] = Field(default_factory=dict)
    snippets: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, _Template] = Field(default_factory=dict)
    runs: _RunsTable
    gpus: _Template | None = None


def _squash(promql: str) -> str:
    return " ".join(promql.split())


def _template(
    name: str,
    entry: _Template | _RunsTable,
    description: str,
    label_sets: Mapping[str, object],
    where: str,
) -> MetricTemplate:
    """Return one template, its label set checked against ``[label_sets]``."""
    if entry.label_set not in label_sets:
        raise ConfigError(f"{where}: label_set {entry.label_set!r} is not defined in [label_sets]")
    return MetricTemplate(name, entry.label_set, _squash(entry.query), description)


def _check_settings(settings: QuerySettings, path: Path) -> None:
    """Raise ConfigError for query settings out of range."""
    q, c = f"{path} [query]", f"{path} [client]"
    if settings.max_parallel_queries < 1 or settings.retries < 0 or settings.timeout_s <= 0:
        raise ConfigError(f"{c}: need max_parallel_queries >= 1, retries >= 0 and timeout_s > 0")
    for name in ("rate_window", "lookback"):
        if not _DURATION.match(getattr(settings, name)):
            raise ConfigError(f"{q}: {name} must be a Prometheus duration such as 1m or 7d")


def load_catalog(path: str | Path | None = None) -> MetricCatalog:
    """Read and validate the metric catalog (default: ``configs/metrics.toml``)."""
    path = config_file("metrics.toml", path)
    raw = validate_settings(_CatalogFile, read_config(path), path)
    settings = QuerySettings(**raw.query.model_dump(), **raw.client.model_dump())
    _check_settings(settings, path)
    label_sets = {
        name: {f: check_label_name(getattr(labels, f)) for f in WORKLOAD_FIELDS}
        for name, labels in raw.label_sets.items()
    }
    # Whitespace in the configured PromQL is collapsed at load time (templates are written
    # over several lines); escaped label values are substituted later, verbatim.
    snippets = {k: _squash(v) for k, v in raw.snippets.items()}
    metrics: dict[str, MetricTemplate] = {}
    for name, entry in raw.metrics.items():
        where = f"{path} [metrics.{name}]"
        if name not in METRICS:
            raise ConfigError(f"{where}: {name!r} is not a canonical metric (schema.METRICS)")
        metrics[name] = _template(name, entry, entry.description, label_sets, where)
    if not metrics:
        raise ConfigError(f"{path}: no [metrics.*] templates defined")
    where = f"{path} [runs]"
    runs = raw.runs
    runs_template = _template(RUNS, runs, "run discovery", label_sets, where)
    if not _LABEL_NAME.match(runs.series.replace(":", "_")):
        raise ConfigError(f"{where}: series {runs.series!r} is not a metric name")
    gpus_template = None
    if raw.gpus is not None:
        gpus_template = _template(GPUS, raw.gpus, "GPUs", label_sets, f"{path} [gpus]")
    return MetricCatalog(
        path,
        label_sets,
        snippets,
        metrics,
        settings,
        runs_template,
        runs.series,
        gpus_template,
        _run_labels(runs.run_labels, where),
    )


def _run_labels(value: object, where: str) -> tuple[str, ...]:
    """Validate ``[runs] run_labels``: a list of distinct label names."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(
            f"{where}: run_labels must be a list of label names, e.g. "
            '["label_run_id", "label_job_name"]'
        )
    names = tuple(check_label_name(v) for v in value)
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: run_labels lists a label twice: {list(names)}")
    return names


def parse_duration_s(text: str) -> float:
    """Return a Prometheus duration (``90s``, ``1h30m``, ``7d``) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    if not _DURATION.match(text):
        raise ConfigError(f"{text!r} is not a duration such as 15s, 24h or 7d")
    return float(sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)(ms|s|m|h|d|w|y)", text)))
