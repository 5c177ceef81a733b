"""Fault injection for the write protocol (jpo.stage.transaction): crashes at every named step,
full and read-only volumes, torn and hostile audit lines, read-only and symlinked files.

A crash is a real process death: the protocol runs in a subprocess whose step hook calls
``os._exit`` at step k; the next command is the real CI stage (:func:`jpo.stage.suggest.suggest`
over simulated telemetry) or the real CLI. Each test asserts the exit code, the one-line
message and that config.ini, its backup and the audit log agree and nothing was lost.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fakes.suggest_campaign import CONFIG, HP, KEY, FakeSource, make_policy, run, write_config

from jpo.cli.app import main as jpo_main
from jpo.errors import ExitCode, JpoError, WriteError
from jpo.stage import audit
from jpo.stage.feedback import FeedbackOptions, feedback
from jpo.stage.suggest import SuggestOptions, SuggestResult, SuggestStatus, suggest
from jpo.stage.transaction import STEPS, StepHook, commit_change
from jpo.workload.config_file import read_workload
from jpo.workload.types import Hyperparameters

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
CRASHED = 86
# Spellings a normalizing writer would change (0128 -> 128, 5e-2 -> 0.05): the file must
# come back byte for byte, not merely to the same values.
ODD = CONFIG.replace("batch_size = 64 ", "batch_size = 064 ").replace(
    "learning_rate = 0.05", "learning_rate = 5e-2"
)
AFTER = Hyperparameters(96, 0.05, 18, 30)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path, ODD)


def _hooked(config: Path, source: FakeSource, policy: Path, hook: StepHook) -> SuggestResult:
    """The CI stage with a step hook (tests.fakes' ``run`` takes only SuggestOptions)."""
    options = SuggestOptions(config=config, policy_path=policy)
    return suggest(options, metric_source=source, step_hook=hook)


def _log(config: Path) -> Path:
    return config.parent / ".jpo" / "audit.jsonl"


def _backup(config: Path) -> Path:
    return config.parent / ".jpo" / "backup" / "config.ini.bak"


def _temps(config: Path) -> list[Path]:
    folder = config.parent
    return [*folder.glob(".jpo/tmp/*"), *folder.glob("*.jpo-tmp"), *folder.glob(".*.jpo-tmp")]


def _warnings(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("warning: ")]


def _assert_consistent(config: Path) -> None:
    """config.ini holds the values of the newest applied record (or the originals)."""
    log = audit.read_log(_log(config))
    assert not log.bad and not log.pending, (log.bad, log.pending)
    applied = [r for r in log.records if r.changed]
    now = read_workload(config).hyperparameters.as_dict()
    want = applied[-1].after if applied else HP.as_dict()
    assert {k: float(v) for k, v in now.items()} == want
    if applied:  # the first change's originals survive byte for byte in the backup chain
        assert applied[0].before == {k: float(v) for k, v in HP.as_dict().items()}
    assert _temps(config) == []


CRASHER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from jpo.stage.audit import AuditRecord
    from jpo.stage.transaction import commit_change
    from jpo.workload.types import Hyperparameters, WorkloadKey

    config, log, at = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    before, after = Hyperparameters(64, 0.05, 18, 30), Hyperparameters(96, 0.05, 18, 30)
    record = AuditRecord.for_change(
        WorkloadKey("cifar10", "resnet18", "pytorch"), before, after, "policy",
        telemetry={"run_id": "run-1"}, config_path=str(config.resolve()), changed=True,
    )

    def step(name):
        if name == at:
            os._exit(86)  # the process dies here: no cleanup, no finally blocks

    commit_change(config, after, record, log, expected=before, step=step)
    print(record.suggestion_id)
    """
)


def _crash_at(step: str, config: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CRASHER, str(config), str(_log(config)), step],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert done.returncode == CRASHED, done.stderr


def test_a_real_suggest_runs_every_named_step_in_order(
    config: Path, source: FakeSource, policy_up: Path
) -> None:
    seen: list[str] = []
    result = _hooked(config, source, policy_up, seen.append)
    assert result.status is SuggestStatus.CHANGED and result.written
    assert tuple(seen) == STEPS
    assert _backup(config).read_bytes() == ODD.encode()
    _assert_consistent(config)


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_every_step_is_settled_by_the_next_suggest(
    step: str,
    config: Path,
    source: FakeSource,
    policy_up: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _crash_at(step, config)
    replaced = STEPS.index(step) >= STEPS.index("replace")
    assert config.read_bytes() == (ODD.encode() if not replaced else config.read_bytes())
    assert read_workload(config).hyperparameters == (AFTER if replaced else HP)
    capsys.readouterr()

    result = run(config, source, policy_up)  # the next CI stage run
    warnings = _warnings(capsys.readouterr().err)
    if step == "record":  # the crash came after the protocol's last write: nothing to do
        assert warnings == []
    elif replaced:  # renamed, not logged: the change is finished, its record appended
        assert len(warnings) == 1 and "finished an interrupted write" in warnings[0]
        assert str(config) in warnings[0]
    else:  # never renamed: closed as not applied (plus the temp file it left, if any)
        assert [w for w in warnings if "rolled back an interrupted write" in w]
        assert len(warnings) == (2 if step == "temp" else 1), warnings
        if step == "temp":
            assert any("removed 1 temp file" in w for w in warnings)
    if replaced:  # no second change stacked on the same telemetry run
        assert result.status is SuggestStatus.UNCHANGED
        assert result.exit_code == ExitCode.UNCHANGED_BY_CHOICE
        assert read_workload(config).hyperparameters == AFTER
    else:  # the interrupted change never happened; this run makes (and records) it
        assert result.status is SuggestStatus.CHANGED and result.exit_code == ExitCode.OK
    assert _backup(config).read_bytes() == ODD.encode()  # the original, byte for byte
    _assert_consistent(config)
    applied = [r for r in audit.read_log(_log(config)).records if r.changed]
    assert len(applied) == 1


def test_a_crash_is_settled_by_the_next_feedback_too(
    config: Path, source: FakeSource, capsys: pytest.CaptureFixture[str]
) -> None:
    _crash_at("replace", config)
    capsys.readouterr()
    source.add(AFTER, "run-2")
    result = feedback(FeedbackOptions(config=config, run_id="run-2"), metric_source=source)
    (warning,) = _warnings(capsys.readouterr().err)
    assert "finished an interrupted write" in warning
    (record,) = audit.read_log(_log(config)).records
    assert record.changed and record.outcome is not None
    assert record.outcome["run_id"] == result.run_id == "run-2"
    _assert_consistent(config)


@pytest.mark.slow  # the real CLI in a subprocess (imports, a refused connection)
def test_the_cli_reports_a_settled_crash_in_one_line(config: Path, tmp_path: Path) -> None:
    """Real `jpo suggest` in a subprocess: Prometheus is down (exit 11), but first the
    interrupted write is settled, and said so in one line."""
    _crash_at("temp", config)
    args = ["suggest", "--config", str(config), "--prometheus", "http://127.0.0.1:9"]
    done = subprocess.run(
        [sys.executable, "-m", "jpo.cli.app", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert "Traceback" not in done.stderr
    assert done.returncode == ExitCode.UNCHANGED_NO_DATA, done.stderr
    warnings = _warnings(done.stderr)
    assert len(warnings) == 2, done.stderr
    assert "rolled back an interrupted write" in warnings[1] and str(config) in warnings[1]
    assert config.read_bytes() == ODD.encode()
    _assert_consistent(config)


def test_a_failed_record_puts_the_old_bytes_back(
    config: Path, source: FakeSource, policy_up: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log refuses the suggestion record after config.ini was replaced: the revert
    restores the original bytes (064, 5e-2), not a normalized rewrite (64, 0.05)."""
    real = audit._append_line

    def no_suggestion_lines(path: Path, payload: dict[str, object]) -> None:
        if payload.get("kind", "suggestion") == "suggestion":
            raise WriteError(f"{path}: cannot append to the audit log (disk full)")
        real(path, payload)

    monkeypatch.setattr(audit, "_append_line", no_suggestion_lines)
    with pytest.raises(WriteError, match="cannot append to the audit log") as err:
        run(config, source, policy_up)
    assert err.value.exit_code == ExitCode.WRITE_FAILED
    assert config.read_bytes() == ODD.encode()
    monkeypatch.undo()
    log = audit.read_log(_log(config))
    assert log.records == [] and log.pending == []  # the intent was closed (abort line)


def test_an_unwritable_log_after_the_rename_is_settled_later(
    config: Path, source: FakeSource, policy_up: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Even the abort line fails (the log became a folder): the file is put back, the
    intent stays open, and the next run closes it by the file's hash."""
    log = _log(config)
    aside = log.with_name("moved.jsonl")

    def break_log(step: str) -> None:
        if step == "replace":
            log.rename(aside)
            log.mkdir()

    with pytest.raises(WriteError, match="a folder stands where JPO keeps a file"):
        _hooked(config, source, policy_up, break_log)
    assert config.read_bytes() == ODD.encode()
    log.rmdir()
    aside.rename(log)
    assert len(audit.read_log(log).pending) == 1
    capsys.readouterr()
    result = run(config, source, policy_up)
    assert "rolled back an interrupted write" in _warnings(capsys.readouterr().err)[0]
    assert result.status is SuggestStatus.CHANGED
    _assert_consistent(config)


# --------------------------------------------------------------------------- audit lines

GOOD = json.dumps(
    audit.AuditRecord.for_change(KEY, HP, HP, "unchanged: seed").model_dump(mode="json"),
    separators=(",", ":"),
)
HOSTILE: dict[str, bytes] = {
    "torn-tail": GOOD.encode()[: len(GOOD) // 2],  # a short write on a full disk
    "garbage": b"\x00\xff\xfe<<<<<<< HEAD",
    "nested-100000": b"[" * 100_000 + b"]" * 100_000,
    "nested-object-50000": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "overflow-1e400": GOOD.replace('"batch_size":64.0', '"batch_size":1e400').encode(),
    "nan-literal": GOOD.replace('"batch_size":64.0', '"batch_size":NaN').encode(),
    "huge-int": GOOD.replace('"batch_size":64.0', '"batch_size":' + "9" * 400).encode(),
    "list": b'["a list"]',
    "string": b'"a string"',
    "number": b"42",
    "deep-but-parseable": GOOD[:-1].encode() + b',"x":' + b"[" * 500 + b"]" * 500 + b"}",
    "unknown-kind": b'{"kind": "x"}',
}


def _hostile_log(config: Path, bad: bytes) -> bytes:
    log = _log(config)
    log.parent.mkdir(parents=True, exist_ok=True)
    data = GOOD.encode() + b"\n" + bad + (b"" if bad.startswith(b"{") else b"\n")
    log.write_bytes(data)
    return data


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_lines_never_raise_anything_but_jpo_errors(config: Path, name: str) -> None:
    _hostile_log(config, HOSTILE[name])
    log = audit.read_log(_log(config))
    assert len(log.records) == 1 and [b.lineno for b in log.bad] == [2]
    with pytest.raises(JpoError, match=r"audit.jsonl:2: "):
        audit.read_records(_log(config))


@pytest.mark.parametrize("name", ["torn-tail", "nested-100000", "overflow-1e400", "list"])
def test_hostile_lines_block_neither_log_nor_dry_run_and_are_quarantined(
    config: Path,
    source: FakeSource,
    policy_up: Path,
    name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = _hostile_log(config, HOSTILE[name])
    capsys.readouterr()

    assert jpo_main(["log", "--config", str(config)]) == 0  # read-only: skips, says so
    (warning,) = _warnings(capsys.readouterr().err)
    assert "1 unreadable line(s)" in warning and "line 2" in warning

    result = run(config, source, policy_up, dry_run=True)
    assert result.status is SuggestStatus.DRY_RUN
    assert len(_warnings(capsys.readouterr().err)) == 1
    assert _log(config).read_bytes() == data  # a dry run writes nothing

    result = run(config, source, policy_up)  # writes: the bad line is set aside first
    assert result.status is SuggestStatus.CHANGED
    (warning,) = _warnings(capsys.readouterr().err)
    (kept,) = (config.parent / ".jpo" / "quarantine").iterdir()
    assert "moved to" in warning and str(kept) in warning
    assert kept.read_bytes() == HOSTILE[name] + b"\n"  # kept byte for byte
    lines = _log(config).read_bytes().splitlines()
    assert lines[0] == GOOD.encode() and len(audit.read_records(_log(config))) == 2
    _assert_consistent(config)


def test_a_log_whose_only_line_is_torn_blocks_no_suggestion(
    config: Path, source: FakeSource, policy_up: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The very first append was torn: the CI stage goes on (`jpo log` alone calls such a
    file "not an audit log", exit 2, as tests/cli/test_cli.py expects of a wrong --path)."""
    _log(config).parent.mkdir()
    _log(config).write_bytes(HOSTILE["torn-tail"])
    assert run(config, source, policy_up, dry_run=True).status is SuggestStatus.DRY_RUN
    assert jpo_main(["log", "--config", str(config)]) == ExitCode.INVALID_INPUT
    assert "audit.jsonl:1: not an audit log" in capsys.readouterr().err
    assert run(config, source, policy_up).status is SuggestStatus.CHANGED
    assert "moved to" in _warnings(capsys.readouterr().err)[0]
    assert jpo_main(["log", "--config", str(config)]) == 0
    _assert_consistent(config)


def test_a_torn_outcome_does_not_block_feedback(
    config: Path, source: FakeSource, policy_up: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(config, source, policy_up)
    with _log(config).open("ab") as fh:
        fh.write(b'{"kind":"outcome","suggestion_id":"')  # killed while appending
    source.add(AFTER, "run-2")
    capsys.readouterr()
    result = feedback(FeedbackOptions(config=config, run_id="run-2"), metric_source=source)
    assert "moved to" in _warnings(capsys.readouterr().err)[0]
    (record,) = audit.read_records(_log(config))
    assert record.outcome is not None and record.outcome["run_id"] == result.run_id


def test_feedback_that_cannot_log_its_outcome_is_exit_7_and_can_be_rerun(
    config: Path, source: FakeSource, policy_up: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """History first, outcome line second: a failure in between loses nothing, and the
    same `jpo feedback` run again stores the run once and the outcome once."""
    from jpo.telemetry.history import read_history

    run(config, source, policy_up)
    source.add(AFTER, "run-2")
    real = audit._append_line

    def no_outcome_lines(path: Path, payload: dict[str, object]) -> None:
        if payload.get("kind") == "outcome":
            raise WriteError(f"{path}: cannot append to the audit log (disk full)")
        real(path, payload)

    monkeypatch.setattr(audit, "_append_line", no_outcome_lines)
    options = FeedbackOptions(config=config, run_id="run-2")
    with pytest.raises(WriteError) as err:
        feedback(options, metric_source=source)
    assert err.value.exit_code == ExitCode.WRITE_FAILED
    monkeypatch.undo()
    (record,) = audit.read_records(_log(config))
    assert record.outcome is None  # still pending: nothing half-recorded
    feedback(options, metric_source=source)
    (record,) = audit.read_records(_log(config))
    assert record.outcome is not None and record.outcome["run_id"] == "run-2"
    stored = read_history(config.parent / ".jpo" / "history")
    assert stored.num_rows == source.runs[-1].num_rows  # appended once, not twice
    _assert_consistent(config)


def test_a_failed_append_leaves_no_torn_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that stops half-way (ENOSPC after some bytes) is cut back to the old size."""
    import errno

    log = tmp_path / "audit.jsonl"
    record = audit.AuditRecord.for_change(KEY, HP, AFTER, "policy")
    audit.append_record(log, record)
    before = log.read_bytes()
    real_write = os.write

    def half_write(fd: int, data: bytes | memoryview) -> int:
        if len(data) > 100:
            return real_write(fd, bytes(data[:100]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("jpo.stage.audit.os.write", half_write)  # only while appending
    with pytest.raises(WriteError, match="no space left"):
        audit.append_record(log, record)
    monkeypatch.undo()
    assert log.read_bytes() == before


# --------------------------------------------------------------------------- file system


def test_a_read_only_config_is_refused_not_replaced(
    config: Path, source: FakeSource, policy_up: Path
) -> None:
    config.chmod(0o444)
    inode = config.stat().st_ino
    with pytest.raises(WriteError, match="read-only") as err:
        run(config, source, policy_up)
    assert err.value.exit_code == ExitCode.WRITE_FAILED
    assert str(config) in str(err.value) and "chmod u+w" in str(err.value)
    assert "\n" not in str(err.value)
    assert config.stat().st_ino == inode and config.read_bytes() == ODD.encode()
    assert config.stat().st_mode & 0o777 == 0o444
    assert audit.read_log(_log(config)).pending == []


def test_a_symlinked_config_is_written_through(
    tmp_path: Path, source: FakeSource, policy_up: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    target = shared / "cifar.ini"
    target.write_text(ODD)
    app = tmp_path / "app"
    app.mkdir()
    link = app / "config.ini"
    link.symlink_to(target)
    result = run(link, source, policy_up)
    assert result.status is SuggestStatus.CHANGED
    assert link.is_symlink() and link.resolve() == target
    assert read_workload(target).hyperparameters == result.after
    assert (shared / ".jpo" / "backup" / "cifar.ini.bak").read_bytes() == ODD.encode()
    assert (shared / ".jpo" / "locks" / "cifar.ini.lock").exists()
    (record,) = audit.read_records(shared / ".jpo" / "audit.jsonl")
    assert record.config_path == str(target)
    assert not (app / ".jpo").exists()


def test_state_files_live_under_dot_jpo(config: Path, source: FakeSource, policy_up: Path) -> None:
    run(config, source, policy_up)
    assert sorted(p.name for p in config.parent.iterdir()) == [".jpo", "config.ini"]
    state = config.parent / ".jpo"
    assert sorted(p.name for p in state.iterdir()) == ["audit.jsonl", "backup", "locks", "tmp"]
    assert (state / "locks" / "config.ini.lock").exists()
    assert list((state / "tmp").iterdir()) == []
    assert os.stat(state / "tmp").st_dev == os.stat(config.parent).st_dev  # atomic rename


def test_leftover_temp_files_are_removed_by_the_next_command(
    config: Path, source: FakeSource, policy_up: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (config.parent / ".jpo" / "tmp").mkdir(parents=True)
    stale = [
        config.parent / ".config.ini.k3j2_x.jpo-tmp",  # what JPO before .jpo/ left
        config.parent / ".jpo" / "tmp" / "config.ini.a8b7.jpo-tmp",
        config.parent / ".jpo" / "tmp" / "config.ini.bak.c6d5.jpo-tmp",
    ]
    for path in stale:
        path.write_text("half a config")
    capsys.readouterr()
    result = run(config, source, policy_up)
    assert result.status is SuggestStatus.CHANGED
    (warning,) = _warnings(capsys.readouterr().err)
    assert "removed 3 temp file(s)" in warning
    assert not any(p.exists() for p in stale)


def test_a_folder_where_the_lock_goes_is_exit_7(
    config: Path, source: FakeSource, policy_up: Path
) -> None:
    lock = config.parent / ".jpo" / "locks" / "config.ini.lock"
    lock.mkdir(parents=True)
    with pytest.raises(WriteError) as err:
        run(config, source, policy_up)
    message = str(err.value)
    assert str(lock) in message and "fix: remove that folder" in message and "\n" not in message
    assert config.read_bytes() == ODD.encode()


def _as_nobody(work: Callable[[], str]) -> str:
    """Run ``work`` in a forked child without root's powers (uid/gid 65534); its result."""
    # codecs imported lazily (zipfile, BOM sniffing): load them while still root, since
    # nobody cannot read root's interpreter files
    import encodings.cp437
    import encodings.utf_8_sig

    assert encodings.cp437 and encodings.utf_8_sig

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            os.write(write_end, work().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        out = fh.read().decode()
    os.waitpid(pid, 0)
    return out


def test_a_read_only_folder_is_exit_7(tmp_path: Path, source: FakeSource) -> None:
    """A folder the user cannot write (as root: run as nobody in a forked child)."""
    base = Path(tempfile.mkdtemp(prefix="jpo-ro-"))  # traversable by nobody, unlike tmp_path
    try:
        base.chmod(0o755)
        app = base / "app"
        app.mkdir()
        config = app / "config.ini"
        config.write_text(ODD)
        config.chmod(0o666)  # the file is writable: only the folder is not
        policy = Path(make_policy(base / "policy", (0.5, 0.0, 0.0, 0.0)))
        for path in [policy, *policy.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        app.chmod(0o555)

        def attempt() -> str:
            try:
                run(config, source, policy)
            except JpoError as err:
                return f"{int(err.exit_code)} {err}"
            except BaseException as err:  # what the test must rule out
                return f"1 {type(err).__name__}: {err}"
            return "0 written"

        out = attempt() if not IS_ROOT else _as_nobody(attempt)
        code, message = out.split(" ", 1)
        assert int(code) == ExitCode.WRITE_FAILED, out
        assert "permission denied" in message and "chmod u+w" in message, message
        assert str(config) in message and "\n" not in message
        assert config.read_bytes() == ODD.encode()
    finally:
        (base / "app").chmod(0o755)
        shutil.rmtree(base)


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (root only; skipped with the reason elsewhere)."""
    mount = tmp_path / "vol"
    mount.mkdir()
    if not IS_ROOT or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(volume: Path, leave: int) -> Path:
    """Fill the volume until ``leave`` bytes are free (tmpfs counts whole pages)."""
    filler = volume / "filler"
    free = os.statvfs(volume).f_bavail * os.statvfs(volume).f_frsize
    with filler.open("wb") as fh:
        fh.write(b"\0" * max(0, free - leave))
    return filler


@pytest.mark.parametrize("pages_free", [0, 1, 2, 3, 4, 5, 6, 8])
def test_a_full_volume_fails_cleanly_at_any_step_and_recovers(
    volume: Path,
    source: FakeSource,
    policy_up: Path,
    pages_free: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = volume / "config.ini"
    config.write_text(ODD)
    _log(config).parent.mkdir()
    (volume / ".jpo" / "locks").mkdir()
    page = os.statvfs(volume).f_frsize
    filler = _fill(volume, pages_free * page)
    try:
        result = run(config, source, policy_up)
    except WriteError as err:
        assert err.exit_code == ExitCode.WRITE_FAILED
        assert "no space left" in str(err) and "\n" not in str(err)
        assert config.read_bytes() == ODD.encode()  # untouched, byte for byte
    else:
        assert result.status is SuggestStatus.CHANGED
    filler.unlink()
    capsys.readouterr()
    run(config, source, policy_up)  # space again: the next run settles and goes on
    _assert_consistent(config)
    assert _backup(config).read_bytes() == ODD.encode()


def test_a_read_only_mount_is_exit_7_and_dry_run_still_works(
    volume: Path, source: FakeSource, policy_up: Path
) -> None:
    config = volume / "config.ini"
    config.write_text(ODD)
    subprocess.run(["mount", "-o", "remount,ro", str(volume)], check=True)
    assert run(config, source, policy_up, dry_run=True).status is SuggestStatus.DRY_RUN
    with pytest.raises(WriteError, match="read-only") as err:
        run(config, source, policy_up)
    assert err.value.exit_code == ExitCode.WRITE_FAILED
    assert str(config) in str(err.value) and "\n" not in str(err.value)
    assert config.read_bytes() == ODD.encode()


def test_a_tmp_folder_on_another_file_system_is_not_used_for_the_rename(
    config: Path, source: FakeSource, policy_up: Path
) -> None:
    """.jpo/tmp on another mount: the temp file goes beside config.ini, the rename stays
    atomic (a cross-device rename would fail with EXDEV)."""
    tmp = config.parent / ".jpo" / "tmp"
    tmp.mkdir(parents=True)
    if not IS_ROOT:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(tmp)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        assert os.stat(tmp).st_dev != os.stat(config.parent).st_dev
        result = run(config, source, policy_up)
        assert result.status is SuggestStatus.CHANGED and result.written
        assert read_workload(config).hyperparameters == result.after
        assert list(tmp.iterdir()) == [] and _temps(config) == []
    finally:
        subprocess.run(["umount", "-l", str(tmp)], check=False)
    _assert_consistent(config)


def test_commit_change_refuses_values_edited_since_they_were_read(config: Path) -> None:
    record = audit.AuditRecord.for_change(KEY, HP, AFTER, "policy", config_path=str(config))
    with pytest.raises(WriteError, match="changed since"):
        commit_change(config, AFTER, record, _log(config), expected=AFTER)
    assert config.read_bytes() == ODD.encode()
    assert audit.read_log(_log(config)).pending == []
