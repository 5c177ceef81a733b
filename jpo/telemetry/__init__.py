"""Telemetry: PromQL, the Prometheus client, metric sources, the history store and the exporter."""
