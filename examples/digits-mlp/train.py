"""A real PyTorch training job that JPO can tune: an MLP on scikit-learn's digits.

The hyperparameters (batch_size, learning_rate, num_layers, epochs) come from the
``config.ini`` beside this file (read with :func:`jpo.workload.config_file.read_workload`, the same
reader ``jpo suggest`` uses). While it trains, the job exports its real throughput,
validation loss, epoch, hyperparameters and final status on ``/metrics`` with
:class:`jpo.telemetry.exporter.TrainingExporter`, for Prometheus to scrape. Its CPU and memory are
those of this very process.

With ``--pod-port`` the process also exposes its own CPU and memory under cAdvisor's and
kube-state-metrics' names (``local_pod_exporter.py``), standing in for the kubelet.

The data is scikit-learn's bundled digits set (1,797 8x8 images, no download). The training
part is augmented ``--augment`` times with pixel noise so that an epoch lasts long enough
for a scrape; the validation part (20 %, fixed seed) is not augmented.

Usage::

    python examples/digits-mlp/train.py --config examples/digits-mlp/config.ini \
        --port 9400 --run-id run-1 --result result.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=HERE / "config.ini")
    parser.add_argument("--port", type=int, default=0, help="/metrics port (0: no exporter)")
    parser.add_argument(
        "--pod-port", type=int, default=0, help="local pod (cAdvisor-like) /metrics port"
    )
    parser.add_argument("--cpu-limit", type=float, default=1.0, help="declared CPU limit (cores)")
    parser.add_argument(
        "--memory-limit", type=float, default=2 * 1024**3, help="declared memory limit (bytes)"
    )
    parser.add_argument("--run-id", default=None, help="run id label (default: random)")
    parser.add_argument("--result", type=Path, default=None, help="write a JSON summary here")
    parser.add_argument("--augment", type=int, default=8, help="noisy copies of the train set")
    parser.add_argument("--noise", type=float, default=0.05, help="augmentation pixel noise")
    parser.add_argument("--hidden", type=int, default=128, help="width of each hidden layer")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--report-every-s", type=float, default=0.5, help="throughput export period"
    )
    parser.add_argument(
        "--linger-s", type=float, default=0.0, help="keep /metrics up this long after the end"
    )
    return parser.parse_args(argv)


def load_data(augment: int, noise: float, seed: int):  # type: ignore[no-untyped-def]
    """Return (x_train, y_train, x_val, y_val) tensors; pixels scaled into [0, 1]."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_tr, x_val, y_tr, y_val = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    rng = np.random.default_rng(seed)
    copies = [x_tr] + [
        np.clip(x_tr + rng.normal(0.0, noise, x_tr.shape), 0.0, 1.0).astype(np.float32)
        for _ in range(max(augment, 1) - 1)
    ]
    x_tr = np.concatenate(copies)
    y_tr = np.tile(y_tr, len(copies))
    return (
        torch.from_numpy(x_tr),
        torch.from_numpy(y_tr),
        torch.from_numpy(x_val),
        torch.from_numpy(y_val),
    )


def build_model(num_layers: int, hidden: int):  # type: ignore[no-untyped-def]
    """Return an MLP 64 -> hidden x num_layers (ReLU) -> 10."""
    from torch import nn

    layers: list[nn.Module] = []
    width = 64
    for _ in range(num_layers):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from jpo.workload.config_file import read_workload

    workload = read_workload(args.config)
    key, hp = workload.key, workload.hyperparameters
    run_id = args.run_id or uuid.uuid4().hex[:12]

    import torch
    from torch import nn

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    if args.pod_port:
        sys.path.insert(0, str(HERE))
        from local_pod_exporter import LocalPod, LocalPodCollector, serve

        pod = LocalPod(
            pid=os.getpid(),
            dataset=key.dataset,
            model=key.model,
            framework=key.framework,
            run_id=run_id,
            cpu_limit_cores=args.cpu_limit,
            memory_limit_bytes=args.memory_limit,
        )
        serve(LocalPodCollector([pod]), args.pod_port)

    exporter = None
    if args.port:
        from jpo.telemetry.exporter import TrainingExporter

        exporter = TrainingExporter(
            key.dataset, key.model, key.framework, run_id, port=args.port, addr="127.0.0.1"
        ).start()
        exporter.set_hyperparameters(hp)

    x_tr, y_tr, x_val, y_val = load_data(args.augment, args.noise, args.seed)
    model = build_model(hp.num_layers, args.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=hp.learning_rate)
    loss_fn = nn.CrossEntropyLoss()
    n = x_tr.shape[0]
    generator = torch.Generator().manual_seed(args.seed)

    status = "ok"
    val_loss = math.nan
    accuracy = math.nan
    throughputs: list[float] = []
    started = time.perf_counter()
    for epoch in range(1, hp.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator)
        epoch_start = last_report = time.perf_counter()
        done_since_report = 0
        for i in range(0, n, hp.batch_size):
            idx = order[i : i + hp.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_tr[idx]), y_tr[idx])
            loss.backward()
            optimizer.step()
            done_since_report += idx.numel()
            now = time.perf_counter()
            if now - last_report >= args.report_every_s:
                rate = done_since_report / (now - last_report)
                throughputs.append(rate)
                if exporter is not None:
                    exporter.report(throughput=rate, samples=done_since_report)
                last_report, done_since_report = now, 0
        epoch_s = time.perf_counter() - epoch_start
        model.eval()
        with torch.no_grad():
            logits = model(x_val)
            val_loss = float(loss_fn(logits, y_val))
            accuracy = float((logits.argmax(dim=1) == y_val).float().mean())
        if not throughputs or done_since_report:
            throughputs.append(n / max(epoch_s, 1e-9))
        if not math.isfinite(val_loss):
            status = "diverged"
            break
        if exporter is not None:
            exporter.report(
                throughput=throughputs[-1],
                val_loss=val_loss,
                epoch=epoch,
                samples=done_since_report,  # the rest of the epoch since the last report
            )
        print(
            f"epoch {epoch}/{hp.epochs}: val_loss {val_loss:.4f} accuracy {accuracy:.3f} "
            f"({n / max(epoch_s, 1e-9):.0f} samples/s)",
            flush=True,
        )
    wall_s = time.perf_counter() - started
    if exporter is not None:
        exporter.finish(status)
    result = {
        "run_id": run_id,
        "pid": os.getpid(),
        "status": status,
        "hyperparameters": hp.as_dict(),
        "wall_s": wall_s,
        "final_val_loss": val_loss,
        "val_accuracy": accuracy,
        "throughput_mean": sum(throughputs) / len(throughputs) if throughputs else 0.0,
        "train_samples": n,
    }
    if args.result is not None:
        args.result.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result), flush=True)
    if args.linger_s > 0:
        time.sleep(args.linger_s)
    if exporter is not None:
        exporter.stop()  # returns once Prometheus scraped the final status (or after 30 s)
    return 0 if status == "ok" else 3


if __name__ == "__main__":
    sys.exit(main())
