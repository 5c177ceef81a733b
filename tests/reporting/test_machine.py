"""The machine description every benchmark records beside its figures."""

from __future__ import annotations

import os

from jpo.reporting.machine import describe_machine, machine_line


def test_machine_names_cpu_cores_memory_and_python() -> None:
    m = describe_machine()
    assert m["nproc"] == str(os.cpu_count())
    assert m["cpu"]
    assert float(m["memory_gib"]) > 0
    assert m["python"].count(".") == 2
    assert machine_line().startswith(f"{m['cpu']}, {m['nproc']} cores")
