"""What the return to the best (jpo/stage/incumbent.py) adds to one `jpo suggest`, in-process.

Builds a campaign's audit log through the real CI stage (simulated runs of
cifar10-resnet18, a constant policy), then times scoring its newest ``--records`` records
(`scored_runs` + `lower_than_incumbent` + `worse_runs`, as `jpo suggest` calls them) and
prints the median.

    python benchmarks/suggest/bench_incumbent.py --records 20 --repeats 200
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from fakes.suggest_campaign import CONFIG, HP, FakeSource, log_of, make_policy, run  # noqa: E402

from jpo.stage import audit  # noqa: E402
from jpo.stage.incumbent import (  # noqa: E402
    IncumbentSettings,
    lower_than_incumbent,
    scored_runs,
    worse_runs,
)
from jpo.stage.record import suggestion_records  # noqa: E402


def main() -> int:
    """Build the log, time the scoring, print one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "app" / "config.ini"
        config.parent.mkdir()
        config.write_text(CONFIG)
        policy = make_policy(Path(tmp) / "policy", (0.1, 0.0, 0.0, 0.0))
        fake = FakeSource()
        hp = HP
        for i in range(args.records + 1):
            fake.add(hp, f"run-{i}", val_loss=0.5)
            result = run(config, fake, policy)
            hp = result.after or hp
        records = suggestion_records(audit.read_records(log_of(config))[-args.records :])
    settings = IncumbentSettings(window=args.records)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        runs = scored_runs(records, settings)
        lower_than_incumbent(runs, runs[-1].run_id, settings)
        worse_runs(runs, settings)
        times.append(time.perf_counter() - start)
    print(
        json.dumps(
            {
                "records": len(records),
                "scored_runs": len(runs),
                "median_ms": round(statistics.median(times) * 1000, 3),
                "nproc": os.cpu_count(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
