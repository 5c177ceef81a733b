"""Workload response model, simulated workloads and the Gymnasium replay env."""
