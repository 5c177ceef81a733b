"""Evaluation: JPO against baseline tuners on simulated workloads, and its report."""
