"""JPO's own Prometheus metrics, derived from the audit log(s) (SPEC §1, "Monitoring").

``jpo suggest`` and ``jpo feedback`` are short-lived CI processes, so they do not serve
metrics themselves; every decision they make is already one line of the append-only audit
log. :class:`AuditLogCollector` turns those lines into metrics at scrape time, served by
``jpo metrics --port`` (a small long-running exporter beside the logs) or written once per
pipeline run with ``jpo metrics --textfile`` for node-exporter's textfile collector.

Metrics (labels ``dataset``, ``model``, ``framework`` on every per-workload series):

=====================================  =======  ==============================================
name                                   type     meaning
=====================================  =======  ==============================================
``jpo_suggestions_total``              counter  suggestions recorded, by ``decision``:
                                                ``changed``, ``rollback``, ``unchanged``,
                                                ``needs_approval``, ``other``
``jpo_rollbacks_total``                counter  rollbacks to last known-good values
``jpo_feedback_total``                 counter  runs scored by ``jpo feedback``, by
                                                ``verdict`` (``ok``, ``degraded``)
``jpo_last_reward``                    gauge    reward of the newest scored run
``jpo_last_suggestion_timestamp_seconds`` gauge Unix time of the newest suggestion
``jpo_policy_info``                    gauge    1, labelled with the ``policy_version`` and
                                                ``source`` of the newest suggestion
``jpo_audit_log_up``                   gauge    per ``path``: 1 if the log was read, 0 if it
                                                is corrupt or unreadable (then its series
                                                are absent, never zero)
=====================================  =======  ==============================================
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from jpo.errors import JpoError
from jpo.stage.audit import AuditRecord, read_log

__all__ = [
    "AuditLogCollector",
    "decision_of",
    "render_metrics",
    "serve_metrics",
    "write_textfile",
]

log = logging.getLogger(__name__)

WORKLOAD_LABELS = ("dataset", "model", "framework")

DECISIONS = ("changed", "rollback", "unchanged", "needs_approval", "other")
"""Values of the ``decision`` label, from the record's ``reason`` (jpo.stage.suggest)."""


def decision_of(record: AuditRecord) -> str:
    """Return the ``decision`` label of one suggestion record."""
    reason = record.reason
    if reason == "policy" and record.changed:
        return "changed"
    if reason.startswith("rollback"):
        return "rollback"
    if reason.startswith("unchanged"):
        return "unchanged"
    if reason.startswith("needs approval"):
        return "needs_approval"
    return "other"


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """The audit records of one log, keyed by the file's (mtime, size) when read."""

    stamp: tuple[int, int]
    records: tuple[AuditRecord, ...]


class AuditLogCollector(Collector):
    """A prometheus_client collector reading audit logs at each scrape (cached by mtime)."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        self.paths = tuple(Path(p) for p in paths)
        self._cache: dict[Path, _Snapshot] = {}

    def _records(self, path: Path) -> tuple[AuditRecord, ...] | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return ()  # a log nobody has written yet is empty, not broken
        except OSError as err:
            log.warning("%s: cannot stat the audit log: %s", path, err)
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        cached = self._cache.get(path)
        if cached is not None and cached.stamp == stamp:
            return cached.records
        try:
            audit_log = read_log(path)
        except (JpoError, OSError) as err:
            log.warning("%s: audit log not exported: %s", path, err)
            return None
        if audit_log.bad and not audit_log.records:
            log.warning("%s: not an audit log: %s", path, audit_log.bad_summary())
            return None
        if audit_log.bad:
            # The CI stage quarantines such lines on its next run; until then export the rest.
            log.warning("%s: unreadable lines skipped: %s", path, audit_log.bad_summary())
        records = tuple(audit_log.records)
        self._cache[path] = _Snapshot(stamp, records)
        return records

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """Yield JPO's metric families (module docstring)."""
        up = GaugeMetricFamily(
            "jpo_audit_log_up", "1 if the audit log was read, 0 if unreadable", labels=["path"]
        )
        records: list[AuditRecord] = []
        for path in self.paths:
            got = self._records(path)
            up.add_metric([str(path)], 0.0 if got is None else 1.0)
            records.extend(got or ())
        yield up
        yield from _families(records)


def _families(records: Iterable[AuditRecord]) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    suggestions: Counter[tuple[str, ...]] = Counter()
    rollbacks: Counter[tuple[str, ...]] = Counter()
    feedback: Counter[tuple[str, ...]] = Counter()
    newest: dict[tuple[str, ...], AuditRecord] = {}
    newest_scored: dict[tuple[str, ...], AuditRecord] = {}
    for r in records:
        key: tuple[str, ...] = (r.dataset, r.model, r.framework)
        decision = decision_of(r)
        suggestions[(*key, decision)] += 1
        if decision == "rollback":
            rollbacks[key] += 1
        if key not in newest or r.timestamp >= newest[key].timestamp:
            newest[key] = r
        reward = (r.outcome or {}).get("reward")
        if isinstance(reward, int | float):
            feedback[(*key, "degraded" if (r.outcome or {}).get("degraded") else "ok")] += 1
            if key not in newest_scored or r.timestamp >= newest_scored[key].timestamp:
                newest_scored[key] = r

    labels = list(WORKLOAD_LABELS)
    fam_s = CounterMetricFamily(
        "jpo_suggestions", "Suggestions recorded, by decision", labels=[*labels, "decision"]
    )
    for values, n in sorted(suggestions.items()):
        fam_s.add_metric(list(values), n)
    fam_r = CounterMetricFamily("jpo_rollbacks", "Rollbacks to last known-good", labels=labels)
    for values, n in sorted(rollbacks.items()):
        fam_r.add_metric(list(values), n)
    fam_f = CounterMetricFamily(
        "jpo_feedback", "Runs scored by jpo feedback, by verdict", labels=[*labels, "verdict"]
    )
    for values, n in sorted(feedback.items()):
        fam_f.add_metric(list(values), n)
    fam_reward = GaugeMetricFamily(
        "jpo_last_reward", "Reward of the newest scored run", labels=labels
    )
    for key, r in sorted(newest_scored.items()):
        fam_reward.add_metric(list(key), float((r.outcome or {})["reward"]))
    fam_ts = GaugeMetricFamily(
        "jpo_last_suggestion_timestamp_seconds", "Unix time of the newest suggestion", labels=labels
    )
    fam_policy = GaugeMetricFamily(
        "jpo_policy_info",
        "Policy behind the newest suggestion (value 1)",
        labels=[*labels, "policy_version", "source"],
    )
    for key, r in sorted(newest.items()):
        fam_ts.add_metric(list(key), r.timestamp.timestamp())
        fam_policy.add_metric([*key, r.policy_version, r.source], 1.0)
    yield from (fam_s, fam_r, fam_f, fam_reward, fam_ts, fam_policy)


def _registry(paths: Sequence[str | os.PathLike[str]]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AuditLogCollector(paths))
    return registry


def render_metrics(paths: Sequence[str | os.PathLike[str]]) -> str:
    """Return the metrics of the given audit logs in Prometheus text format."""
    return generate_latest(_registry(paths)).decode("utf-8")


def write_textfile(out: str | os.PathLike[str], paths: Sequence[str | os.PathLike[str]]) -> None:
    """Write the metrics atomically to ``out`` (node-exporter textfile collector format)."""
    write_to_textfile(str(out), _registry(paths))


def serve_metrics(
    paths: Sequence[str | os.PathLike[str]], *, port: int, addr: str = "0.0.0.0"
) -> tuple[object, object]:
    """Serve the metrics on ``addr:port/metrics`` from a thread; return (server, thread)."""
    from prometheus_client import start_http_server

    return start_http_server(port, addr=addr, registry=_registry(paths))
