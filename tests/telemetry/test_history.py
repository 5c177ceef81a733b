"""The Parquet history store: partitioning, idempotent appends, reads and summaries."""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from fakes.cluster import FakeRun, canonical_table

from jpo.errors import ConfigError
from jpo.telemetry.history import append_history, read_history, summarize_store
from jpo.telemetry.schema import HISTORY_SCHEMA
from jpo.workload.types import WorkloadKey

T0 = float(int(time.time() // 3600) * 3600 - 3600)
A = FakeRun("cifar10", "resnet18", "pytorch", "r1", T0, T0 + 600)
B = FakeRun("mnist", "mlp", "jax", "r9", T0, T0 + 300, gpu_util_pct=())


def test_append_partitions_by_workload_and_reads_back(tmp_path) -> None:
    table = canonical_table([A, B])
    assert append_history(tmp_path, table) == table.num_rows
    assert (tmp_path / "dataset=cifar10" / "model=resnet18" / "framework=pytorch").is_dir()
    back = read_history(tmp_path)
    assert back.schema.equals(HISTORY_SCHEMA)
    order = [
        (c, "ascending") for c in ("dataset", "model", "framework", "run_id", "metric", "timestamp")
    ]
    assert back.equals(table.sort_by(order))
    only_b = read_history(tmp_path, [WorkloadKey("mnist", "mlp", "jax")])
    assert set(only_b["run_id"].to_pylist()) == {"r9"}
    assert read_history(tmp_path, []).num_rows == 0


def test_overlapping_appends_add_no_duplicates(tmp_path) -> None:
    first = canonical_table([A])
    assert append_history(tmp_path, first) == first.num_rows
    assert append_history(tmp_path, first) == 0
    longer = canonical_table([FakeRun("cifar10", "resnet18", "pytorch", "r1", T0, T0 + 900)])
    added = append_history(tmp_path, longer)
    assert added == longer.num_rows - first.num_rows
    doubled = pa.concat_tables([longer, longer])
    assert append_history(tmp_path, doubled) == 0
    assert read_history(tmp_path).num_rows == longer.num_rows


def test_duplicates_inside_one_append_are_dropped(tmp_path) -> None:
    table = canonical_table([A])
    assert append_history(tmp_path, pa.concat_tables([table, table])) == table.num_rows


def test_hostile_workload_names_stay_inside_the_store(tmp_path) -> None:
    weird = FakeRun("../../etc", "a/b=c", "x%2Fy", "r1", T0, T0 + 60)
    table = canonical_table([weird])
    assert append_history(tmp_path, table) == table.num_rows
    assert not (tmp_path.parent / "etc").exists()
    back = read_history(tmp_path, [WorkloadKey("../../etc", "a/b=c", "x%2Fy")])
    assert back.num_rows == table.num_rows
    assert set(back["model"].to_pylist()) == {"a/b=c"}


def test_wrong_schema_is_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="lacks column"):
        append_history(tmp_path, pa.table({"timestamp": [1]}))
    bad = (
        canonical_table([A])
        .drop_columns(["value"])
        .append_column("value", pa.array(["x"] * canonical_table([A]).num_rows))
    )
    with pytest.raises(ConfigError, match="HISTORY_SCHEMA"):
        append_history(tmp_path, bad)


def test_summarize_store(tmp_path) -> None:
    assert summarize_store(tmp_path / "none").rows == 0
    append_history(tmp_path, canonical_table([A, B]))
    summary = summarize_store(tmp_path)
    assert summary.files == 2 and summary.bytes > 0
    slugs = [w.key.slug() for w in summary.workloads]
    assert slugs == ["cifar10.resnet18.pytorch", "mnist.mlp.jax"]
    a = summary.workloads[0]
    assert a.runs == 1 and "gpu_util" in a.metrics
    assert a.first.timestamp() == T0 and a.last.timestamp() == T0 + 600
    assert summary.rows == sum(w.rows for w in summary.workloads)
    assert pc.sum(pa.array([w.rows for w in summary.workloads])).as_py() == summary.rows
