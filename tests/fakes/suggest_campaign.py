"""Simulated cifar10-resnet18 runs as a MetricSource, a fixed-action policy, suggest helpers."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from fakes.policy import fixed_action_policy

from jpo.sim.response import ClusterConditions, load_profile, simulate_run
from jpo.stage.suggest import SuggestOptions, SuggestResult, SuggestSettings, suggest
from jpo.telemetry.prometheus import EmptyResult
from jpo.telemetry.sources import MetricSource
from jpo.workload.types import Hyperparameters, WorkloadKey

KEY = WorkloadKey("cifar10", "resnet18", "pytorch")
HP = Hyperparameters(64, 0.05, 18, 30)
CONFIG = """\
# ResNet-18 on CIFAR-10
[workload]
dataset = cifar10
model = resnet18
framework = pytorch

[hyperparameters]
batch_size = 64       ; samples per step
learning_rate = 0.05
num_layers = 18
epochs = 30
"""
_DEFAULT_SETTINGS = SuggestSettings()


make_policy = fixed_action_policy


def run_table(
    hp: Hyperparameters,
    run_id: str,
    *,
    start: float,
    overrides: dict[str, float] | None = None,
    conditions: ClusterConditions | None = None,
) -> pa.Table:
    """A simulated run of cifar10-resnet18; ``overrides`` pins a metric's every sample.

    ``conditions``: the cluster's (default: neutral, no co-tenants, no noise).
    """
    run = simulate_run(
        load_profile("cifar10-resnet18"),
        hp,
        conditions or ClusterConditions(),
        rng=np.random.default_rng(0),
        run_id=run_id,
        start=start,
    )
    table = run.table
    for metric, value in (overrides or {}).items():
        mask = pc.equal(table["metric"], metric)
        values = pc.if_else(mask, pa.scalar(float(value)), table["value"])
        table = table.set_column(table.schema.get_field_index("value"), "value", values)
    return table


def without_gpu_series(table: pa.Table) -> pa.Table:
    """The run as a CPU-only pod exports it: no DCGM series."""
    gpu = pa.array(["gpu_util", "gpu_mem_util"])
    return table.filter(pc.invert(pc.is_in(table["metric"], gpu)))


class FakeSource(MetricSource):
    """Serves the runs it was given; the latest is the last appended."""

    def __init__(self) -> None:
        self.runs: list[pa.Table] = []
        self.error: Exception | None = None

    def add(
        self,
        hp: Hyperparameters,
        run_id: str,
        conditions: ClusterConditions | None = None,
        **overrides: float,
    ) -> None:
        start = time.time() - 3600 + 700 * len(self.runs)
        self.runs.append(
            run_table(hp, run_id, start=start, overrides=overrides, conditions=conditions)
        )

    def list_runs(self, key: WorkloadKey) -> list[str]:
        return [t["run_id"][0].as_py() for t in self.runs]

    def run_table(self, key, run_id=None, *, lookback=None):  # type: ignore[no-untyped-def]
        if self.error is not None:
            raise self.error
        if not self.runs:
            raise EmptyResult(f"workload {key.slug()}: no series (fake)")
        if run_id is None:
            return self.runs[-1]
        return next(t for t in self.runs if t["run_id"][0].as_py() == run_id)

    def history(self, start, end, step):  # type: ignore[no-untyped-def]
        return pa.concat_tables(self.runs)


def run(
    config: Path,
    source: MetricSource,
    policy: Path,
    settings: SuggestSettings = _DEFAULT_SETTINGS,
    **kw: object,
) -> SuggestResult:
    options = SuggestOptions(config=config, policy_path=policy, **kw)  # type: ignore[arg-type]
    return suggest(options, metric_source=source, settings=settings)


def log_of(config: Path) -> Path:
    return config.parent / ".jpo" / "audit.jsonl"


def write_config(tmp_path: Path, text: str = CONFIG) -> Path:
    """Write ``text`` (the example workload by default) as ``tmp_path/app/config.ini``."""
    path = tmp_path / "app" / "config.ini"
    path.parent.mkdir()
    path.write_text(text)
    return path
