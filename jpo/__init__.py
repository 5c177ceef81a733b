"""JPO: job-parameter optimizer for recurring training workloads."""

__version__ = "0.1.0"
