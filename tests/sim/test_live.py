"""Live simulated pods (jpo.sim.live, `jpo simulate run`): raw metrics over HTTP."""

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from jpo.sim.live import LiveWorkload
from jpo.sim.response import ClusterConditions, load_profile

REPO = Path(__file__).resolve().parents[2]
RAW_SERIES = [
    "container_cpu_usage_seconds_total",
    "container_memory_working_set_bytes",
    "kube_pod_container_resource_limits",
    "kube_pod_labels",
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "jpo_training_throughput_samples_per_second",
    "jpo_training_samples_total",
    "jpo_training_validation_loss",
    "jpo_training_epoch",
    "jpo_training_elapsed_seconds",
    "jpo_training_hyperparameter",
    "jpo_training_run_status",
]


def parse(text):
    """{(name, labels): value} of an exposition text."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{.*\})? (\S+)", line)
        assert m, line
        out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def value(samples, metric, **labels):
    hits = [
        v
        for (n, lab), v in samples.items()
        if n == metric and all(f'{k}="{x}"' in lab for k, x in labels.items())
    ]
    assert len(hits) == 1, (metric, labels, hits)
    return hits[0]


def test_live_pod_serves_raw_series_and_advances():
    p = load_profile("cifar10-resnet18")
    live = LiveWorkload(p, p.defaults, ClusterConditions(), speedup=1.0, run_id="t1", linger_s=0)
    live.start()
    try:
        r = httpx.get(live.url, timeout=10)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        s = parse(r.text)
        assert {n for n, _ in s} == set(RAW_SERIES)
        pod = "resnet18-t1"
        assert (
            value(
                s,
                "kube_pod_labels",
                pod=pod,
                label_dataset="cifar10",
                label_model="resnet18",
                label_framework="pytorch",
                label_run_id="t1",
            )
            == 1
        )
        assert (
            value(s, "kube_pod_container_resource_limits", pod=pod, resource="cpu", unit="core")
            == p.limits.cpu_cores
        )
        assert (
            value(s, "DCGM_FI_DEV_GPU_UTIL", pod=pod, namespace="training", container="trainer")
            == 0
        )  # still starting up
        assert value(s, "jpo_training_hyperparameter", run_id="t1", name="batch_size") == 128
        assert value(s, "jpo_training_run_status", run_id="t1") == 0
        assert httpx.get(live.url.replace("/metrics", "/nope"), timeout=10).status_code == 404
        # simulated time: mid-run, then after the end
        t0 = live._current.t0_wall
        mid = parse(live.snapshot(t0 + p.startup_s + 120))
        assert value(mid, "DCGM_FI_DEV_GPU_UTIL", pod=pod) > 10
        assert value(mid, "jpo_training_throughput_samples_per_second", run_id="t1") > 0
        assert value(mid, "jpo_training_epoch", run_id="t1") >= 1
        late = parse(live.snapshot(t0 + 1e6))
        assert value(late, "jpo_training_run_status", run_id="t1") == 1
        assert value(late, "jpo_training_epoch", run_id="t1") == p.defaults.epochs
        cpu_mid = value(mid, "container_cpu_usage_seconds_total", pod=pod)
        assert value(late, "container_cpu_usage_seconds_total", pod=pod) > cpu_mid
    finally:
        live.stop()


def test_counter_scaled_to_wall_clock():
    p = load_profile("adult-mlp")
    fast = LiveWorkload(p, p.defaults, ClusterConditions(), speedup=10.0, run_id="a")
    slow = LiveWorkload(p, p.defaults, ClusterConditions(), speedup=1.0, run_id="a")
    try:
        sim_t = p.startup_s + 30
        f = parse(fast.snapshot(fast._current.t0_wall + sim_t / 10))
        s = parse(slow.snapshot(slow._current.t0_wall + sim_t))
        key = (
            "container_cpu_usage_seconds_total",
            next(lab for n, lab in s if n == "container_cpu_usage_seconds_total"),
        )
        assert f[key] == pytest.approx(s[key] / 10)
    finally:
        fast.stop()
        slow.stop()


def test_the_workloads_own_series_are_in_simulated_time():
    """Samples trained on and training time are exported as the run counts them."""
    p = load_profile("adult-mlp")
    fast = LiveWorkload(p, p.defaults, ClusterConditions(), speedup=10.0, run_id="a")
    try:
        late = parse(fast.snapshot(fast._current.t0_wall + 1e6))
        run = fast.current_run
        assert value(late, "jpo_training_elapsed_seconds", run_id="a") == run.summary.duration_s
        assert (
            value(late, "jpo_training_samples_total", run_id="a") == run.series["samples_total"][-1]
        )
    finally:
        fast.stop()


@pytest.mark.slow
def test_prometheus_reads_a_fast_pods_run_in_simulated_time(prometheus_factory, tmp_path):
    """A pod 300 x faster than the wall clock: duration, GPU-hours, throughput as simulated."""
    from jpo.cli.demo import _live_catalog
    from jpo.learning.features import summarize_run
    from jpo.telemetry.sources import PrometheusSource

    p = load_profile("cifar10-resnet18")  # about 2,400 s simulated: 8 s here
    live = LiveWorkload(p, p.defaults, ClusterConditions(), speedup=300.0, run_id="e1")
    live.start()
    try:
        prom = prometheus_factory(targets=[("pod", f"127.0.0.1:{live.port}")])
        source = PrometheusSource.from_url(prom.url, _live_catalog(tmp_path))
        live.wait()  # the run ends and its final state stays scraped for linger_s
        got = summarize_run(source.run_table(p.key, "e1"), gpus=p.limits.gpus)
    finally:
        live.stop()
    want = live.current_run.summary
    assert got.failure == "none"
    assert got.duration_s == pytest.approx(want.duration_s)  # not the ~8 wall seconds
    assert got.gpu_hours == pytest.approx(want.gpu_hours)
    assert got.throughput == pytest.approx(want.throughput)


def test_consecutive_runs_get_new_run_ids():
    p = load_profile("adult-mlp")
    live = LiveWorkload(
        p, p.defaults, ClusterConditions(), speedup=1.0, runs=2, run_id="r", gap_s=10
    )
    try:
        end = live._current.offsets[-1]
        text = live.snapshot(live._current.t0_wall + end + 20)
        assert 'run_id="r-2"' in text and 'run_id="r"' not in text
    finally:
        live.stop()


def jpo_cli():
    exe = Path(sys.executable).parent / "jpo"
    return (
        [str(exe)]
        if exe.exists()
        else [sys.executable, "-c", "import sys; from jpo.cli.app import main; sys.exit(main())"]
    )


def start_pod(*args):
    proc = subprocess.Popen(
        [*jpo_cli(), "simulate", "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    line = proc.stdout.readline()
    m = re.search(r"on (http://127\.0\.0\.1:(\d+)/metrics)", line)
    if not m:
        proc.kill()
        pytest.fail(f"no URL line from jpo simulate run: {line!r} {proc.stderr.read()}")
    return proc, m.group(1), m.group(2)


def test_jpo_simulate_run_process_with_config():
    cfg = REPO / "examples" / "workloads" / "imdb-lstm" / "config.ini"
    proc, url, _port = start_pod(
        "--workload",
        "imdb-lstm",
        "--config",
        str(cfg),
        "--speedup",
        "5",
        "--run-id",
        "cli1",
        "--linger-s",
        "60",
    )
    try:
        s = parse(httpx.get(url, timeout=10).text)
        assert value(s, "kube_pod_labels", label_dataset="imdb", label_run_id="cli1") == 1
        assert value(s, "jpo_training_hyperparameter", name="learning_rate") == 0.001
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_jpo_simulate_run_rejects_unknown_workload():
    done = subprocess.run(
        [*jpo_cli(), "simulate", "run", "--workload", "nope"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 2
    assert "unknown workload profile 'nope'" in done.stderr


@pytest.mark.slow
def test_real_prometheus_scrapes_two_simulated_pods(prometheus_factory):
    from jpo.telemetry.sources import PrometheusSource
    from jpo.workload.types import WorkloadKey

    pods = [
        start_pod(
            "--workload", "adult-mlp", "--speedup", "20", "--run-id", "p1", "--linger-s", "120"
        ),
        start_pod(
            "--workload",
            "imagenet-efficientnet",
            "--speedup",
            "600",
            "--run-id",
            "p2",
            "--linger-s",
            "120",
        ),
    ]
    try:
        prom = prometheus_factory(start=False)
        for i, (_proc, _url, port) in enumerate(pods):
            prom.add_target(f"127.0.0.1:{port}", job=f"pod{i}")
        prom.start()
        prom.wait_for_scrape("pod0")
        prom.wait_for_scrape("pod1")
        res = prom.wait_for('kube_pod_labels{namespace="training"}', lambda r: len(r) == 2)
        assert {r["metric"]["label_run_id"] for r in res} == {"p1", "p2"}
        # GPU utilization shows up once training starts (start-up is simulated too)
        prom.wait_for('DCGM_FI_DEV_GPU_UTIL{pod="efficientnet-b0-p2"} > 0', timeout_s=120)
        # and the telemetry layer reads the pod through its templates
        time.sleep(3)
        source = PrometheusSource.from_url(prom.url)
        key = WorkloadKey("imagenet", "efficientnet_b0", "tensorflow")
        assert "p2" in source.list_runs(key)
    finally:
        for proc, _url, _port in pods:
            proc.terminate()
            proc.wait(timeout=30)
