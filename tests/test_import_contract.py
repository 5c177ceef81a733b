"""The import contract (issue 28): jpo's layers (import-linter) and no import cycle (grimp)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_complexity import METRICS

ROOT = Path(__file__).resolve().parent.parent


def test_strongly_connected_finds_a_cycle_and_nothing_else() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert METRICS.strongly_connected(graph) == [["a", "b", "c"]]


def test_no_import_cycle_among_jpo_modules() -> None:
    cycles = METRICS.import_cycles()
    assert not cycles, (
        "import cycles among jpo modules (each line: modules that import each other, "
        "directly or through the others):\n"
        + "\n".join(" <-> ".join(c) for c in cycles)
        + "\nmove the shared piece down a layer (docs/maintainer-guide.md)"
    )


def test_layers_contract_is_kept() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
