"""A wheel carries configs/ and the demo workloads: an install outside the checkout finds them.

The wheel is built from a copy of the sources (so the checkout gets no build/ folder),
unpacked into a temporary folder, and imported from there by a fresh interpreter whose
working folder is outside the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from jpo.paths import REPO_ROOT

SOURCES = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "jpo", "configs")

PROBE = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import jpo.paths as paths
from jpo.settings import Settings, load_settings
from jpo.workload.constraints import load_constraints
from jpo.sim.response import load_catalog
from jpo.cli.demo import DEMO_WORKLOADS, check_workloads

class Oracle(Settings):
    grid: dict
    refine: dict
    objective: dict

check_workloads(DEMO_WORKLOADS)
print(json.dumps({
    "package": paths.__file__,
    "config_dir": str(paths.config_dir()),
    "examples": str(paths.example_workloads_dir()),
    "constraints": load_constraints().source,
    "oracle_starts": load_settings(Oracle, "oracle.toml").refine["starts"],
    "profiles": len(load_catalog()),
}))
"""


@pytest.mark.slow  # builds a wheel (a few seconds on 2 cores, more on a loaded machine)
def test_wheel_install_outside_the_checkout_finds_its_configs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    shutil.copytree(REPO_ROOT / "examples" / "workloads", src / "examples" / "workloads")
    dist = tmp_path / "dist"
    build = ["pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src), "-w", str(dist)]
    subprocess.run(
        [sys.executable, "-m", *build],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = dist.glob("jpo-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {
        p.relative_to(REPO_ROOT / "configs").as_posix() for p in _files(REPO_ROOT / "configs")
    }
    assert shipped <= {
        n.removeprefix("jpo/configs/") for n in names if n.startswith("jpo/configs/")
    }
    assert "jpo/example_workloads/mnist-lenet/config.ini" in names

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JPO_CONFIG_DIR")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(site)],
        check=True,
        capture_output=True,
        text=True,
        cwd=away,
        env=env,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(got["package"]).is_relative_to(site), "the unpacked wheel was not imported"
    assert Path(got["config_dir"]) == site / "jpo" / "configs"
    assert Path(got["examples"]) == site / "jpo" / "example_workloads"
    assert Path(got["constraints"]) == site / "jpo" / "configs" / "constraints.toml"
    assert got["oracle_starts"] >= 0
    assert got["profiles"] == len(list((REPO_ROOT / "configs" / "workloads").glob("*.toml")))


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
