from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from jpo.errors import ConfigError
from jpo.workload.config_file import (
    check_workload,
    check_workload_text,
    load_workload_schema,
    parse_workload_text,
    read_workload,
)
from jpo.workload.constraints import load_constraints
from jpo.workload.types import Hyperparameters, WorkloadKey

EXAMPLE = Path(__file__).parents[2] / "examples" / "workload" / "config.ini"
GOOD = (
    "[workload]\ndataset = cifar10\nmodel = resnet18\nframework = pytorch\n\n"
    "[hyperparameters]\nbatch_size = 128\nlearning_rate = 0.01\nnum_layers = 18\nepochs = 30\n"
)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.ini"
    p.write_text(text, encoding="utf-8")
    return p


def test_bundled_example_reads() -> None:
    wf = read_workload(EXAMPLE)
    assert wf.key == WorkloadKey("cifar10", "resnet18", "pytorch")
    assert wf.hyperparameters == Hyperparameters(128, 0.01, 18, 30)
    assert isinstance(wf.hyperparameters.batch_size, int)
    assert wf.jpo.tunable == ("batch_size", "learning_rate", "num_layers", "epochs")
    assert wf.line_of("hyperparameters", "batch_size") == 11
    assert wf.line_of("workload") == 5
    assert wf.line_of("hyperparameters", "nope") == 0


def test_check_never_writes(tmp_path: Path) -> None:
    p = _write(tmp_path, GOOD.replace("epochs = 30", "epochs = nan"))
    before = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    report = check_workload(p)
    assert not report.ok
    assert (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["config.ini"]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        "[workload]\ndataset = bad name\nframework = caffe\n\n"
        "[hyperparameters]\nbatch_size = 0\nlearning_rate = inf\nnum_layers = x\n"
    )
    report = check_workload(_write(tmp_path, text))
    keys = {(p.section, p.key) for p in report.problems}
    assert ("workload", "dataset") in keys and ("workload", "framework") in keys
    assert ("hyperparameters", "batch_size") in keys
    assert ("hyperparameters", "learning_rate") in keys
    assert ("hyperparameters", "num_layers") in keys
    messages = " | ".join(p.message for p in report.problems)
    assert "missing key 'model'" in messages and "missing key 'epochs'" in messages
    assert len(report.problems) == 7
    assert all(p.fix and p.file.endswith("config.ini") for p in report.problems)
    lines = {p.key: p.line for p in report.problems}
    assert lines["dataset"] == 2 and lines["batch_size"] == 6


def test_read_workload_raises_one_error_listing_all(tmp_path: Path) -> None:
    p = _write(tmp_path, GOOD.replace("batch_size = 128", "batch_size = -1").replace("30", "1e9"))
    with pytest.raises(ConfigError) as info:
        read_workload(p)
    msg = str(info.value)
    assert "2 problems" in msg and f"{p}:7" in msg and "batch_size" in msg and "epochs" in msg


def test_keys_are_case_insensitive_sections_are_not(tmp_path: Path) -> None:
    wf = read_workload(_write(tmp_path, GOOD.replace("batch_size", "Batch_Size")))
    assert wf.hyperparameters.batch_size == 128
    report = check_workload(_write(tmp_path, GOOD.replace("[workload]", "[WORKLOAD]")))
    assert any("rename it to [workload]" in p.fix for p in report.problems)


def test_label_values(tmp_path: Path) -> None:
    ok = "a" * 63
    assert read_workload(_write(tmp_path, GOOD.replace("cifar10", ok))).key.dataset == ok
    for bad in ("a" * 64, "-a", "a-", "a b", "é", 'a"}'):
        report = check_workload(_write(tmp_path, GOOD.replace("resnet18", bad)))
        assert [p.key for p in report.problems] == ["model"], bad


def test_known_frameworks_are_configurable() -> None:
    schema = load_workload_schema()
    assert {"pytorch", "tensorflow", "jax", "keras"} <= set(schema.known_frameworks)
    assert schema.max_file_bytes == 1024 * 1024


def test_framework_case_is_accepted_and_kept(tmp_path: Path) -> None:
    wf = read_workload(_write(tmp_path, GOOD.replace("pytorch", "PyTorch")))
    assert wf.key.framework == "PyTorch"  # pod labels are matched exactly


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    p = tmp_path / "config.ini"
    p.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert read_workload(p).key.dataset == "cifar10"


def test_unknown_sections_and_keys_are_warnings(tmp_path: Path) -> None:
    text = GOOD + "weight_decay = 0.0005\n\n[data]\npath = /x/%(user)s\n"
    report = check_workload(_write(tmp_path, text))
    assert report.ok
    assert {w.key for w in report.warnings} >= {"weight_decay"}
    assert any(w.section == "data" for w in report.warnings)


def test_jpo_section(tmp_path: Path) -> None:
    text = GOOD + (
        "\n[jpo]\ntune = batch_size, learning_rate\nfreeze = epochs\n"
        "batch_size_min = 32\nbatch_size_max = 512\nbatch_size_power_of_two = yes\n"
        "learning_rate_trust_region = 2\n"
    )
    wf = read_workload(_write(tmp_path, text))
    assert wf.jpo.tunable == ("batch_size", "learning_rate")
    assert wf.jpo.frozen == ("num_layers", "epochs")
    lim = wf.jpo.limits["batch_size"]
    assert (lim.min, lim.max, lim.power_of_two) == (32, 512, True)
    narrow = load_constraints().for_workload(wf.jpo)
    assert narrow.spec("learning_rate").trust_region == 2
    assert narrow.tunable == ("batch_size", "learning_rate")


def test_jpo_device(tmp_path: Path) -> None:
    assert read_workload(_write(tmp_path, GOOD)).jpo.device == "gpu"
    wf = read_workload(_write(tmp_path, GOOD + "\n[jpo]\ndevice = CPU  ; no GPU\n"))
    assert wf.jpo.device == "cpu"
    assert (
        check_workload(_write(tmp_path, GOOD + "\n[jpo]\ndevice = cpu\n")).to_dict()["workload"][
            "device"
        ]
        == "cpu"
    )
    p = _write(tmp_path, GOOD + "\n[jpo]\ndevice = tpu\n")
    (problem,) = check_workload(p).problems
    assert (problem.section, problem.key) == ("jpo", "device")
    assert problem.line == GOOD.count("\n") + 3
    assert "'tpu'" in problem.message or "tpu" in problem.message
    assert "gpu" in problem.fix and "cpu" in problem.fix


def test_jpo_narrowing_is_applied_by_check(tmp_path: Path) -> None:
    p = _write(tmp_path, GOOD + "\n[jpo]\nepochs_max = 20\n")
    (problem,) = check_workload(p).problems
    assert problem.key == "epochs" and "above max 20" in problem.message


def test_check_with_other_constraints(tmp_path: Path) -> None:
    toml = (Path(__file__).parents[2] / "configs" / "constraints.toml").read_text()
    c = tmp_path / "c.toml"
    c.write_text(toml.replace("max = 1000 ", "max = 10 "))
    report = check_workload(_write(tmp_path, GOOD), load_constraints(c))
    assert [p.key for p in report.problems] == ["epochs"]


def test_text_api_and_structure_only_parse() -> None:
    wf = parse_workload_text(GOOD.replace("128", "9999"), "x.ini")  # ranges not checked
    assert wf.hyperparameters.batch_size == 9999
    report = check_workload_text(GOOD.replace("128", "9999"), "x.ini", load_constraints())
    assert not report.ok and report.to_dict()["valid"] is False
    with pytest.raises(ConfigError, match=r"x\.ini:7"):
        parse_workload_text(GOOD.replace("128", "12.5"), "x.ini")


def test_to_dict_of_a_valid_file() -> None:
    d = check_workload(EXAMPLE).to_dict()
    assert d["valid"] and d["problems"] == []
    assert d["workload"]["hyperparameters"]["batch_size"] == 128
