from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest
from filelock import FileLock
from hypothesis import given, settings
from hypothesis import strategies as st

import jpo.stage.safe_write as safe_write
from jpo.errors import ConfigError, WriteError
from jpo.stage.safe_write import (
    format_value,
    modify_hyperparameters,
    render_hyperparameters,
    write_hyperparameters,
)
from jpo.workload.config_file import parse_workload_text, read_workload
from jpo.workload.types import Hyperparameters

EXAMPLE = Path(__file__).parents[2] / "examples" / "workload" / "config.ini"
TEXT = """# my workload
[workload]
dataset = cifar10
model = resnet18
framework = pytorch

[hyperparameters]
Batch_Size = 128       ; samples per step
learning_rate: 0.01
num_layers = 18
epochs = 30   # until convergence

[data]
path = /data/%(user)s
"""
BASE = Hyperparameters(128, 0.01, 18, 30)


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    p = tmp_path / "config.ini"
    p.write_text(TEXT)
    return p


def _tmp_files(d: Path) -> list[Path]:
    return sorted([*d.glob("*.jpo-tmp"), *d.glob(".jpo/tmp/*.jpo-tmp")])


def _bak(d: Path) -> Path:
    return d / ".jpo" / "backup" / "config.ini.bak"


def test_no_change_is_byte_identical_and_writes_nothing(cfg: Path) -> None:
    mtime = cfg.stat().st_mtime_ns
    result = write_hyperparameters(cfg, BASE)
    assert not result.changed and result.diff == "" and result.backup_path is None
    assert cfg.read_text() == TEXT and cfg.stat().st_mtime_ns == mtime
    assert not _bak(cfg.parent).exists()


def test_example_round_trip_is_byte_identical(tmp_path: Path) -> None:
    p = tmp_path / "config.ini"
    p.write_bytes(EXAMPLE.read_bytes())
    wf = read_workload(p)
    assert not write_hyperparameters(p, wf.hyperparameters).changed
    assert p.read_bytes() == EXAMPLE.read_bytes()


def test_one_change_is_a_one_line_diff_keeping_comments_and_case(cfg: Path) -> None:
    result = write_hyperparameters(cfg, Hyperparameters(256, 0.01, 18, 30))
    assert result.changed
    new = cfg.read_text()
    assert new == TEXT.replace("Batch_Size = 128 ", "Batch_Size = 256 ")
    assert "Batch_Size = 256       ; samples per step\n" in new
    minus = [
        ln for ln in result.diff.splitlines() if ln.startswith("-") and not ln.startswith("---")
    ]
    plus = [
        ln for ln in result.diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")
    ]
    assert minus == ["-Batch_Size = 128       ; samples per step"]
    assert plus == ["+Batch_Size = 256       ; samples per step"]
    assert result.backup_path is not None and result.backup_path.read_text() == TEXT


def test_every_value_with_colon_and_hash_comments(cfg: Path) -> None:
    write_hyperparameters(cfg, Hyperparameters(64, 0.003, 20, 40))
    new = cfg.read_text()
    assert "learning_rate: 0.003\n" in new
    assert "epochs = 40   # until convergence\n" in new
    assert "path = /data/%(user)s\n" in new  # unknown sections untouched, no interpolation
    assert read_workload(cfg).hyperparameters == Hyperparameters(64, 0.003, 20, 40)


def test_crlf_and_bom_survive(tmp_path: Path) -> None:
    p = tmp_path / "config.ini"
    raw = ("\ufeff" + EXAMPLE.read_text().replace("\n", "\r\n")).encode("utf-8")
    p.write_bytes(raw)
    assert not write_hyperparameters(p, read_workload(p).hyperparameters).changed
    assert p.read_bytes() == raw
    write_hyperparameters(p, Hyperparameters(128, 0.02, 18, 30))
    out = p.read_bytes()
    assert out.startswith("\ufeff".encode()) and b"learning_rate = 0.02\r\n" in out
    assert out.replace(b"0.02", b"0.01") == raw


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.01, "0.01"), (1e-4, "0.0001"), (3e-05, "3e-05"), (0.1 / 3, repr(0.1 / 3))],
)
def test_floats_are_written_as_the_shortest_round_trip(value: float, text: str) -> None:
    assert format_value("learning_rate", value) == text
    assert float(format_value("learning_rate", value)) == value
    assert format_value("batch_size", 256) == "256"


def test_non_finite_value_is_refused(cfg: Path) -> None:
    with pytest.raises(WriteError, match="not finite"):
        write_hyperparameters(cfg, Hyperparameters(128, float("nan"), 18, 30))
    assert cfg.read_text() == TEXT


def test_expected_mismatch_writes_nothing(cfg: Path) -> None:
    with pytest.raises(WriteError, match="changed since"):
        write_hyperparameters(
            cfg, Hyperparameters(256, 0.01, 18, 30), expected=Hyperparameters(64, 0.01, 18, 30)
        )
    assert cfg.read_text() == TEXT


def test_invalid_current_file_is_not_touched(tmp_path: Path) -> None:
    p = tmp_path / "config.ini"
    bad = TEXT.replace("learning_rate: 0.01", "learning_rate: nan")
    p.write_text(bad)
    with pytest.raises(ConfigError, match="NaN"):
        write_hyperparameters(p, BASE)
    assert p.read_text() == bad


def test_lock_timeout(cfg: Path) -> None:
    lock = cfg.parent / ".jpo" / "locks" / "config.ini.lock"
    lock.parent.mkdir(parents=True)
    with FileLock(str(lock)), pytest.raises(WriteError, match="lock"):
        write_hyperparameters(cfg, Hyperparameters(256, 0.01, 18, 30), lock_timeout_s=0.05)
    assert cfg.read_text() == TEXT


@pytest.mark.parametrize("fail_on", ["config", "backup"])
def test_failing_replace_leaves_original_and_no_temp_file(
    cfg: Path, monkeypatch: pytest.MonkeyPatch, fail_on: str
) -> None:
    real_replace = os.replace
    target = cfg if fail_on == "config" else _bak(cfg.parent)

    def failing_replace(src: str, dst: str | Path) -> None:
        if Path(dst) == target:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(safe_write.os, "replace", failing_replace)
    with pytest.raises(WriteError, match="original file is unchanged"):
        write_hyperparameters(cfg, Hyperparameters(256, 0.02, 18, 30))
    assert cfg.read_bytes() == TEXT.encode()
    assert _tmp_files(cfg.parent) == []


def test_file_mode_is_kept(cfg: Path) -> None:
    cfg.chmod(0o640)
    write_hyperparameters(cfg, Hyperparameters(256, 0.01, 18, 30))
    assert cfg.stat().st_mode & 0o777 == 0o640


def test_modify_is_read_modify_write(cfg: Path) -> None:
    r = modify_hyperparameters(
        cfg, lambda wf: replace(wf.hyperparameters, epochs=wf.hyperparameters.epochs + 1)
    )
    assert r.changed and read_workload(cfg).hyperparameters.epochs == 31


WORKER = textwrap.dedent(
    """
    import sys
    from dataclasses import replace
    from jpo.stage.safe_write import modify_hyperparameters
    path, n = sys.argv[1], int(sys.argv[2])
    for _ in range(n):
        modify_hyperparameters(
            path, lambda wf: replace(wf.hyperparameters, epochs=wf.hyperparameters.epochs + 1)
        )
    """
)


def test_eight_processes_lose_no_update(tmp_path: Path) -> None:
    p = tmp_path / "config.ini"
    p.write_text(EXAMPLE.read_text().replace("epochs = 30", "epochs = 1"))
    n, procs = 15, 8
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(p), str(n)]) for _ in range(procs)
    ]
    assert all(w.wait(timeout=300) == 0 for w in workers)
    wf = read_workload(p)
    assert wf.hyperparameters.epochs == 1 + n * procs
    assert p.read_text() == EXAMPLE.read_text().replace("epochs = 30", f"epochs = {1 + n * procs}")
    assert _tmp_files(tmp_path) == []


LOOPER = textwrap.dedent(
    """
    import sys
    from jpo.stage.safe_write import write_hyperparameters
    from jpo.workload.types import Hyperparameters
    path = sys.argv[1]
    i = 0
    while True:
        i += 1
        bs = 64 if i % 2 else 128
        write_hyperparameters(path, Hyperparameters(bs, 0.01 * (1 + i % 7), 18, 1 + i % 900))
    """
)


@pytest.mark.slow
def test_sigkill_mid_loop_always_leaves_a_parseable_file(tmp_path: Path) -> None:
    p = tmp_path / "config.ini"
    p.write_bytes(EXAMPLE.read_bytes())
    for delay in (0.05, 0.13, 0.21, 0.34, 0.55, 0.8):
        proc = subprocess.Popen([sys.executable, "-c", LOOPER, str(p)])
        deadline = time.monotonic() + 60
        while not _bak(tmp_path).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        wf = read_workload(p)  # parseable, valid, whole
        assert wf.hyperparameters.batch_size in (64, 128)
        assert wf.key.slug() == "cifar10.resnet18.pytorch"
        read_workload(_bak(tmp_path))
        for stale in _tmp_files(tmp_path):  # a kill between mkstemp and replace may leave one
            stale.unlink()


@settings(max_examples=200, deadline=None)
@given(
    hp=st.builds(
        Hyperparameters,
        batch_size=st.integers(1, 4096),
        learning_rate=st.floats(1e-4, 0.1),
        num_layers=st.integers(1, 256),
        epochs=st.integers(1, 1000),
    )
)
def test_any_valid_values_round_trip_through_the_text(hp: Hyperparameters) -> None:
    old = parse_workload_text(TEXT, "config.ini")
    new_text = render_hyperparameters(TEXT, old, hp, "config.ini")
    assert parse_workload_text(new_text, "config.ini").hyperparameters == hp
    changed = [a != b for a, b in zip(TEXT.splitlines(), new_text.splitlines(), strict=True)]
    assert sum(changed) == sum(
        getattr(hp, n) != getattr(old.hyperparameters, n) for n in hp.as_dict()
    )
