"""Every malformed workload file gets exit 2, a message naming the problem, no file changed.

The corpus is tests/workload/malformed/*.ini, described (with the expected message) by the table
in tests/workload/malformed/README.md. Cases that cannot live in git (directory, unreadable
file, huge file, named pipe, missing file, dangling symlink) are made at run time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jpo.cli.app import checker_main, main

CORPUS = Path(__file__).parent / "malformed"
ROW_RE = re.compile(r"^\| `(?P<file>[^`]+)` \| (?P<what>.+?) \| `(?P<expect>.+)` \|$")
BIN = Path(sys.executable).parent
GOOD = (
    "[workload]\ndataset = cifar10\nmodel = resnet18\nframework = pytorch\n\n"
    "[hyperparameters]\nbatch_size = 128\nlearning_rate = 0.01\nnum_layers = 18\nepochs = 30\n"
)


def _rows() -> dict[str, str]:
    rows = {}
    for line in (CORPUS / "README.md").read_text(encoding="utf-8").splitlines():
        m = ROW_RE.match(line)
        if m:
            rows[m.group("file")] = m.group("expect")
    return rows


ROWS = _rows()


def _snapshot(*roots: Path) -> dict[str, str]:
    """Hash every file (and record every name) under the roots."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_symlink():
                out[str(p)] = "link:" + os.readlink(p)
            elif p.is_file():
                try:
                    out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
                except PermissionError:
                    out[str(p)] = f"unreadable:{p.stat().st_size}:{p.stat().st_mtime_ns}"
            elif stat.S_ISFIFO(p.lstat().st_mode):
                out[str(p)] = "fifo"
            else:
                out[str(p)] = "dir"
    return out


def test_readme_describes_every_file_and_at_least_30() -> None:
    files = {p.name for p in CORPUS.glob("*.ini")}
    assert files == set(ROWS), f"README rows and files differ: {files ^ set(ROWS)}"
    assert len(files) + len(RUNTIME_CASES) >= 30 and len(files) >= 30


# ------------------------------------------------------------------ runtime cases
def _make_directory(d: Path) -> Path:
    p = d / "config.ini"
    p.mkdir()
    (p / "config.ini").write_text(GOOD)
    return p


def _make_huge(d: Path) -> Path:
    p = d / "huge.ini"
    p.write_text(GOOD + ("; padding comment line\n" * 50_000))  # > 1 MiB
    assert p.stat().st_size > 1024 * 1024
    return p


def _make_fifo(d: Path) -> Path:
    p = d / "pipe.ini"
    os.mkfifo(p)
    return p


def _make_missing(d: Path) -> Path:
    return d / "no-such-config.ini"


def _make_dangling(d: Path) -> Path:
    p = d / "dangling.ini"
    p.symlink_to(d / "gone.ini")
    return p


RUNTIME_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "directory": (_make_directory, "is a directory"),
    "huge": (_make_huge, "too large"),
    "fifo": (_make_fifo, "not a regular file"),
    "missing": (_make_missing, "file not found"),
    "dangling_symlink": (_make_dangling, "file not found"),
}


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "work"
    d.mkdir()
    yield d


def _run_in_process(entry: str, path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(["check", str(path)]) if entry == "jpo" else checker_main([str(path)])
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


@pytest.mark.parametrize("entry", ["jpo", "workload-checker"])
@pytest.mark.parametrize("name", sorted(ROWS))
def test_corpus_file_in_process(name: str, entry: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(CORPUS)
    rc, output = _run_in_process(entry, CORPUS / name, capsys)
    assert rc == 2, output
    assert ROWS[name] in output, output
    assert "Traceback" not in output
    assert _snapshot(CORPUS) == before


@pytest.mark.parametrize("entry", ["jpo", "workload-checker"])
@pytest.mark.parametrize("case", sorted(RUNTIME_CASES))
def test_runtime_case_in_process(
    case: str, entry: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, expect = RUNTIME_CASES[case]
    path = make(workdir)
    before = _snapshot(workdir)
    rc, output = _run_in_process(entry, path, capsys)
    assert rc == 2, output
    assert expect in output, output
    assert _snapshot(workdir) == before


@pytest.mark.parametrize("entry", ["jpo", "workload-checker"])
def test_unreadable_file_in_process(
    entry: str, workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = workdir / "config.ini"
    path.write_text(GOOD)
    path.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make the read itself fail as it would
        real_open = Path.open

        def deny(self: Path, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
            if self == path:
                raise PermissionError(13, "Permission denied", str(self))
            return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(Path, "open", deny)
    before = _snapshot(workdir)
    rc, output = _run_in_process(entry, path, capsys)
    assert rc == 2, output
    assert "permission denied" in output
    assert _snapshot(workdir) == before


# ------------------------------------------------------------------ real subprocesses
SUBPROCESS_SUBSET = [
    "injection_dataset_promql.ini",
    "non_utf8_latin1.ini",
    "percent_interpolation_value.ini",
    "duplicate_section.ini",
    "epochs_1e400.ini",
    "empty.ini",
    "learning_rate_nan.ini",
    "default_section_trap.ini",
]


def _run_cli(argv: list[str], *, user: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "JPO_DEBUG"}
    cmd = argv
    if user is not None:
        cmd = ["setpriv", "--reuid", user, "--regid", user, "--clear-groups", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=False)


@pytest.mark.parametrize("entry", ["jpo", "workload-checker"])
@pytest.mark.parametrize("name", SUBPROCESS_SUBSET)
def test_corpus_file_subprocess(name: str, entry: str) -> None:
    before = _snapshot(CORPUS)
    argv = [str(BIN / "jpo"), "check"] if entry == "jpo" else [str(BIN / "workload-checker")]
    proc = _run_cli([*argv, str(CORPUS / name)])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert ROWS[name] in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert _snapshot(CORPUS) == before


@pytest.mark.parametrize("case", ["directory", "huge", "fifo", "missing"])
def test_runtime_case_subprocess(case: str, workdir: Path) -> None:
    make, expect = RUNTIME_CASES[case]
    path = make(workdir)
    before = _snapshot(workdir)
    for argv in ([str(BIN / "jpo"), "check"], [str(BIN / "workload-checker")]):
        proc = _run_cli([*argv, str(path)])
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert expect in proc.stdout + proc.stderr
    assert _snapshot(workdir) == before


def test_unreadable_file_subprocess() -> None:
    """A mode-000 file; as root, the checker runs as `nobody` so the permission bites."""
    as_root = os.geteuid() == 0
    if as_root and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot drop privileges")
    d = Path(tempfile.mkdtemp(prefix="jpo-unreadable-"))
    try:
        d.chmod(0o755)  # traversable by nobody
        path = d / "config.ini"
        path.write_text(GOOD)
        path.chmod(0)
        before = _snapshot(d)
        user = "65534" if as_root else None
        for argv in ([str(BIN / "jpo"), "check"], [str(BIN / "workload-checker")]):
            proc = _run_cli([*argv, str(path)], user=user)
            assert proc.returncode == 2, proc.stdout + proc.stderr
            assert "permission denied" in proc.stdout + proc.stderr
        assert _snapshot(d) == before
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_json_report_for_a_malformed_file(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["check", "--json", str(CORPUS / "duplicate_key.ini")])
    report = json.loads(capsys.readouterr().out)
    assert rc == 2
    assert report["valid"] is False
    (problem,) = report["problems"]
    assert problem["line"] == 11 and problem["key"] == "batch_size"
    assert "duplicate key" in problem["message"] and problem["fix"]
