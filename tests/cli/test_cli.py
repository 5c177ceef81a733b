from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import typer

import jpo.cli.app as cli
from jpo import __version__
from jpo.errors import ConstraintViolation, ExitCode
from jpo.stage.audit import AuditRecord, append_record, update_outcome
from jpo.workload.types import Hyperparameters, WorkloadKey

EXAMPLE = Path(__file__).parents[2] / "examples" / "workload" / "config.ini"
BIN = Path(sys.executable).parent


def test_help_lists_commands_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("check", "log"):
        assert name in out
    assert "Exit codes" in out and "--debug" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"jpo {__version__}"


def test_check_valid_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", str(EXAMPLE)]) == 0
    assert "valid" in capsys.readouterr().out
    assert cli.checker_main([str(EXAMPLE)]) == 0


def test_check_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "--json", str(EXAMPLE)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] and report["workload"]["dataset"] == "cifar10"


def test_check_with_constraints_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = (Path(__file__).parents[2] / "configs" / "constraints.toml").read_text()
    c = tmp_path / "c.toml"
    c.write_text(src.replace("max = 4096", "max = 64"))
    assert cli.main(["check", "--constraints", str(c), str(EXAMPLE)]) == 2
    assert "above max 64" in capsys.readouterr().out
    c.write_text("not toml [")
    assert cli.main(["check", "--constraints", str(c), str(EXAMPLE)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "invalid TOML" in err and len(err.splitlines()) == 1


def test_usage_error_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Missing argument" in err and len(err.splitlines()) == 1
    assert cli.main(["no-such-command"]) == 2


def _app_raising(exc: BaseException) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def boom() -> None:
        raise exc

    return app


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConstraintViolation("batch_size = 0 is below min 1"), ExitCode.VALIDATION_FAILED),
        (RuntimeError("surprise"), ExitCode.INTERNAL),
    ],
)
def test_errors_map_to_exit_codes_without_traceback(
    exc: BaseException, code: ExitCode, capsys: pytest.CaptureFixture[str]
) -> None:
    command = typer.main.get_command(_app_raising(exc))
    assert cli._invoke(command, [], "jpo", debug=False) == code
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err and str(exc) in err
    assert cli._invoke(command, [], "jpo", debug=True) == code
    assert "Traceback" in capsys.readouterr().err


def test_missing_command_module_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "jpo.cli.commands.nope"))
    assert cli.main(["--help"]) == ExitCode.INTERNAL
    err = capsys.readouterr().err
    assert "jpo.cli.commands.nope" in err and "COMMAND_MODULES" in err


def test_module_without_register(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "jpo_fake_cmd", types.ModuleType("jpo_fake_cmd"))
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("jpo_fake_cmd",))
    assert cli.main(["--help"]) == ExitCode.INTERNAL
    assert "has no register(app)" in capsys.readouterr().err


def _log(tmp_path: Path) -> Path:
    log = tmp_path / "audit.jsonl"
    hp = Hyperparameters(128, 0.01, 18, 30)
    for i, key in enumerate(
        [WorkloadKey("cifar10", "resnet18", "pytorch"), WorkloadKey("mnist", "mlp", "jax")] * 3
    ):
        after = Hyperparameters(128 * 2 ** (i % 2), 0.01, 18, 30 + i)
        rec = AuditRecord.for_change(key, hp, after, f"reason-{i}", policy_version="v7")
        append_record(log, rec)
    update_outcome(log, rec.suggestion_id, {"status": "ok"})
    return log


def test_log_table_filter_limit_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # a wide table: no folded cells
    log = _log(tmp_path)
    assert cli.main(["log", "--log", str(log)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = ["when", "(UTC)", "workload", "decision", "changes", "reward", "verdict"]
    assert lines[0].split() == header
    assert len(lines) == 2 + 6  # header, rule, one line per suggestion
    assert "cifar10.resnet18.pytorch" in out and "epochs 30->35" in lines[7]
    assert lines[7].rstrip().endswith("ok")  # the outcome {"status": "ok"}: its verdict
    assert "batch 128->256" in lines[3] and "batch" not in lines[2]  # only changed values
    assert cli.main(["log", "--log", str(log), "--workload", "mnist", "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(rows) == 3 and {r["dataset"] for r in rows} == {"mnist"}
    assert rows[0]["changes"] == {
        "batch_size": {"old": 128.0, "new": 256.0},
        "epochs": {"old": 30.0, "new": 31.0},
    }
    assert cli.main(["log", "--path", str(log), "--limit", "2", "--json"]) == 0  # old spelling
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["reason"] for r in rows] == ["reason-4", "reason-5"]


def test_log_empty_and_corrupt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["log", "--path", str(tmp_path / "none.jsonl")]) == 0
    assert "no audit records" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    assert cli.main(["log", "--path", str(bad)]) == ExitCode.INVALID_INPUT
    assert "bad.jsonl:1" in capsys.readouterr().err


def test_startup_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys; from jpo.cli.app import build_app; build_app(); "
        "heavy = [m for m in ('ray', 'torch', 'pyarrow.dataset', 'pydantic') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == ""


def test_console_scripts_run_as_subprocesses() -> None:
    proc = subprocess.run(
        [str(BIN / "jpo"), "check", str(EXAMPLE)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        [str(BIN / "workload-checker"), "--json", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and json.loads(proc.stdout)["valid"]
