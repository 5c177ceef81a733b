"""The workload file (config.ini) and the hard constraints every suggestion stays inside."""
