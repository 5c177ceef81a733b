"""What a user sees: no markup or emoji from user text, quiet pipes, -q, jpo init, log --plot."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from jpo.cli import app as cli
from jpo.console import is_quiet, set_quiet
from jpo.stage.audit import AuditRecord, append_record, update_outcome
from jpo.stage.workspace import GITIGNORE_LINES
from jpo.workload.types import Hyperparameters, WorkloadKey

BIN = Path(sys.executable).parent
EXAMPLE = Path(__file__).parents[2] / "examples" / "workload" / "config.ini"
KEY = WorkloadKey("cifar10", "resnet18", "pytorch")
HP = Hyperparameters(128, 0.01, 18, 30)
TRICKY = "[rollback] :x: [bold]configs/suggest.toml[/bold]"


@pytest.fixture(autouse=True)
def _not_quiet() -> None:
    set_quiet(False)  # cli.main(["-q", ...]) in one test must not leak into the next


def _campaign_log(path: Path, n: int = 4) -> Path:
    """A campaign: a step, a degraded run rolled back, a good step, one pending."""
    hps = [HP, Hyperparameters(256, 0.0173, 12, 30), HP, Hyperparameters(256, 0.0173, 12, 45)]
    for i in range(n):
        before, after = hps[i % 4], hps[(i + 1) % 4]
        reason = f"rollback: val loss +9 % {TRICKY}" if i % 4 == 1 else "policy"
        summary = {
            "cpu_util_mean": 0.5, "cpu_util_p95": 0.6, "mem_util_mean": 0.3,
            "mem_util_p95": 0.3, "gpu_util_mean": 0.40 + 0.02 * i, "gpu_util_p95": 0.5,
            "gpu_mem_util_mean": 0.4, "gpu_mem_util_p95": 0.5, "throughput": 3000.0 + 500 * i,
            "final_val_loss": 0.4266 - 0.001 * i, "duration_s": 3600.0, "gpu_hours": 1.0,
            "failure": "none",
        }  # fmt: skip
        rec = AuditRecord.for_change(
            KEY,
            before,
            after,
            reason,
            changed=True,
            policy_version="5",
            telemetry={"run_id": f"run-{i + 1}", "summary": summary},
            config_path=f"/repo/{TRICKY}/config.ini",
        )
        append_record(path, rec)
        if i < n - 1:
            nxt = dict(summary, final_val_loss=0.4266 + (0.04 if i % 4 == 0 else -0.002))
            update_outcome(
                path,
                rec.suggestion_id,
                {
                    "run_id": f"run-{i + 2}",
                    "summary": nxt,
                    "reward": 0.123456789012345 * (i + 1),
                    "val_loss_change": 0.0937654321 if i % 4 == 0 else -0.0123456789,
                    "degraded": i % 4 == 0,
                    "hyperparameters": after.as_dict(),
                },
            )
    return path


# ------------------------------------------------------------------ jpo log
def test_log_is_one_compact_line_per_suggestion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = _campaign_log(tmp_path / "audit.jsonl")
    assert cli.main(["log", "--log", str(log), "--reasons"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    rows = lines[2:6]
    assert len(rows) == 4
    assert "changed" in rows[0] and "batch 128->256, lr 0.01->0.0173, layers 18->12" in rows[0]
    assert "+0.123" in rows[0] and "degraded (val loss +9.4%)" in rows[0]
    assert "rollback" in rows[1] and "ok (val loss -1.2%)" in rows[1]
    assert rows[3].rstrip().endswith("policy") and "pending" in rows[3]
    assert "0.123456789" not in out and "0.0937654321" not in out  # no 17-digit floats
    assert TRICKY in out  # the reason printed as written: no markup, no emoji


def test_log_json_lines_are_documented_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = _campaign_log(tmp_path / "audit.jsonl")
    assert cli.main(["log", "--log", str(log), "--json", "--workload", "resnet18"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 4
    assert set(rows[0]) == {
        "time", "workload", "dataset", "model", "framework", "decision", "changes", "reward",
        "verdict", "val_loss_change", "reason", "suggestion_id", "run_id",
    }  # fmt: skip
    assert rows[1]["decision"] == "rollback" and rows[1]["reason"].endswith(TRICKY)
    assert rows[0]["changes"]["batch_size"] == {"old": 128.0, "new": 256.0}
    assert cli.main(["log", "--log", str(log), "--json", "--workload", "mnist"]) == 0
    assert capsys.readouterr().out == ""


def test_log_plot_draws_the_campaign(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from jpo.reporting.campaign import best_known_good, campaign_runs
    from jpo.stage.audit import read_records

    log = _campaign_log(tmp_path / "audit.jsonl")
    runs = campaign_runs(read_records(log))
    assert [r.run_id for r in runs] == ["run-1", "run-2", "run-3", "run-4"]
    assert [r.verdict for r in runs] == ["reference", "degraded", "ok", "ok"]
    assert [r.decision for r in runs] == ["changed", "rollback", "changed", "changed"]
    assert runs[1].hyperparameters == Hyperparameters(256, 0.0173, 12, 30)
    assert all(r.objective is not None for r in runs)
    best = best_known_good(runs)
    assert best is not None and best.verdict != "degraded"
    png = tmp_path / "charts" / "campaign.png"
    assert cli.main(["log", "--log", str(log), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {png}" in capsys.readouterr().out
    other = AuditRecord.for_change(WorkloadKey("mnist", "mlp", "jax"), HP, HP, "unchanged: x")
    append_record(log, other)
    assert cli.main(["log", "--log", str(log), "--plot", str(png)]) == 2
    assert "--workload" in capsys.readouterr().err
    assert cli.main(["log", "--log", str(log), "--plot", str(png), "--workload", "mnist"]) == 0


# ------------------------------------------------------------------ markup / emoji
def test_no_markup_or_emoji_from_paths_and_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "[rollback] :x:"
    folder.mkdir()
    bad = folder / "config.ini"
    bad.write_text("[workload]\ndataset = [bold]x :x:\n")
    assert cli.main(["check", "--config", str(bad)]) == 2
    captured = capsys.readouterr()
    assert "[rollback] :x:" in captured.out + captured.err
    assert "\u274c" not in captured.out + captured.err  # :x: never became an emoji
    good = folder / "ok.ini"
    shutil.copyfile(EXAMPLE, good)
    assert cli.main(["check", "--config", str(good)]) == 0
    assert f"{good}: valid" in capsys.readouterr().out
    missing = folder / "[red]gone[/red].ini"
    assert cli.main(["check", "--config", str(missing)]) == 2
    assert "[red]gone[/red].ini" in capsys.readouterr().err


def test_old_spellings_still_work_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = _campaign_log(tmp_path / "audit.jsonl", n=2)
    assert cli.main(["log", "--path", str(log)]) == 0
    assert "--path is the old spelling of --log" in capsys.readouterr().err
    assert cli.main(["check", str(EXAMPLE)]) == 0  # positional PATH: workload-checker's form
    assert cli.main(["log", "--path", str(log), "--log", str(tmp_path / "x")]) == 2
    assert "give only --log" in capsys.readouterr().err
    helps = subprocess.run(
        [str(BIN / "jpo"), "log", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    assert "--log" in helps and "--path" not in helps


# ------------------------------------------------------------------ pipes and -q
@pytest.mark.parametrize("args", [["log"], ["log", "--json"]])
def test_a_closed_pipe_exits_quietly(tmp_path: Path, args: list[str]) -> None:
    log = tmp_path / "audit.jsonl"
    rec = AuditRecord.for_change(KEY, HP, Hyperparameters(256, 0.01, 18, 30), "policy")
    line = json.dumps({"kind": "suggestion", **json.loads(rec.model_dump_json())})
    with log.open("w") as fh:  # enough output to fill a pipe's buffer many times over
        for i in range(3000):
            fh.write(line.replace(str(rec.suggestion_id), f"{i:08d}-0000-4000-8000-000000000000"))
            fh.write("\n")
    cmd = f"{BIN / 'jpo'} {' '.join(args)} --log {log} --limit 3000 | head -1"
    done = subprocess.run(
        ["bash", "-c", cmd + "; echo ${PIPESTATUS[0]} >&2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    *noise, code = done.stderr.strip().splitlines()
    assert int(code) in (0, cli.BROKEN_PIPE_EXIT)
    assert noise == [], noise  # no traceback, no "Exception ignored", no error line
    assert len(done.stdout.splitlines()) == 1


def test_quiet_everywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = _campaign_log(tmp_path / "audit.jsonl", n=2)
    assert cli.main(["-q", "log", "--path", str(log)]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == "" and "changed" in quiet.out  # results stay, notes go
    set_quiet(False)
    assert cli.main(["log", "--path", str(log), "-q"]) == 0  # after the command too
    assert capsys.readouterr().err == ""
    assert is_quiet()
    # Ray/RLlib talk through logging and warnings: both silenced in quiet mode
    logging.getLogger("ray.rllib").warning("rllib deprecation chatter")
    with warnings.catch_warnings(record=True) as seen:
        warnings.resetwarnings()
        from jpo.console import quiet_libraries

        quiet_libraries()
        warnings.warn("DeprecationWarning from a library", DeprecationWarning, stacklevel=1)
    assert seen == []
    assert logging.getLogger("ray").getEffectiveLevel() >= logging.ERROR
    assert capsys.readouterr().err == ""


def test_quiet_train_keeps_ray_logging_at_errors() -> None:
    code = (
        "import logging, sys\n"
        "from jpo.console import set_quiet, quiet_libraries\n"
        "set_quiet(True); quiet_libraries()\n"
        "import ray\n"
        "from jpo.train.trainer import _init_ray\n"
        "quiet_libraries()\n"
        "assert logging.getLogger('ray').getEffectiveLevel() >= logging.ERROR\n"
        "assert logging.getLogger('ray.rllib').getEffectiveLevel() >= logging.ERROR\n"
        "logging.getLogger('ray.rllib').warning('should not print')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "should not print" not in done.stderr


# ------------------------------------------------------------------ jpo init
def test_init_adds_the_gitignore_lines_once_and_git_agrees(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    repo = tmp_path / "repo"
    (repo / "jobs" / "cifar").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    folder = repo / "jobs" / "cifar"
    config = folder / "config.ini"
    shutil.copyfile(EXAMPLE, config)
    (folder / ".gitignore").write_text("*.pyc")  # no trailing newline
    before = sorted(p.name for p in folder.iterdir())
    assert cli.main(["init", "--config", str(config)]) == 0
    text = (folder / ".gitignore").read_text()
    assert text.startswith("*.pyc\n") and all(line in text.splitlines() for line in GITIGNORE_LINES)
    assert cli.main(["init", "--config", str(config)]) == 0
    assert (folder / ".gitignore").read_text() == text  # idempotent
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing else created
    for sub in ("backup/config.ini.bak", "locks/config.ini.lock", "tmp/x", "quarantine/y"):
        (folder / ".jpo" / sub).parent.mkdir(parents=True, exist_ok=True)
        (folder / ".jpo" / sub).write_text("x")
    (folder / ".jpo" / "audit.jsonl").write_text("{}\n")
    status = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "-uall"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "jobs/cifar/.jpo/audit.jsonl" in status and "jobs/cifar/config.ini" in status
    assert ".bak" not in status and ".lock" not in status and "tmp/x" not in status
    assert "quarantine" not in status


def test_init_needs_an_existing_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["init", "--config", str(tmp_path / "nope.ini")]) == 2
    assert "jpo init --config" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
