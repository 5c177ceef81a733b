"""Cold `jpo suggest` wall time with a local policy against a local Prometheus.

Each sample is a fresh process (`jpo suggest --config ... --prometheus ... --policy ...`)
on a fresh copy of config.ini (so every run does the full path: check, telemetry, features,
policy, guards, validation, atomic write, audit record). Side by side in the same run:
`python -c pass` (interpreter floor) and `jpo --help` (CLI import floor).

    python benchmarks/suggest/bench_cold_suggest.py --runs 15
"""

from __future__ import annotations

import argparse
import io
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from jpo.cli.demo import LocalPrometheus  # noqa: E402
from jpo.learning.features import FEATURE_SPEC_VERSION, OBSERVATION_NAMES  # noqa: E402
from jpo.policy.artifact import write_artifact  # noqa: E402
from jpo.sim.response import ClusterConditions, load_profile, simulate_run  # noqa: E402
from jpo.sim.simulator import write_openmetrics  # noqa: E402
from jpo.workload.types import HYPERPARAMETER_NAMES, Hyperparameters  # noqa: E402

JPO = str(Path(sys.executable).parent / "jpo")


def policy_like_sac(folder: Path) -> Path:
    """A random actor of SAC's default shape (obs -> 256 -> 256 -> 2*act)."""
    rng = np.random.default_rng(0)
    n_obs, n_act, h = len(OBSERVATION_NAMES), len(HYPERPARAMETER_NAMES), 256
    shapes = {"l0": (h, n_obs), "l1": (h, h), "l2": (2 * n_act, h)}
    weights = {}
    for name, shape in shapes.items():
        weights[f"{name}.weight"] = (rng.normal(size=shape) * 0.05).astype("f4")
        weights[f"{name}.bias"] = np.zeros(shape[0], "f4")
    layers = [
        {"weight": "l0.weight", "bias": "l0.bias", "activation": "relu"},
        {"weight": "l1.weight", "bias": "l1.bias", "activation": "relu"},
        {"weight": "l2.weight", "bias": "l2.bias", "activation": "linear"},
    ]
    return write_artifact(
        folder,
        weights,
        {
            "policy_version": 1,
            "feature_spec_version": FEATURE_SPEC_VERSION,
            "observation": {
                "names": list(OBSERVATION_NAMES),
                "mean": [0.0] * n_obs,
                "std": [1.0] * n_obs,
            },
            "action": {"names": list(HYPERPARAMETER_NAMES)},
            "network": {"layers": layers},
        },
    )


def timed(cmd: list[str], expect: set[int]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if done.returncode not in expect:
        raise SystemExit(
            f"{cmd} exited {done.returncode}: {done.stderr[-2000:]}{done.stdout[-500:]}"
        )
    return dt


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-suggest-"))
    prom = LocalPrometheus(work)
    try:
        hp = Hyperparameters(64, 0.05, 18, 30)
        run = simulate_run(
            load_profile("cifar10-resnet18"),
            hp,
            ClusterConditions(),
            rng=np.random.default_rng(0),
            run_id="r1",
            start=time.time() - 6 * 3600,
        )
        buf = io.StringIO()
        write_openmetrics([run], buf)
        prom.backfill(buf.getvalue(), "bench")
        url = prom.start()
        policy = policy_like_sac(work / "policy")
        template = (REPO / "examples" / "workloads" / "cifar10-resnet18" / "config.ini").read_text()
        template = template.replace("batch_size = 128", "batch_size = 64").replace(
            "learning_rate = 0.05", "learning_rate = 0.05"
        )
        # warm the OS page cache once (not counted)
        timed([sys.executable, "-c", "pass"], {0})
        samples: dict[str, list[float]] = {
            "python -c pass": [],
            "jpo --help": [],
            "jpo suggest": [],
        }
        for i in range(args.runs):
            folder = work / f"app-{i}"
            folder.mkdir()
            (folder / "config.ini").write_text(template)
            samples["python -c pass"].append(timed([sys.executable, "-c", "pass"], {0}))
            samples["jpo --help"].append(timed([JPO, "--help"], {0}))
            samples["jpo suggest"].append(
                timed(
                    [
                        JPO,
                        "suggest",
                        "--config",
                        str(folder / "config.ini"),
                        "--prometheus",
                        url,
                        "--policy",
                        str(policy),
                        "--approve",
                    ],
                    {0, 10},
                )
            )
        py = platform.python_version()
        out = [f"runs: {args.runs} cold processes each, interleaved; python {py}"]
        for name, xs in samples.items():
            xs_ms = sorted(x * 1000 for x in xs)
            out.append(
                f"{name:16s} median {statistics.median(xs_ms):7.0f} ms   min {xs_ms[0]:6.0f} ms   "
                f"max {xs_ms[-1]:6.0f} ms"
            )
        med = {k: statistics.median(v) for k, v in samples.items()}
        out.append(f"ratio suggest / --help: {med['jpo suggest'] / med['jpo --help']:.2f}")
        print("\n".join(out))
    finally:
        prom.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
