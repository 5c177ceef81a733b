"""Walk the user guide's exit-code table: every code listed is produced by a real command.

Each row of the table (docs/user-guide.md, "Exit codes") is parsed: its code, the commands it names,
and whether a pipeline carries on or stops. For every code a recipe runs the CLI
in-process (``jpo.cli.app.main``) and must get exactly that code. Telemetry comes from the
project's FakeSource (simulated cifar10-resnet18 runs) where a recipe needs a finished
run, and from a closed loopback port where it needs Prometheus to be unreachable. The
table's "carry on" column must match :data:`jpo.errors.CARRY_ON_CODES`, and its codes
must be exactly :class:`jpo.errors.ExitCode`.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest
from fakes.suggest_campaign import CONFIG, HP, FakeSource, make_policy

from jpo.cli import app as cli
from jpo.errors import CARRY_ON_CODES, ExitCode
from jpo.stage import run_telemetry, suggest
from jpo.workload.types import Hyperparameters

GUIDE = Path(__file__).parents[2] / "docs" / "user-guide.md"


@dataclass(frozen=True)
class Row:
    """One row of the user guide's exit-code table."""

    code: int
    commands: str
    carry_on: bool


def table() -> dict[int, Row]:
    """Parse the "Exit codes" section's table."""
    text = GUIDE.read_text(encoding="utf-8")
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows: dict[int, Row] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and re.fullmatch(r"\d+", cells[0]):
            pipeline = cells[3].lower()
            assert pipeline.startswith(("carry on", "stop")), line
            rows[int(cells[0])] = Row(int(cells[0]), cells[2], pipeline.startswith("carry on"))
    return rows


class Campaign:
    """A workload folder, a fake Prometheus source and the CLI, in one tmp folder."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp = tmp
        self.app = tmp / "app"
        self.app.mkdir()
        self.config = self.app / "config.ini"
        self.config.write_text(CONFIG)
        self.source = FakeSource()
        self.source.add(HP, "run-1", val_loss=0.5)
        monkeypatch.setattr(run_telemetry, "prometheus_source", lambda *a, **k: self.source)
        self.up = make_policy(tmp / "up", (0.5, 0.0, 0.0, 0.0))
        self.keep = make_policy(tmp / "keep", (0.0, 0.0, 0.0, 0.0))

    def suggest(self, *extra: str, policy: Path | None = None) -> int:
        args = ["suggest", "--config", str(self.config), "--policy", str(policy or self.up)]
        return cli.main([*args, *extra])

    def feedback(self, run_id: str, *extra: str) -> int:
        return cli.main(["feedback", "--config", str(self.config), "--run-id", run_id, *extra])

    def written(self) -> Hyperparameters:
        from jpo.workload.config_file import read_workload

        return read_workload(self.config).hyperparameters


def _free_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _ok(c: Campaign) -> int:
    return c.suggest("--approve")


def _internal(c: Campaign, monkeypatch: pytest.MonkeyPatch) -> int:
    def bug(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected bug")

    monkeypatch.setattr(suggest, "suggest", bug)
    return c.suggest()


def _invalid(c: Campaign) -> int:
    return cli.main(["suggest", "--config", str(c.tmp / "missing" / "config.ini")])


def _validation(c: Campaign) -> int:
    """A rollback target the workload's narrowed limits no longer allow."""
    assert c.suggest("--approve") == 0  # 64 -> 128
    c.source.add(c.written(), "run-2", val_loss=5.0)  # much worse: degraded
    assert c.feedback("run-2") == 0
    text = c.config.read_text() + "\n[jpo]\nbatch_size_min = 80\n"
    c.config.write_text(text)  # the known-good batch size 64 is now out of bounds
    return c.suggest("--approve")


def _telemetry(c: Campaign) -> int:
    store = str(c.tmp / "store")
    return cli.main(["history", "pull", "--prometheus", _free_url(), "--out", store])


def _policy(c: Campaign) -> int:
    return c.suggest(policy=c.tmp / "no-such-policy")


def _training(c: Campaign) -> int:
    blocker = c.tmp / "a-file"
    blocker.write_text("x")
    args = ["train", "--export-only", "--storage", str(blocker / "sub")]
    return cli.main([*args, "--export", str(c.tmp / "out")])


def _write_failed(c: Campaign) -> int:
    assert c.suggest("--approve") == 0
    c.source.add(c.written(), "run-2", val_loss=0.45)
    blocker = c.tmp / "a-file"
    blocker.write_text("x")
    return c.feedback("run-2", "--history", str(blocker / "history"))


def _auth(c: Campaign) -> int:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        return c.suggest("--endpoint", url, "--fallback-local", "--approve")
    finally:
        server.shutdown()
        server.server_close()


def _unchanged(c: Campaign) -> int:
    return c.suggest(policy=c.keep)


def _no_data_suggest(c: Campaign, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.undo()  # the real Prometheus source, at a closed port
    return c.suggest("--prometheus", _free_url())


def _needs_approval(c: Campaign) -> int:
    settings = c.tmp / "suggest.toml"
    settings.write_text("[approval]\nmax_relative_change = 0.1\n")
    return c.suggest("--settings", str(settings))


RECIPES: dict[int, Callable[..., int]] = {
    0: _ok,
    1: _internal,
    2: _invalid,
    3: _validation,
    4: _telemetry,
    5: _policy,
    6: _training,
    7: _write_failed,
    8: _auth,
    10: _unchanged,
    11: _no_data_suggest,
    12: _needs_approval,
}


def test_the_table_lists_exactly_the_exit_codes_and_their_pipeline_action() -> None:
    rows = table()
    assert set(rows) == {int(c) for c in ExitCode}
    assert {c for c, row in rows.items() if row.carry_on} == {int(c) for c in CARRY_ON_CODES}
    assert set(RECIPES) == set(rows)


@pytest.mark.parametrize("code", sorted(RECIPES))
def test_each_code_in_the_table_is_produced_by_a_command(
    code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = RECIPES[code]
    campaign = Campaign(tmp_path, monkeypatch)
    takes_patch = recipe.__code__.co_argcount == 2
    got = recipe(campaign, monkeypatch) if takes_patch else recipe(campaign)
    err = capsys.readouterr().err
    assert got == code, err
    assert "Traceback" not in err
    if code not in (0, 10, 11, 12):  # a failure: one `error:` line on stderr
        assert len([ln for ln in err.splitlines() if ln.startswith("error: ")]) == 1, err


def test_feedback_and_suggest_agree_when_prometheus_is_unreachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    config = app / "config.ini"
    config.write_text(CONFIG)
    url = _free_url()
    fed = cli.main(["feedback", "--config", str(config), "--run-id", "r1", "--prometheus", url])
    sug = cli.main(["suggest", "--config", str(config), "--prometheus", url])
    bad = "http://prometheus .example:9090"
    fed_bad = cli.main(["feedback", "--config", str(config), "--run-id", "r1", "--prometheus", bad])
    sug_bad = cli.main(["suggest", "--config", str(config), "--prometheus", bad])
    assert fed == sug == fed_bad == sug_bad == ExitCode.UNCHANGED_NO_DATA, capsys.readouterr().err
    assert config.read_text() == CONFIG
