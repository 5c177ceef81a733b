"""History generation (jpo.sim.simulator): Parquet store, OpenMetrics, promtool round trip."""

import io
import itertools
import math

import numpy as np
import pyarrow.compute as pc
import pytest

from jpo.errors import ConfigError
from jpo.sim.simulator import (
    RUNS_MANIFEST,
    generate_history,
    generate_runs,
    raw_families,
    read_manifest,
    write_openmetrics,
)
from jpo.telemetry.history import read_history
from jpo.telemetry.schema import HISTORY_SCHEMA

WORKLOADS = ["cifar10-resnet18", "adult-mlp", "squad-bert-large"]
END = 1_790_000_000.0


def test_generate_runs_is_deterministic_and_sequential():
    a = generate_runs(WORKLOADS, 3, seed=5, end=END)
    b = generate_runs(WORKLOADS, 3, seed=5, end=END)
    assert [r.summary for r in a] == [r.summary for r in b]
    assert all(x.table.equals(y.table) for x, y in zip(a, b, strict=True))
    for name in WORKLOADS:
        runs = [r for r in a if r.profile.name == name]
        assert len(runs) == 3
        for prev, nxt in itertools.pairwise(runs):
            assert nxt.times_s[0] > prev.times_s[-1]  # one after the other
        assert runs[-1].times_s[-1] < END
        assert all(r.times_s[0] % 15 == 0 and r.times_s[-1] % 15 == 0 for r in runs)
    assert len({(r.profile.name, r.run_id) for r in a}) == len(a)


def test_history_varies_hyperparameters_within_constraints():
    from jpo.workload.constraints import load_constraints

    constraints = load_constraints()
    runs = generate_runs(["cifar10-resnet18"], 30, seed=1, end=END)
    hps = {r.hp for r in runs}
    assert len(hps) > 5
    assert runs[0].profile.defaults in hps
    for hp in hps:
        constraints.validate(hp)


def test_generate_history_writes_parquet_and_manifest(tmp_path):
    out = tmp_path / "history"
    result = generate_history(WORKLOADS, 2, out, seed=3, end=END)
    table = read_history(out)
    assert table.schema.equals(HISTORY_SCHEMA)
    assert table.num_rows == result.parquet_rows == sum(r.table.num_rows for r in result.runs)
    assert set(pc.unique(table["model"]).to_pylist()) == {"resnet18", "mlp", "bert_large"}
    manifest = read_manifest(out / RUNS_MANIFEST)
    assert [m["run_id"] for m in manifest] == [r.run_id for r in result.runs]
    assert manifest[0]["summary"]["failure"] == result.runs[0].summary.failure
    # appending the same generation again adds nothing (the store dedups)
    assert generate_history(WORKLOADS, 2, out, seed=3, end=END).parquet_rows == 0


def test_openmetrics_text_is_well_formed():
    runs = generate_runs(["cifar10-resnet18", "imagenet-resnet50"], 1, seed=0, end=END)
    buf = io.StringIO()
    count = write_openmetrics(runs, buf)
    text = buf.getvalue()
    assert text.endswith("# EOF\n")
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(types) == len(set(types))  # families are not interleaved
    assert "container_cpu_usage_seconds" in types
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert len(samples) == count
    # 4 GPUs on the ImageNet pod: one DCGM series per GPU
    gpu_series = {
        line.split(" ")[0]
        for line in samples
        if line.startswith("DCGM_FI_DEV_GPU_UTIL") and "resnet50" in line
    }
    assert len(gpu_series) == 4
    # the cAdvisor counter is cumulative
    fams = {f.name: f for f in raw_families(runs[0])}
    counter = fams["container_cpu_usage_seconds"].samples[0].values
    assert np.all(np.diff(counter) >= 0)


def test_promtool_accepts_the_openmetrics(tmp_path):
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool missing: sudo apt-get install -y prometheus")
    om = tmp_path / "h.om"
    generate_history(WORKLOADS, 2, tmp_path / "store", openmetrics=om, seed=2, end=END)
    done = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(om), str(tmp_path / "tsdb")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert any((tmp_path / "tsdb").iterdir())


def _by_time(table, metric):
    t = table.filter(pc.equal(table["metric"], metric))
    return dict(zip(t["timestamp"].to_pylist(), t["value"].to_pylist(), strict=True))


@pytest.mark.slow
def test_promtool_round_trip_through_real_prometheus(tmp_path, prometheus_factory):
    """Generate -> promtool backfill -> real Prometheus -> PrometheusSource == Parquet."""
    import time

    from jpo.telemetry.sources import PrometheusSource

    end = math.floor(time.time() / 15) * 15 - 600
    om = tmp_path / "history.om"
    store = tmp_path / "store"
    result = generate_history(
        ["cifar10-resnet18", "squad-bert-large", "imagenet-resnet50"],
        2,
        store,
        openmetrics=om,
        seed=11,
        end=end,
    )
    prom = prometheus_factory(openmetrics=[om.read_text()])
    source = PrometheusSource.from_url(prom.url)
    parquet = read_history(store)
    exact = [
        "gpu_util",
        "mem_util",
        "gpu_mem_util",
        "gpu_mem_used_mib",
        "gpu_mem_total_mib",
        "throughput",
        "val_loss",
        "epoch",
        "run_status",
        "hp_batch_size",
        "hp_learning_rate",
        "hp_num_layers",
        "hp_epochs",
    ]
    for run in result.runs:
        key = run.profile.key
        got = source.run_table(key, run.run_id)
        want = parquet.filter(
            pc.and_(pc.equal(parquet["run_id"], run.run_id), pc.equal(parquet["model"], key.model))
        )
        for metric in exact:
            g, w = _by_time(got, metric), _by_time(want, metric)
            # run discovery (coarse 60 s steps) may miss the run's first scrapes
            assert set(g) <= set(w), (run.run_id, metric)
            assert len(g) >= len(w) - 60 // 15, (run.run_id, metric)
            assert max(g) == max(w)
            for ts, value in g.items():
                assert value == pytest.approx(w[ts], rel=1e-9, abs=1e-12), (metric, ts)
        # CPU goes through rate() over cAdvisor's counter (a 1 m window lags the
        # per-scrape values, most at the start-up edge): same mean within 10 %
        g, w = _by_time(got, "cpu_util"), _by_time(want, "cpu_util")
        common = sorted(set(g) & set(w))
        assert len(common) >= len(w) - 5
        assert np.mean([g[t] for t in common]) == pytest.approx(
            np.mean([w[t] for t in common]), rel=0.1
        )
        assert (
            _by_time(got, "run_status")[max(_by_time(got, "run_status"))]
            == {"none": 1, "oom": 2, "diverged": 3}[run.summary.failure]
        )

    # `jpo history pull` reads the same gauges back into a Parquet store of its own
    from jpo.cli.app import main

    pulled_root = tmp_path / "pulled"
    # the window covers the whole generated history (two 90-epoch ImageNet runs: ~23 h)
    oldest_s = pc.min(parquet["timestamp"]).as_py().timestamp()
    since_h = math.ceil((time.time() - oldest_s) / 3600) + 1
    args = ["history", "pull", "--prometheus", prom.url, "--since", f"{since_h}h", "--step", "15s"]
    assert main([*args, "--out", str(pulled_root)]) == 0
    pulled = read_history(pulled_root)
    for metric in ("gpu_util", "throughput", "val_loss", "hp_batch_size", "run_status"):
        want = parquet.filter(pc.equal(parquet["metric"], metric))
        got = pulled.filter(pc.equal(pulled["metric"], metric))
        got_values = {
            (r["model"], r["run_id"], r["timestamp"]): r["value"] for r in got.to_pylist()
        }
        for r in want.to_pylist():
            k = (r["model"], r["run_id"], r["timestamp"])
            assert k in got_values, (metric, k)
            assert got_values[k] == pytest.approx(r["value"], rel=1e-9, abs=1e-12), (metric, k)


def test_generate_history_with_start_and_end_stays_inside_the_window(tmp_path):
    """Runs asked for between start and end lie within [start, end] (no overrun)."""
    # 6 h / 4 runs and 8 h / 12 runs overran `end` by 0.1 h and 0.7 h before the fix
    for hours, runs in ((72, 1), (6, 4), (8, 12)):
        start = END - hours * 3600
        out = tmp_path / f"h{runs}"
        result = generate_history(WORKLOADS, runs, out, seed=2, start=start, end=END)
        assert len(result.runs) == runs * len(WORKLOADS)
        for run in result.runs:
            assert start <= run.times_s[0] and run.times_s[-1] <= END, run.run_id
        table = read_history(out)
        lo, hi = pc.min(table["timestamp"]).as_py(), pc.max(table["timestamp"]).as_py()
        assert lo.timestamp() >= start and hi.timestamp() <= END
        per_workload: dict[str, list] = {}
        for run in result.runs:
            per_workload.setdefault(run.profile.name, []).append(run)
        for seq in per_workload.values():  # in order, never overlapping
            for a, b in itertools.pairwise(seq):
                assert a.times_s[-1] < b.times_s[0]


def test_generate_runs_that_cannot_fit_the_window_say_so():
    with pytest.raises(ConfigError, match="move start earlier or end later"):
        generate_runs(["cifar10-resnet18"], 5, seed=0, start=END - 600, end=END)


def test_a_sample_cap_thins_long_runs_only_and_keeps_their_summary():
    from jpo.learning.features import summarize_run

    # coco-yolov5's runs last ~58 h: ~14,000 scrapes at 15 s; squad-bert-large's ~5 min
    full = generate_runs(["coco-yolov5", "squad-bert-large"], 2, seed=4, end=END)
    capped = generate_runs(
        ["coco-yolov5", "squad-bert-large"], 2, seed=4, end=END, max_samples_per_run=1000
    )
    for a, b in zip(full, capped, strict=True):
        assert a.hp == b.hp
        if a.profile.name == "squad-bert-large":  # under the cap: the very same run
            assert a.table.equals(b.table)
            continue
        assert len(b.times_s) <= 1001 < len(a.times_s)
        assert np.all(np.diff(b.times_s) % 15 == 0)  # still on the scrape grid
        gpus = a.profile.limits.gpus
        sa, sb = summarize_run(a.table, gpus=gpus), summarize_run(b.table, gpus=gpus)
        assert sb.failure == sa.failure
        for name in ("throughput", "gpu_util_mean", "cpu_util_mean", "duration_s"):
            assert getattr(sb, name) == pytest.approx(getattr(sa, name), rel=0.02), name
        assert sb.final_val_loss == pytest.approx(sa.final_val_loss, rel=0.01)
