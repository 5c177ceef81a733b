"""jpo.stage.suggest end to end over simulated runs (fast), plus the no-ray/no-torch import check.

Telemetry comes from an in-memory MetricSource fed with jpo.sim.response.simulate_run
tables; the policy is a tiny artifact with a fixed action. The real-Prometheus path is in
test_demo.py / the slow tests below.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from fakes.suggest_campaign import (
    CONFIG,
    HP,
    FakeSource,
    log_of,
    make_policy,
    run,
    run_table,
    without_gpu_series,
)

from jpo.errors import ConfigError, ExitCode
from jpo.learning.features import OBSERVATION_NAMES
from jpo.sim.response import ClusterConditions, load_profile, simulate_run
from jpo.stage import audit
from jpo.stage.record import suggestion_records
from jpo.stage.suggest import SuggestOptions, SuggestSettings, SuggestStatus, suggest
from jpo.workload.types import Hyperparameters, WorkloadKey

SETTINGS = SuggestSettings()


def test_changed_writes_the_file_keeps_comments_and_audits(
    config: Path, source: FakeSource, policy_up: Path
) -> None:
    result = run(config, source, policy_up)
    assert result.status is SuggestStatus.CHANGED and result.exit_code == ExitCode.OK
    assert result.after is not None and result.after.batch_size > 64
    text = config.read_text()
    assert f"batch_size = {result.after.batch_size}" in text
    assert "; samples per step" in text and "# ResNet-18 on CIFAR-10" in text
    (record,) = audit.read_records(log_of(config))
    assert record.changed and record.reason == "policy"
    assert record.before["batch_size"] == 64
    assert record.after["batch_size"] == result.after.batch_size
    assert record.telemetry["run_id"] == "run-1"
    assert record.telemetry["summary"]["throughput"] > 0
    assert len(record.features) == len(OBSERVATION_NAMES)
    assert record.policy_version == "1" and record.source == f"file:{policy_up}"
    assert json.dumps(result.to_json())  # --json is serializable


def test_the_policys_learning_rate_coupling_is_applied(
    config: Path, source: FakeSource, tmp_path: Path
) -> None:
    """lr follows batch with the exponent in the policy's manifest (none: uncoupled)."""
    coupled = make_policy(tmp_path / "coupled", (0.5, 0.0, 0.0, 0.0), coupling=1.0)
    result = run(config, source, coupled, dry_run=True)
    assert result.after is not None and result.after.batch_size > 64
    # the linear scaling rule, written with 3 significant digits (configs/constraints.toml)
    lr = result.after.learning_rate
    assert lr == pytest.approx(0.05 * result.after.batch_size / 64, rel=5e-3)
    assert float(f"{lr:.2e}") == lr
    plain = run(config, source, make_policy(tmp_path / "plain", (0.5, 0.0, 0.0, 0.0)), dry_run=True)
    assert plain.after is not None and plain.after.learning_rate == 0.05


def test_dry_run_writes_nothing(config: Path, source: FakeSource, policy_up: Path) -> None:
    result = run(config, source, policy_up, dry_run=True)
    assert result.status is SuggestStatus.DRY_RUN and result.exit_code == ExitCode.OK
    assert result.diff() and not result.written
    assert config.read_text() == CONFIG
    assert not log_of(config).exists()


def test_no_trustworthy_data_leaves_the_file_untouched(config: Path, policy_up: Path) -> None:
    empty = FakeSource()
    result = run(config, empty, policy_up)
    assert result.status is SuggestStatus.NO_DATA
    assert result.exit_code == ExitCode.UNCHANGED_NO_DATA
    assert "no trustworthy telemetry" in result.message
    assert config.read_text() == CONFIG


class _GpuLimitSource(FakeSource):
    """A fake that, like kube-state-metrics, knows the pods' nvidia_com_gpu limit."""

    def run_gpus(self, key: WorkloadKey, run_id: str) -> int | None:
        return 1


@pytest.mark.parametrize("knows_gpus", [False, True])
def test_a_run_without_gpu_series_says_whether_the_pod_has_a_gpu(
    config: Path, policy_up: Path, knows_gpus: bool
) -> None:
    """No DCGM series: the message names the metric, and a CPU-only pod as the likely cause."""
    source = _GpuLimitSource() if knows_gpus else FakeSource()
    source.add(HP, "run-1")
    source.runs[0] = without_gpu_series(source.runs[0])
    result = run(config, source, policy_up)
    assert result.exit_code == ExitCode.UNCHANGED_NO_DATA
    assert "no 'gpu_util' samples" in result.message
    cpu_only = "no nvidia_com_gpu limit either" in result.message
    assert cpu_only is not knows_gpus  # a GPU pod without DCGM data is a telemetry gap
    assert ("add `device = cpu` to the [jpo] section of" in result.message) is cpu_only
    assert config.read_text() == CONFIG


def test_a_cpu_device_workload_is_tuned_from_its_pods_cpu_and_memory(
    config: Path, policy_up: Path
) -> None:
    """[jpo] device = cpu: suggest, feedback and rollback work without GPU series."""
    config.write_text(CONFIG + "\n[jpo]\ndevice = cpu\n")
    fake = FakeSource()
    # A CPU job's training loop keeps its CPU ~busy whatever the batch: the GPU roofline's
    # predicted gain (+0.7 % here) must not veto the batch step as it would on a GPU.
    fake.add(HP, "run-1", val_loss=0.5, cpu_util=0.97)
    fake.runs[0] = without_gpu_series(fake.runs[0])
    first = run(config, fake, policy_up)
    assert first.status is SuggestStatus.CHANGED and first.after is not None
    assert first.after.batch_size > HP.batch_size and first.predicted_gain is None
    gpu = FakeSource()
    gpu.add(HP, "run-1", val_loss=0.5, gpu_util=0.97)
    gpu_config = config.with_name("gpu.ini")
    gpu_config.write_text(CONFIG)
    on_gpu = run(gpu_config, gpu, policy_up, dry_run=True)
    assert on_gpu.after is not None and on_gpu.after.batch_size == HP.batch_size
    assert not any("GPU count" in n for n in first.notes)  # the pod is the one device
    (record,) = audit.read_records(log_of(config))
    summary = record.telemetry["summary"]
    assert summary["gpu_util_mean"] == summary["cpu_util_mean"]
    assert summary["gpu_mem_util_p95"] == summary["mem_util_p95"]
    fake.add(first.after, "run-2", val_loss=0.8)  # 60 % worse than run-1
    fake.runs[1] = without_gpu_series(fake.runs[1])
    second = run(config, fake, policy_up)
    assert second.status is SuggestStatus.ROLLED_BACK and second.after == HP
    outcome = audit.read_records(log_of(config))[0].outcome
    assert outcome is not None and outcome["degraded"] is True and outcome["run_id"] == "run-2"
    # the replay env trains on GPU workloads only: the run is not added to its history
    assert not (config.parent / ".jpo" / "history").exists()


def test_invalid_config_is_an_input_error_and_untouched(
    config: Path, source: FakeSource, policy_up: Path
) -> None:
    bad = CONFIG.replace("epochs = 30", "epochs = 1e400")
    config.write_text(bad)
    with pytest.raises(ConfigError, match="epochs") as err:
        run(config, source, policy_up)
    assert err.value.exit_code == ExitCode.INVALID_INPUT
    assert config.read_text() == bad


def test_tiny_action_is_unchanged_by_choice(
    config: Path, source: FakeSource, tmp_path: Path
) -> None:
    policy = make_policy(tmp_path / "tiny", (0.0, 0.02, 0.0, 0.0))
    result = run(config, source, policy)
    assert result.status is SuggestStatus.UNCHANGED
    assert result.exit_code == ExitCode.UNCHANGED_BY_CHOICE
    assert config.read_text() == CONFIG
    assert any(n.startswith("hysteresis") for n in result.notes)


def test_large_change_needs_approval(config: Path, source: FakeSource, policy_up: Path) -> None:
    strict = SETTINGS.updated({"approval": {"max_relative_change": 0.1}})
    result = run(config, source, policy_up, settings=strict)
    assert result.status is SuggestStatus.NEEDS_APPROVAL
    assert result.exit_code == ExitCode.NEEDS_APPROVAL
    assert "--approve" in result.message
    assert config.read_text() == CONFIG
    approved = run(config, source, policy_up, settings=strict, approve=True)
    assert approved.status is SuggestStatus.CHANGED


def test_memory_guard_refuses_a_batch_that_would_not_fit(config: Path, policy_up: Path) -> None:
    fake = FakeSource()
    fake.add(HP, "run-1", gpu_mem_util=0.8)
    result = run(config, fake, policy_up)
    assert result.status is SuggestStatus.UNCHANGED
    assert any("memory guard" in n and "MiB" in n for n in result.notes)
    assert config.read_text() == CONFIG


def test_a_config_that_ran_out_of_memory_is_never_resuggested(
    config: Path, policy_up: Path
) -> None:
    fake = FakeSource()
    fake.add(HP, "run-1")
    first = run(config, fake, policy_up)
    assert first.after is not None
    oom_hp = first.after
    fake.add(oom_hp, "run-2", run_status=2)  # OOM with the suggested values
    second = run(config, fake, policy_up)
    # run-2 failed: rollback to the known-good values first
    assert second.status is SuggestStatus.ROLLED_BACK
    assert second.after == HP
    fake.add(HP, "run-3")
    third = run(config, fake, policy_up)
    assert third.status is SuggestStatus.UNCHANGED
    assert any("failed-config memory" in n and "oom" in n for n in third.notes)
    assert f"batch_size = {HP.batch_size}" in config.read_text()


def test_degraded_run_is_fed_back_and_rolled_back(config: Path, policy_up: Path) -> None:
    fake = FakeSource()
    fake.add(HP, "run-1", val_loss=0.5)
    first = run(config, fake, policy_up)
    assert first.status is SuggestStatus.CHANGED and first.after is not None
    fake.add(first.after, "run-2", val_loss=0.8)  # 60 % worse than run-1
    second = run(config, fake, policy_up)
    assert second.status is SuggestStatus.ROLLED_BACK
    assert second.after == HP
    assert any(n.startswith("feedback: run run-2") for n in second.notes)
    assert any("worsened validation loss" in n for n in second.notes)
    records = audit.read_records(log_of(config))
    assert records[0].outcome is not None and records[0].outcome["degraded"] is True
    assert records[0].outcome["run_id"] == "run-2"
    assert records[1].reason.startswith("rollback")
    assert f"batch_size = {HP.batch_size}" in config.read_text()
    # the finished run went into the history store too
    assert any((config.parent / ".jpo" / "history").rglob("*.parquet"))


def test_no_second_change_before_the_workload_ran_with_the_first(
    config: Path, source: FakeSource, policy_up: Path
) -> None:
    first = run(config, source, policy_up)
    assert first.status is SuggestStatus.CHANGED
    again = run(config, source, policy_up)
    assert again.status is SuggestStatus.UNCHANGED
    assert "predates the values written" in again.message


def test_unreachable_endpoint_without_fallback_changes_nothing(
    config: Path, source: FakeSource, policy_up: Path
) -> None:
    fast = SETTINGS.updated({"endpoint": {"timeout_s": 0.3, "retries": 0}})
    kw = {"endpoint": "http://127.0.0.1:9", "settings": fast}
    result = run(config, source, policy_up, fallback_local=False, **kw)  # type: ignore[arg-type]
    assert result.status is SuggestStatus.POLICY_UNAVAILABLE
    assert result.exit_code == ExitCode.POLICY
    assert "unreachable" in result.message and "left unchanged" in result.message
    assert config.read_text() == CONFIG
    fallback = run(config, source, policy_up, fallback_local=True, **kw)  # type: ignore[arg-type]
    assert fallback.status is SuggestStatus.CHANGED
    assert fallback.policy_source == f"file:{policy_up}"
    assert any("fell back" in n for n in fallback.notes)


def test_suggest_path_imports_neither_ray_nor_torch(
    config: Path, policy_up: Path, tmp_path: Path
) -> None:
    """The CI path in a fresh interpreter: suggest() end to end, then inspect sys.modules."""
    table = run_table(HP, "run-1", start=time.time() - 3600)
    data = tmp_path / "run.arrow"
    with pa.OSFile(str(data), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    script = textwrap.dedent(
        f"""
        import sys
        import pyarrow as pa
        from pathlib import Path
        from jpo.stage.suggest import SuggestOptions, suggest
        from jpo.telemetry.sources import MetricSource

        class One(MetricSource):
            def list_runs(self, key): return ["run-1"]
            def run_table(self, key, run_id=None, *, lookback=None):
                return pa.ipc.open_file({str(data)!r}).read_all()
            def history(self, start, end, step): raise NotImplementedError

        opts = SuggestOptions(config=Path({str(config)!r}), policy_path=Path({str(policy_up)!r}))
        result = suggest(opts, metric_source=One())
        import jpo.cli.app, jpo.cli.commands.suggest  # the command modules too
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("ray", "torch"))
        print(result.status.value, heavy)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "changed []"


def test_without_pandas_keeps_pyarrow_working_and_pandas_out() -> None:
    """The pyarrow calls of the CI path work inside without_pandas() and import no pandas."""
    script = textwrap.dedent(
        """
        import sys
        import numpy as np, pyarrow as pa, pyarrow.compute as pc
        from jpo.telemetry.sources import without_pandas
        with without_pandas():
            t = pa.table({"v": pa.array([1.0, float("nan")]), "s": pa.array(["a", "b"])})
            t = t.filter(pc.is_finite(t["v"]))
            assert t.column("v").to_numpy().tolist() == [1.0]
            assert t["s"].dictionary_encode().to_pylist() == ["a"]
            pa.schema([("a", pa.int64())]).empty_table(); pa.scalar(1, pa.int64())
            inside = "pandas" in sys.modules
        import pandas  # importable again after the block
        print(inside, t.to_pandas().shape)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "(1,", "2)"]


# ------------------------------------------------------- CLI against a real Prometheus


def _openmetrics(runs: list) -> str:  # type: ignore[type-arg]
    import io

    from jpo.sim.simulator import write_openmetrics

    buf = io.StringIO()
    write_openmetrics(runs, buf)
    return buf.getvalue()


HEAVY = ("ray", "torch", "pandas", "scipy", "gymnasium")
"""Modules the CI stage must not import (SPEC section 1: fast, no Ray or torch)."""


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    script = (
        "import sys\n"
        "from jpo.cli.app import main\n"
        "rc = main(sys.argv[1:])\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.slow
def test_cli_suggest_and_feedback_against_a_real_prometheus(
    prometheus_factory,  # type: ignore[no-untyped-def]
    config: Path,
    policy_up: Path,
) -> None:
    profile = load_profile("cifar10-resnet18")
    now = time.time()
    run1 = simulate_run(
        profile,
        HP,
        ClusterConditions(),
        rng=np.random.default_rng(1),
        run_id="r1",
        start=now - 6 * 3600,
    )
    prom = prometheus_factory(openmetrics=[_openmetrics([run1])])
    base = ["--config", str(config), "--prometheus", prom.url, "--policy", str(policy_up)]

    dry = _cli("suggest", *base, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["status"] == "dry_run"
    assert config.read_text() == CONFIG
    assert "HEAVY []" in dry.stderr  # no ray, torch, pandas, scipy, gymnasium on the CI path

    done = _cli("suggest", *base, "--json")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["status"] == "changed" and payload["run_id"] == "r1"
    assert f"batch_size = {payload['after']['batch_size']}" in config.read_text()
    assert "HEAVY []" in done.stderr

    again = _cli("suggest", *base)
    assert again.returncode == int(ExitCode.UNCHANGED_BY_CHOICE), again.stderr
    assert "predates the values written" in again.stdout

    missing = _cli("feedback", "--config", str(config), "--run-id", "r2", "--prometheus", prom.url)
    # issue 26: the CI stage's telemetry faults share one code with suggest's (was 4)
    assert missing.returncode == int(ExitCode.UNCHANGED_NO_DATA)
    assert missing.stderr.startswith("error: ") and "Traceback" not in missing.stderr

    nodata = _cli(
        "suggest",
        "--config",
        str(config),
        "--prometheus",
        "http://127.0.0.1:9",
        "--policy",
        str(policy_up),
    )
    assert nodata.returncode == int(ExitCode.UNCHANGED_NO_DATA)
    assert "Traceback" not in nodata.stderr + nodata.stdout

    down = _cli(
        *base[:0], "suggest", *base, "--endpoint", "http://127.0.0.1:9", "--no-fallback-local"
    )
    assert down.returncode in (int(ExitCode.POLICY), int(ExitCode.UNCHANGED_BY_CHOICE))
    assert "Traceback" not in down.stderr + down.stdout


@pytest.mark.slow
def test_cli_suggest_dry_run_imports_no_heavy_module(
    prometheus_factory,  # type: ignore[no-untyped-def]
    config: Path,
    policy_up: Path,
) -> None:
    """`jpo suggest --dry-run`, full path against a real Prometheus, then sys.modules."""
    run1 = simulate_run(
        load_profile("cifar10-resnet18"),
        HP,
        ClusterConditions(),
        rng=np.random.default_rng(1),
        run_id="r1",
        start=time.time() - 6 * 3600,
    )
    prom = prometheus_factory(openmetrics=[_openmetrics([run1])])
    for fmt in ((), ("--json",)):
        done = _cli(
            "suggest",
            "--config",
            str(config),
            "--prometheus",
            prom.url,
            "--policy",
            str(policy_up),
            "--dry-run",
            *fmt,
        )
        assert done.returncode == 0, done.stderr
        assert "dry run" in done.stdout or '"dry_run"' in done.stdout
        assert "HEAVY []" in done.stderr, done.stderr
    assert config.read_text() == CONFIG


def test_a_failed_audit_append_puts_the_old_values_back(
    config: Path, source: FakeSource, policy_up: Path, tmp_path: Path
) -> None:
    from jpo.errors import WriteError

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")  # the log's parent is a file: appending fails
    with pytest.raises(WriteError):
        run(config, source, policy_up, log_path=blocker / "audit.jsonl")
    assert config.read_text() == CONFIG  # byte for byte


@pytest.mark.slow
def test_gpu_hours_use_the_pods_gpu_limit(
    prometheus_factory,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    policy_up: Path,
) -> None:
    """A 4-GPU pod (simulator's imagenet-resnet50) counts 4x the GPU-hours; unknown: 1 + note."""
    from jpo.learning.features import summarize_run
    from jpo.telemetry.sources import ParquetSource, PrometheusSource

    profile = load_profile("imagenet-resnet50")
    assert profile.limits.gpus == 4
    run1 = simulate_run(
        profile,
        Hyperparameters(256, 0.1, 50, 2),
        ClusterConditions(),
        rng=np.random.default_rng(3),
        run_id="g1",
        start=time.time() - 6 * 3600,
    )
    prom = prometheus_factory(openmetrics=[_openmetrics([run1])])
    key = WorkloadKey(profile.dataset, profile.model, profile.framework)
    source = PrometheusSource.from_url(prom.url)
    table = source.run_table(key)
    assert source.run_gpus(key, "g1") == 4
    assert PrometheusSource.from_url(prom.url).run_gpus(key, "g1") == 4  # no cached span
    assert source.run_gpus(key, "no-such-run") is None
    one = summarize_run(table)
    folder = tmp_path / "app"
    folder.mkdir()
    example = Path(__file__).parents[2] / "examples" / "workloads" / "imagenet-resnet50"
    config = folder / "config.ini"
    config.write_text((example / "config.ini").read_text())
    result = suggest(
        SuggestOptions(config=config, policy_path=policy_up, approve=True), metric_source=source
    )
    assert result.status is SuggestStatus.CHANGED, result.message
    assert not any("GPU count" in n for n in result.notes)
    (record,) = audit.read_records(folder / ".jpo" / "audit.jsonl")
    assert pytest.approx(one.gpu_hours * 4) in _floats(record, "gpu_hours")

    # a source that cannot tell (Parquet history): 1 GPU, and the audit record says so
    from jpo.sim.simulator import write_parquet

    write_parquet([run1], tmp_path / "history")
    config.write_text((example / "config.ini").read_text())
    log = tmp_path / "other.jsonl"
    result = suggest(
        SuggestOptions(config=config, policy_path=policy_up, approve=True, log_path=log),
        metric_source=ParquetSource(tmp_path / "history"),
    )
    assert any("GPU count of run 'g1' unknown" in n for n in result.notes)
    (record,) = audit.read_records(log)
    assert "gpu_hours assume 1 GPU" in json.dumps(record.model_dump(mode="json"))
    parquet_one = summarize_run(ParquetSource(tmp_path / "history").run_table(key))
    assert pytest.approx(parquet_one.gpu_hours) in _floats(record, "gpu_hours")


def _floats(record: object, name: str) -> list[float]:
    """Every value of key ``name`` anywhere in a pydantic record."""
    found: list[float] = []

    def walk(x: object) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                if k == name and isinstance(v, int | float):
                    found.append(float(v))
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(record.model_dump(mode="json"))  # type: ignore[attr-defined]
    return found


def test_a_rolled_back_degraded_config_is_not_proposed_again(config: Path, policy_up: Path) -> None:
    remember = SETTINGS.updated(
        {
            "failed_configs": {
                "remember_degraded": True,
                "repeat_tolerance": 0.05,
                "retry_more_epochs": False,
            }
        }
    )
    fake = FakeSource()
    fake.add(HP, "run-1", val_loss=0.5)
    first = run(config, fake, policy_up, settings=remember)
    assert first.status is SuggestStatus.CHANGED and first.after is not None
    fake.add(first.after, "run-2", val_loss=0.8)  # 60 % worse: rolled back
    assert run(config, fake, policy_up, settings=remember).status is SuggestStatus.ROLLED_BACK
    fake.add(HP, "run-3", val_loss=0.5)
    # the policy sees the same run again and asks for the same step: refused
    third = run(config, fake, policy_up, settings=remember)
    assert third.status is SuggestStatus.UNCHANGED
    assert any("failed with degraded in run run-2" in n for n in third.notes)


def test_memory_checks_what_is_left_after_the_hysteresis_guard(
    config: Path, tmp_path: Path
) -> None:
    # batch and learning rate up; at full GPU utilization the batch-gain guard drops the
    # batch step, so only the learning-rate step is written
    policy = make_policy(tmp_path / "policy-both", (0.5, 0.5, 0.0, 0.0))
    remember = SETTINGS.updated(
        {"failed_configs": {"remember_degraded": True, "repeat_tolerance": 0.05}}
    )
    fake = FakeSource()
    fake.add(HP, "run-1", gpu_util=1.0, val_loss=0.5)
    first = run(config, fake, policy, settings=remember)
    assert first.status is SuggestStatus.CHANGED and first.after is not None
    assert first.after.batch_size == HP.batch_size
    assert first.after.learning_rate > HP.learning_rate
    fake.add(first.after, "run-2", gpu_util=1.0, val_loss=0.8)  # degraded: rolled back
    assert run(config, fake, policy, settings=remember).status is SuggestStatus.ROLLED_BACK
    fake.add(HP, "run-3", gpu_util=1.0, val_loss=0.5)
    # the full proposal (batch and lr up) is no repeat, but what the guards leave of it is
    third = run(config, fake, policy, settings=remember)
    assert third.status is SuggestStatus.UNCHANGED
    assert any("failed with degraded in run run-2" in n for n in third.notes)


def test_defaults_that_run_out_of_memory_are_stepped_down_not_rolled_back_to(
    config: Path, policy_up: Path
) -> None:
    fake = FakeSource()
    fake.add(HP, "run-1", run_status=2)  # the workload's own defaults ran out of memory
    first = run(config, fake, policy_up)
    # not the policy's batch increase: the batch halves, the learning rate follows it
    assert first.status is SuggestStatus.CHANGED and first.after is not None
    assert first.after.batch_size == HP.batch_size // 2
    assert first.after.learning_rate == pytest.approx(HP.learning_rate / 2)
    assert first.after.num_layers == HP.num_layers and first.after.epochs == HP.epochs
    assert any(n.startswith("recovery: run run-1 failed (oom)") for n in first.notes)
    fake.add(first.after, "run-2", run_status=2)  # still too big
    second = run(config, fake, policy_up)
    # nothing ever ran: no rollback to the failing defaults, a second step down instead
    assert second.status is SuggestStatus.CHANGED and second.after is not None
    assert second.after.batch_size == HP.batch_size // 4
    records = audit.read_records(log_of(config))
    assert [r.reason.split(":")[0] for r in records] == ["recovery", "recovery"]
    fake.add(second.after, "run-3")  # it fits: the policy is asked again
    third = run(config, fake, policy_up)
    assert third.status is SuggestStatus.CHANGED and third.after is not None
    assert third.after.batch_size > second.after.batch_size
    assert audit.read_records(log_of(config))[-1].reason == "policy"


def test_a_diverged_default_lowers_the_learning_rate(config: Path, policy_up: Path) -> None:
    fake = FakeSource()
    fake.add(HP, "run-1", run_status=3)  # diverged
    result = run(config, fake, policy_up)
    assert result.status is SuggestStatus.CHANGED and result.after is not None
    assert result.after.learning_rate < HP.learning_rate
    assert result.after.batch_size == HP.batch_size
    assert any("recovery: run run-1 failed (diverged)" in n for n in result.notes)


def test_failure_recovery_can_be_switched_off(config: Path, policy_up: Path) -> None:
    fake = FakeSource()
    fake.add(HP, "run-1", run_status=2)
    off = SETTINGS.updated({"rollback": {"recover_failures": False}})
    result = run(config, fake, policy_up, settings=off)
    assert not any(n.startswith("recovery") for n in result.notes)
    # the policy's batch increase dominates the OOM run: refused, the file stays
    assert result.status is SuggestStatus.UNCHANGED
    assert any("failed-config memory" in n and "oom" in n for n in result.notes)
    assert config.read_text() == CONFIG


def _step_then_idle(config: Path, policy: Path, settings: SuggestSettings = SETTINGS):  # type: ignore[no-untyped-def]
    """run-1, one policy step, then run-2 with it: trained, val loss +4 % (inside the
    rollback tolerance), GPU and CPU idle. Return the source, both suggestions' results."""
    fake = FakeSource()
    fake.add(HP, "run-1", val_loss=0.5)
    first = run(config, fake, policy, settings=settings)
    assert first.status is SuggestStatus.CHANGED and first.after is not None
    fake.add(first.after, "run-2", val_loss=0.52, gpu_util=0.02, cpu_util=0.02)
    return fake, first, run(config, fake, policy, settings=settings)


def test_a_step_that_scored_lower_returns_to_the_best_known_good_values(
    config: Path, policy_up: Path
) -> None:
    fake, _, second = _step_then_idle(config, policy_up)
    assert second.status is SuggestStatus.ROLLED_BACK
    assert second.after == HP
    assert any(
        n.startswith("rollback: run run-2 (objective") and "best known-good run run-1" in n
        for n in second.notes
    )
    assert f"batch_size = {HP.batch_size}" in config.read_text()
    assert audit.read_records(log_of(config))[-1].reason.startswith("rollback: run run-2")
    # the policy, asked again from the same values, wants the same step: not again
    fake.add(HP, "run-3", val_loss=0.5)
    third = run(config, fake, policy_up)
    assert third.status is SuggestStatus.UNCHANGED
    assert any(
        "scored below the campaign's best known-good run in run run-2" in n for n in third.notes
    )


def test_returning_to_the_best_can_be_switched_off(config: Path, policy_up: Path) -> None:
    off = SETTINGS.updated({"incumbent": {"enabled": False}})
    _, first, second = _step_then_idle(config, policy_up, off)
    assert second.status is SuggestStatus.CHANGED and second.after is not None
    assert second.after.batch_size > first.after.batch_size


def test_a_lower_score_within_the_margin_keeps_going(config: Path, policy_up: Path) -> None:
    wide = SETTINGS.updated({"incumbent": {"margin": 10.0}})  # no objective gap is this large
    _, _, second = _step_then_idle(config, policy_up, wide)
    assert second.status is SuggestStatus.CHANGED
    assert not any("best known-good" in n for n in second.notes)


def test_only_the_newest_records_are_scored_against_the_oldest_of_them(
    config: Path, policy_up: Path
) -> None:
    from jpo.stage.incumbent import IncumbentSettings, scored_runs

    fake = FakeSource()
    fake.add(HP, "run-1", val_loss=0.5)
    first = run(config, fake, policy_up)
    assert first.after is not None
    fake.add(first.after, "run-2", val_loss=0.5)
    second = run(config, fake, policy_up)
    assert second.status is SuggestStatus.CHANGED and second.after is not None
    fake.add(second.after, "run-3", val_loss=0.5)
    run(config, fake, policy_up)
    records = suggestion_records(audit.read_records(log_of(config))[:2])  # both with outcomes
    every = scored_runs(records, IncumbentSettings(window=20))
    assert [r.run_id for r in every] == ["run-1", "run-2", "run-3"]
    assert every[0].hyperparameters == HP
    newest = scored_runs(records, IncumbentSettings(window=1))
    # the reference is now run-2, the base of the newest record, scored against itself
    assert [r.run_id for r in newest] == ["run-2", "run-3"]
    assert newest[0].hyperparameters == first.after
    from jpo.learning.reward import load_reward_weights, objective_vs_run

    run_2 = records[1].basis.summary
    run_3 = records[1].outcome.summary if records[1].outcome is not None else None
    assert run_2 is not None and run_3 is not None
    weights = load_reward_weights()
    assert newest[0].objective == pytest.approx(objective_vs_run(run_2, run_2, weights))
    assert newest[1].objective == pytest.approx(objective_vs_run(run_3, run_2, weights))
    assert scored_runs(records, IncumbentSettings(window=0)) == []


def test_the_return_to_the_best_never_leaves_the_trust_region(config: Path, tmp_path: Path) -> None:
    from jpo.stage.rollback import step_towards
    from jpo.workload.constraints import load_constraints

    constraints = load_constraints()
    far = Hyperparameters(
        batch_size=4 * HP.batch_size, learning_rate=0.05, num_layers=18, epochs=30
    )
    back = step_towards(constraints, far, HP)
    assert back.batch_size == 2 * HP.batch_size  # halfway: one trust-region step (x2)
    constraints.validate(back, previous=far)
    near = Hyperparameters(
        batch_size=2 * HP.batch_size, learning_rate=0.05, num_layers=18, epochs=30
    )
    assert step_towards(constraints, near, HP) == HP


def test_a_degraded_step_is_retried_once_with_more_epochs(config: Path, policy_up: Path) -> None:
    fake = FakeSource()
    fake.add(HP, "run-1", val_loss=0.5)
    first = run(config, fake, policy_up)
    assert first.status is SuggestStatus.CHANGED and first.after is not None
    assert first.after.epochs == HP.epochs
    fake.add(first.after, "run-2", val_loss=0.8)  # 60 % worse: rolled back
    assert run(config, fake, policy_up).status is SuggestStatus.ROLLED_BACK
    fake.add(HP, "run-3", val_loss=0.5)
    # the policy asks for the same step; it comes back with the epochs one step up (x1.5)
    third = run(config, fake, policy_up)
    assert third.status is SuggestStatus.CHANGED and third.after is not None
    assert third.after.batch_size == first.after.batch_size
    assert third.after.epochs == 45
    assert any("retried with more epochs" in n for n in third.notes)
    # that longer step degraded too: both are remembered, and nothing else is tried
    fake.add(third.after, "run-4", val_loss=0.8)
    assert run(config, fake, policy_up).status is SuggestStatus.ROLLED_BACK
    fake.add(HP, "run-5", val_loss=0.5)
    fifth = run(config, fake, policy_up)
    assert fifth.status is SuggestStatus.UNCHANGED
    assert f"epochs = {HP.epochs}" in config.read_text()


def test_a_run_within_the_rollback_tolerance_is_kept(config: Path, policy_up: Path) -> None:
    # +4 % against run-1 (inside the rollback tolerance, 5 %): kept, the policy goes on
    fake = FakeSource()
    fake.add(HP, "run-1", val_loss=0.5)
    first = run(config, fake, policy_up)
    assert first.after is not None
    fake.add(first.after, "run-2", val_loss=0.52)
    assert run(config, fake, policy_up).status is SuggestStatus.CHANGED


def test_a_hand_edited_run_is_scored_with_the_values_it_ran(config: Path, policy_up: Path) -> None:
    from jpo.stage.incumbent import IncumbentSettings, scored_runs
    from jpo.stage.record import SuggestionRecord

    fake = FakeSource()
    fake.add(HP, "run-1", val_loss=0.5)
    first = run(config, fake, policy_up)
    assert first.status is SuggestStatus.CHANGED and first.after is not None
    # someone trains longer by hand before the next run
    config.write_text(config.read_text().replace("epochs = 30", "epochs = 45"))
    edited = replace(first.after, epochs=45)
    fake.add(edited, "run-2", val_loss=0.5)
    run(config, fake, policy_up)
    record = audit.read_records(log_of(config))[0]
    assert record.outcome is not None and record.outcome["hyperparameters"]["epochs"] == 45
    assert SuggestionRecord.of(record).ran == edited
    runs = scored_runs([SuggestionRecord.of(record)], IncumbentSettings())
    assert [r.hyperparameters for r in runs] == [HP, edited]


def test_jpo_log_names_each_workloads_best_known_good_run(
    config: Path,
    policy_up: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from jpo.cli import app as cli

    monkeypatch.setenv("COLUMNS", "250")
    _step_then_idle(config, policy_up)  # run-2 scored below run-1: back to run-1's values
    assert cli.main(["log", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "best known-good run of cifar10.resnet18.pytorch: run-1 (batch_size=64," in out
    assert "against its first run run-1" in out
