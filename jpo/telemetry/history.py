"""The telemetry history store: a Parquet dataset of HISTORY_SCHEMA rows.

Layout (hive partitioning, one folder per workload; values URI-encoded)::

    <root>/dataset=cifar10/model=resnet18/framework=pytorch/part-<uuid>.parquet

Files hold ``timestamp, run_id, metric, value``; the partition columns come back from
the folder names on read. :func:`append_history` is idempotent: rows whose key
``(timestamp, dataset, model, framework, run_id, metric)`` is already stored (or repeated
within the appended table) are dropped, so re-pulling an overlapping range adds nothing
twice. Writers are serialized with a lock file in ``root``; each part file is written to a
temporary name and renamed into place, so readers never see half a file.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from filelock import FileLock

from jpo.errors import ConfigError, WriteError
from jpo.telemetry.schema import HISTORY_SCHEMA, PARTITION_COLUMNS
from jpo.workload.types import WorkloadKey

ROW_KEY: tuple[str, ...] = ("timestamp", "run_id", "metric")
"""Columns that, with the partition columns, identify one stored sample."""

FILE_SCHEMA = pa.schema(
    [HISTORY_SCHEMA.field(n) for n in HISTORY_SCHEMA.names if n not in PARTITION_COLUMNS]
)
_PARTITIONING = ds.partitioning(
    pa.schema([pa.field(c, pa.string()) for c in PARTITION_COLUMNS]), flavor="hive"
)


def _conform(table: pa.Table) -> pa.Table:
    missing = set(HISTORY_SCHEMA.names) - set(table.column_names)
    if missing:
        raise ConfigError(
            f"history table lacks column(s) {sorted(missing)}; it must follow"
            " jpo.telemetry.schema.HISTORY_SCHEMA"
        )
    try:
        return table.select(HISTORY_SCHEMA.names).cast(HISTORY_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as err:
        raise ConfigError(f"history table does not match HISTORY_SCHEMA: {err}") from err


def _partition_dir(root: Path, key: WorkloadKey) -> Path:
    parts = [f"{c}={quote(getattr(key, c), safe='')}" for c in PARTITION_COLUMNS]
    return root.joinpath(*parts)


def _dedup(table: pa.Table) -> pa.Table:
    """Keep the first row of every (timestamp, run_id, metric) key."""
    if table.num_rows == 0:
        return table
    indexed = table.append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    first = indexed.group_by(list(ROW_KEY), use_threads=False).aggregate([("_row", "min")])
    rows = np.sort(first["_row_min"].to_numpy())
    return table.take(pa.array(rows))


def append_history(root: str | Path, table: pa.Table) -> int:
    """Append HISTORY_SCHEMA rows to the store under ``root``; return the rows added."""
    root = Path(root)
    table = _conform(table)
    if table.num_rows == 0:
        return 0
    added = 0
    tmp: Path | None = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root / ".lock")):
            for key, rows in _split_by_workload(table):
                new = _dedup(rows.select(FILE_SCHEMA.names))
                folder = _partition_dir(root, key)
                existing = _read_partition_keys(folder)
                if existing is not None and existing.num_rows:
                    new = new.join(existing, keys=list(ROW_KEY), join_type="left anti")
                if new.num_rows == 0:
                    continue
                folder.mkdir(parents=True, exist_ok=True)
                name = f"part-{uuid.uuid4().hex}.parquet"
                tmp = folder / f".{name}.tmp"
                order = [("run_id", "ascending"), ("metric", "ascending")]
                order.append(("timestamp", "ascending"))
                pq.write_table(new.sort_by(order).cast(FILE_SCHEMA), tmp, compression="zstd")
                os.replace(tmp, folder / name)
                tmp = None
                added += new.num_rows
    except OSError as err:
        if tmp is not None:
            tmp.unlink(missing_ok=True)  # no half-written part file stays behind
        why = err.strerror or str(err)
        at = f" ({err.filename})" if getattr(err, "filename", None) else ""
        raise WriteError(
            f"{root}: cannot write the history store: {why}{at}; pass a writable folder"
            " (--history, or [paths] history_root in configs/suggest.toml)"
        ) from err
    return added


def _split_by_workload(table: pa.Table) -> list[tuple[WorkloadKey, pa.Table]]:
    """Split rows by (dataset, model, framework) with one sort, no per-workload scan."""
    code = np.zeros(table.num_rows, dtype=np.int64)
    dictionaries = []
    for column in PARTITION_COLUMNS:
        encoded = pc.dictionary_encode(table[column]).combine_chunks()
        dictionaries.append(encoded.dictionary.to_pylist())
        code = code * len(encoded.dictionary) + encoded.indices.to_numpy(zero_copy_only=False)
    order = np.argsort(code, kind="stable")
    sorted_codes = code[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    ends = np.r_[starts[1:], len(sorted_codes)]
    ordered = table.take(pa.array(order))
    parts = []
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
        c, names = int(sorted_codes[lo]), []
        for values in reversed(dictionaries):
            c, i = divmod(c, len(values))
            names.append(values[i])
        key = WorkloadKey(*reversed(names))
        parts.append((key, ordered.slice(lo, hi - lo)))
    return parts


def _read_partition_keys(folder: Path) -> pa.Table | None:
    files = sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []
    if not files:
        return None
    return pa.concat_tables(pq.read_table(f, columns=list(ROW_KEY)) for f in files)


def _dataset(root: Path) -> ds.Dataset | None:
    if not root.is_dir() or not any(root.rglob("part-*.parquet")):
        return None
    return ds.dataset(
        root,
        format="parquet",
        partitioning=_PARTITIONING,
        exclude_invalid_files=False,
        ignore_prefixes=[".", "_"],
    )


def read_history(root: str | Path, workloads: Iterable[WorkloadKey] | None = None) -> pa.Table:
    """Read stored rows (all, or only ``workloads``), sorted, as HISTORY_SCHEMA."""
    root = Path(root)
    dataset = _dataset(root)
    if dataset is None:
        return HISTORY_SCHEMA.empty_table()
    expr = None
    if workloads is not None:
        keys = list(workloads)
        if not keys:
            return HISTORY_SCHEMA.empty_table()
        for key in keys:
            one = (
                (ds.field("dataset") == key.dataset)
                & (ds.field("model") == key.model)
                & (ds.field("framework") == key.framework)
            )
            expr = one if expr is None else expr | one
    table = dataset.to_table(filter=expr)
    table = table.select(HISTORY_SCHEMA.names).cast(HISTORY_SCHEMA)
    order = ["dataset", "model", "framework", "run_id", "metric", "timestamp"]
    return table.sort_by([(c, "ascending") for c in order])


@dataclass(frozen=True, slots=True)
class WorkloadSummary:
    """What the store holds for one workload."""

    key: WorkloadKey
    runs: int
    rows: int
    metrics: tuple[str, ...]
    first: datetime
    last: datetime


@dataclass(frozen=True, slots=True)
class StoreSummary:
    """What the store under ``root`` holds, per workload."""

    root: Path
    files: int
    bytes: int
    rows: int
    workloads: tuple[WorkloadSummary, ...]


def summarize_store(root: str | Path) -> StoreSummary:
    """Summarize the store: files, bytes, and per workload its runs, rows, metrics, span."""
    root = Path(root)
    files = sorted(root.rglob("part-*.parquet")) if root.is_dir() else []
    table = read_history(root)
    summaries = []
    if table.num_rows:
        grouped = table.group_by(list(PARTITION_COLUMNS)).aggregate(
            [
                ("run_id", "count_distinct"),
                ("value", "count"),
                ("metric", "distinct"),
                ("timestamp", "min"),
                ("timestamp", "max"),
            ]
        )
        for row in grouped.to_pylist():
            summaries.append(
                WorkloadSummary(
                    key=WorkloadKey(row["dataset"], row["model"], row["framework"]),
                    runs=row["run_id_count_distinct"],
                    rows=row["value_count"],
                    metrics=tuple(sorted(row["metric_distinct"])),
                    first=row["timestamp_min"],
                    last=row["timestamp_max"],
                )
            )
    summaries.sort(key=lambda w: w.key.slug())
    return StoreSummary(
        root=root,
        files=len(files),
        bytes=sum(f.stat().st_size for f in files),
        rows=table.num_rows,
        workloads=tuple(summaries),
    )
