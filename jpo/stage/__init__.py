"""The CI stage (``jpo suggest``, ``jpo feedback``): one module per decision, in pipeline order.

- :mod:`~jpo.stage.suggest` — :func:`~jpo.stage.suggest.suggest`, the sequence itself;
  :mod:`~jpo.stage.result` its options and result; :mod:`~jpo.stage.settings`
  ``configs/suggest.toml``;
- :mod:`~jpo.stage.run_telemetry` — Prometheus, the run's summary and GPU count;
- :mod:`~jpo.stage.feedback` — a finished run scored against its suggestion;
  :mod:`~jpo.stage.record` the audit record's typed basis and outcome;
- :mod:`~jpo.stage.rollback` — rollback, return to the best (scored by
  :mod:`~jpo.stage.incumbent`), waiting, recovery: every move made without the policy;
- :mod:`~jpo.stage.guards` — failed-config memory (:mod:`~jpo.stage.failure_memory`,
  retried by :mod:`~jpo.stage.retry`), memory, hysteresis, approval;
  :mod:`~jpo.stage.probe` when the guards leave nothing;
- :mod:`~jpo.stage.write_audit` — the audit record, written with config.ini by
  :mod:`~jpo.stage.transaction` (crash-consistent) over :mod:`~jpo.stage.safe_write`,
  :mod:`~jpo.stage.audit` and :mod:`~jpo.stage.workspace`.
"""
