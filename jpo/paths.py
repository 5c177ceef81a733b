"""Where JPO finds its files: the configuration folder, the bundled policy, the checkout."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent  # the checkout (examples/, configs/testsets/) in a source install
BUNDLED_POLICY_DIR = PACKAGE_DIR / "data" / "policy"
CONFIG_DIR_ENV = "JPO_CONFIG_DIR"


def config_dir() -> Path:
    """Return JPO's configuration folder: ``$JPO_CONFIG_DIR`` or the repository's ``configs/``."""
    env = os.environ.get(CONFIG_DIR_ENV)
    if env:
        return Path(env)
    return REPO_ROOT / "configs"


def config_path(name: str) -> Path:
    """Return the path of one file (e.g. ``suggest.toml``) in the configuration folder."""
    return config_dir() / name
