from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from jpo.errors import ConfigError
from jpo.stage.audit import (
    AuditRecord,
    append_record,
    default_audit_path,
    read_records,
    update_outcome,
)
from jpo.workload.types import Hyperparameters, WorkloadKey

KEY = WorkloadKey("cifar10", "resnet18", "pytorch")
BEFORE = Hyperparameters(128, 0.01, 18, 30)
AFTER = Hyperparameters(256, 0.01, 18, 30)


def _record(**fields: object) -> AuditRecord:
    return AuditRecord.for_change(
        KEY,
        BEFORE,
        AFTER,
        "policy action",
        telemetry={"gpu_util_mean": 0.42, "missing": math.nan},
        features=[0.1, 0.2],
        policy_version="v1-abc",
        source="policy/local",
        **fields,  # type: ignore[arg-type]
    )


def test_round_trip(tmp_path: Path) -> None:
    log = tmp_path / "sub" / "audit.jsonl"
    rec = _record()
    append_record(log, rec)
    (back,) = read_records(log)
    assert back.suggestion_id == rec.suggestion_id and back.key == KEY
    assert back.before["batch_size"] == 128 and back.after["batch_size"] == 256
    assert back.telemetry == {"gpu_util_mean": 0.42, "missing": None}  # NaN stored as null
    assert back.outcome is None
    assert log.read_text().count("\n") == 1


def test_missing_log_is_empty(tmp_path: Path) -> None:
    assert read_records(tmp_path / "none.jsonl") == []


def test_outcome_is_appended_and_folded_in(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    a, b = _record(), _record()
    append_record(log, a)
    append_record(log, b)
    update_outcome(log, str(a.suggestion_id), {"val_loss": 0.5, "status": "ok"})
    update_outcome(log, a.suggestion_id, {"val_loss": 0.4, "status": "ok"})
    recs = read_records(log)
    assert [r.suggestion_id for r in recs] == [a.suggestion_id, b.suggestion_id]
    assert recs[0].outcome == {"val_loss": 0.4, "status": "ok"} and recs[1].outcome is None
    assert len(log.read_text().splitlines()) == 4  # append-only


def test_unknown_suggestion_id(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    append_record(log, _record())
    with pytest.raises(ConfigError, match="no suggestion"):
        update_outcome(log, uuid.uuid4(), {"status": "ok"})
    with pytest.raises(ConfigError, match="not a suggestion id"):
        update_outcome(log, "not-a-uuid", {"status": "ok"})


@pytest.mark.parametrize(
    "bad_line", ["{not json", '["a list"]', '{"kind": "suggestion", "dataset": 3}', '{"kind": "x"}']
)
def test_corrupt_line_names_the_line(tmp_path: Path, bad_line: str) -> None:
    log = tmp_path / "audit.jsonl"
    append_record(log, _record())
    with log.open("a") as fh:
        fh.write(bad_line + "\n")
    with pytest.raises(ConfigError, match=r"audit.jsonl:2: "):
        read_records(log)


def test_torn_last_line_does_not_swallow_the_next_record(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    append_record(log, _record())
    with log.open("a") as fh:
        fh.write('{"kind": "sugg')  # writer killed mid-line
    append_record(log, _record())
    lines = log.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["kind"] == "suggestion"


def test_default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JPO_AUDIT_LOG", raising=False)
    cfg = tmp_path / "app" / "config.ini"
    assert default_audit_path(cfg) == (tmp_path / "app" / ".jpo" / "audit.jsonl").resolve()
    monkeypatch.setenv("JPO_AUDIT_LOG", str(tmp_path / "x.jsonl"))
    assert default_audit_path(cfg) == tmp_path / "x.jsonl"


APPENDER = textwrap.dedent(
    """
    import sys
    from jpo.stage.audit import AuditRecord, append_record
    from jpo.workload.types import Hyperparameters, WorkloadKey
    path, worker, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    hp = Hyperparameters(128, 0.01, 18, 30)
    big = {f"k{i}": "x" * 200 for i in range(40)}  # ~10 KB lines: beyond PIPE_BUF
    for i in range(n):
        rec = AuditRecord.for_change(
            WorkloadKey("d", "m", "pytorch"), hp, hp, f"{worker}:{i}", telemetry=big
        )
        append_record(path, rec)
    """
)


def test_concurrent_appenders_never_interleave_or_lose(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    procs, n = 6, 40
    workers = [
        subprocess.Popen([sys.executable, "-c", APPENDER, str(log), str(w), str(n)])
        for w in range(procs)
    ]
    assert all(w.wait(timeout=300) == 0 for w in workers)
    lines = log.read_text().splitlines()
    assert len(lines) == procs * n
    reasons = [json.loads(line)["reason"] for line in lines]  # every line whole JSON
    assert sorted(reasons) == sorted(f"{w}:{i}" for w in range(procs) for i in range(n))
    assert len(read_records(log)) == procs * n
