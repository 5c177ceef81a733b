"""scripts/test.sh (what CI runs): every step runs, in two lanes or one after another.

The script runs against a stand-in virtual env whose tools only record their arguments, so
the lanes, the output of each step and the exit status are checked in seconds.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STEPS = (
    "lint: ruff",
    "lint: mypy",
    "lint: import layers (lint-imports)",
    "lint: import cycles",
    "tier 1 of 5: fast (pytest)",
    "tier 2 of 5: sim (pytest -m sim)",
    "tier 3 of 5: research (pytest -m research)",
    'tier 4 of 5: slow (pytest -m "slow and not research and not rerun")',
    "tier 5 of 5: rerun (pytest -m rerun)",
)
TOOL = """#!/usr/bin/env bash
echo "ran $(basename "$0") $*"
sleep 0.3
echo "cache $JPO_ORACLE_CACHE"
case " $* " in *" $FAKE_FAIL "*) exit 1;; esac
"""


def _fake_venv(root: Path) -> Path:
    """A virtual env whose python, ruff, mypy and lint-imports only say what they ran."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("python", "ruff", "mypy", "lint-imports"):
        path = bin_dir / tool
        path.write_text(TOOL, encoding="utf-8")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    # scripts/setup.sh installs nothing when the stamp matches pyproject.toml
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    (root / ".jpo-installed").write_text(digest + "\n", encoding="utf-8")
    return root


def _run(tmp_path: Path, lanes: str, fail: str = "-") -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "JPO_VENV": str(_fake_venv(tmp_path / f"venv-{lanes}")),
        "JPO_TEST_LANES": lanes,
        "FAKE_FAIL": fail,
        "TMPDIR": str(tmp_path),
    }
    env.pop("JPO_ORACLE_CACHE", None)
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "test.sh")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _blocks(out: str) -> dict[str, list[str]]:
    """Each step's output lines, between its header and its result line."""
    blocks: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("test: == ") and line.endswith(": started"):
            assert current is None, f"{line!r} inside {current!r}"  # never inside a step
            continue
        done = re.match(r"test: == (.+): (passed|FAILED \(\d+\)) in \d+ s$", line)
        if done:
            assert done.group(1) == current, f"{line!r} closes {current!r}"
            current = None
        elif line.startswith("test: == "):
            assert current is None, f"{line!r} opens inside {current!r}"
            current = line.removeprefix("test: == ")
            blocks[current] = []
        elif current is not None:
            blocks[current].append(line)
    return blocks


@pytest.mark.skipif(shutil.which("flock") is None, reason="util-linux flock missing")
@pytest.mark.parametrize("lanes", ["2", "1"])
def test_every_step_runs_once_with_its_output_whole(tmp_path: Path, lanes: str) -> None:
    done = _run(tmp_path, lanes)
    out = done.stdout + done.stderr  # shown with any failure below
    assert done.returncode == 0, out
    blocks = _blocks(done.stdout)
    assert sorted(blocks) == sorted(STEPS), out
    assert blocks["tier 2 of 5: sim (pytest -m sim)"][0] == "ran python -m pytest -m sim"
    caches = {line for lines in blocks.values() for line in lines if line.startswith("cache ")}
    assert len(caches) == 1 and caches != {"cache "}, out  # one oracle cache for every step
    if lanes == "1":  # one after another, in the order of the tiers
        assert list(blocks) == list(STEPS), out
    else:  # the slow tier after the lint in one lane; the others in order in the other
        order = list(blocks)
        lane = [s for s in order if s.startswith("lint") or "slow" in s]
        assert lane == [*STEPS[:4], STEPS[7]], out
        assert [s for s in order if s not in lane] == [*STEPS[4:7], STEPS[8]], out
    assert "test: every step passed" in done.stdout, out
    left = [p.name for p in tmp_path.glob("jpo-*")]  # the step logs and the oracle cache
    assert left == [], out


@pytest.mark.skipif(shutil.which("flock") is None, reason="util-linux flock missing")
def test_a_failed_step_fails_the_run_and_the_other_steps_still_run(tmp_path: Path) -> None:
    done = _run(tmp_path, "2", fail="sim")
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    blocks = _blocks(done.stdout)
    assert sorted(blocks) == sorted(STEPS), out  # the other lane and later steps still ran
    assert "test: == tier 2 of 5: sim (pytest -m sim): FAILED (1) in" in done.stdout, out
    last = done.stdout.rstrip().splitlines()[-1]
    assert re.fullmatch(r"test: FAILED after \d+ s: tier 2 of 5: sim \(pytest -m sim\)", last)
