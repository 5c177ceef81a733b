"""The machine a figure was measured on, recorded beside every benchmark's results."""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["describe_machine", "machine_line"]


def describe_machine() -> dict[str, str]:
    """Return this machine's CPU model, core count, memory, Python and load average."""
    return {
        "cpu": _cpu_model(),
        "nproc": str(os.cpu_count()),
        "memory_gib": f"{_memory_gib():.0f}",
        "python": platform.python_version(),
        "loadavg": _read_or_empty(Path("/proc/loadavg")).strip(),
    }


def machine_line() -> str:
    """Return :func:`describe_machine` as one line for a console or a Markdown table."""
    m = describe_machine()
    return f"{m['cpu']}, {m['nproc']} cores, {m['memory_gib']} GiB, Python {m['python']}"


def _cpu_model() -> str:
    for line in _read_or_empty(Path("/proc/cpuinfo")).splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (ValueError, OSError):
        return 0.0


def _read_or_empty(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
