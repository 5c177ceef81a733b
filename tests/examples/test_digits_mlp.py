"""The real digits-mlp workload: a short end-to-end run with a real Prometheus."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "digits-mlp"


def test_config_ini_passes_the_workload_checker() -> None:
    from jpo.config_file import check_workload, read_workload
    from jpo.constraints import load_constraints

    report = check_workload(EXAMPLE / "config.ini", load_constraints())
    assert not list(getattr(report, "problems", ()))
    workload = read_workload(EXAMPLE / "config.ini")
    assert workload.key.slug() == "digits.mlp.pytorch"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus missing")
def test_short_end_to_end_run(tmp_path: Path) -> None:
    original = (EXAMPLE / "config.ini").read_bytes()
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE / "run_e2e.py"), "--short", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "before" in proc.stdout and "jpo suggest exit code" in proc.stdout
    summary = json.loads((tmp_path / "e2e.json").read_text())
    for run in (summary["before"], summary["after"]):
        assert run["status"] == "ok"
        assert math.isfinite(run["final_val_loss"]) and run["final_val_loss"] > 0
        assert run["throughput_mean"] > 0
        measured = run["measured"]
        assert measured["scrapes"] > 0
        assert 0 < measured["cpu_util_mean"] < 4
        assert 0 < measured["mem_util_mean"] < 1
        assert measured["gpu_util_mean"] is None  # CPU-only: no DCGM series
    assert summary["suggest"]["exit_code"] in {0, 10, 11, 12}
    # the example's own config.ini is never edited: the script works on a copy
    assert (EXAMPLE / "config.ini").read_bytes() == original
