"""Build hook: ship configs/ and the demo workloads as package data (pyproject.toml says why)."""

from setuptools import find_packages, setup

# Folder of the checkout -> the package it becomes in the wheel (read by jpo/paths.py); its
# files are package data (pyproject.toml [tool.setuptools.package-data]).
DATA_PACKAGES = {"jpo.configs": "configs", "jpo.example_workloads": "examples/workloads"}

setup(
    packages=[*find_packages(include=["jpo*"]), *DATA_PACKAGES],
    package_dir=DATA_PACKAGES,
)
