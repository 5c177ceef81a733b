"""Where JPO finds its files: the configuration folder, the bundled policy, the checkout.

Every path here is resolved when it is asked for, never at import time, so setting
``$JPO_CONFIG_DIR`` after ``import jpo`` still takes effect.

An installed wheel ships the repository's ``configs/`` as ``jpo/configs/`` and the demo
workloads' ``examples/workloads/*/config.ini`` as ``jpo/example_workloads/`` (setup.py maps
them; pyproject.toml says why); a source checkout or editable install reads them in place.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent  # the checkout (examples/, configs/testsets/) in a source install
BUNDLED_POLICY_DIR = PACKAGE_DIR / "data" / "policy"
CONFIG_DIR_ENV = "JPO_CONFIG_DIR"
PACKAGED_CONFIG_DIR = PACKAGE_DIR / "configs"  # in a wheel install: the shipped configs/
PACKAGED_EXAMPLES_DIR = PACKAGE_DIR / "example_workloads"  # in a wheel: examples/workloads


def default_config_dir() -> Path:
    """Return the shipped configuration folder: the wheel's ``jpo/configs`` or the checkout's."""
    if PACKAGED_CONFIG_DIR.is_dir():
        return PACKAGED_CONFIG_DIR
    return REPO_ROOT / "configs"


def config_dir() -> Path:
    """Return JPO's configuration folder: ``$JPO_CONFIG_DIR`` or the shipped ``configs/``."""
    env = os.environ.get(CONFIG_DIR_ENV)
    if env:
        return Path(env)
    return default_config_dir()


def config_path(name: str) -> Path:
    """Return the path of one file (e.g. ``suggest.toml``) in the configuration folder."""
    return config_dir() / name


def example_workloads_dir() -> Path:
    """Return the folder of the catalog workloads' ``<name>/config.ini`` (``jpo demo``)."""
    if PACKAGED_EXAMPLES_DIR.is_dir():
        return PACKAGED_EXAMPLES_DIR
    return REPO_ROOT / "examples" / "workloads"
