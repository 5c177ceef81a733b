"""Time Constraints.apply_action and .normalize, the calls the Gymnasium env makes per step.

Run: python benchmarks/constraints/bench.py  (prints a Markdown table: median of 7 repeats)
(``--number``/``--repeats`` shrink it; tests/benchmarks/test_rerun_commands.py runs it tiny)
"""

from __future__ import annotations

import argparse
import statistics
import timeit

import numpy as np

from jpo.workload.config_file import JpoSection
from jpo.workload.constraints import ParamLimits, load_constraints
from jpo.workload.types import Hyperparameters

N = 20_000
REPEATS = 7


def _median_us(fn) -> float:
    runs = timeit.repeat(fn, number=N, repeat=REPEATS)
    return statistics.median(runs) / N * 1e6


def main() -> None:
    global N, REPEATS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=N, help="calls per repeat")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args()
    N, REPEATS = args.number, args.repeats
    c = load_constraints()
    pow2 = c.for_workload(
        JpoSection(limits={"batch_size": ParamLimits(power_of_two=True, min=8, max=1024)})
    )
    hp = Hyperparameters(128, 0.01, 18, 30)
    rng = np.random.default_rng(0)
    actions = [rng.uniform(-1, 1, 4) for _ in range(64)]
    i = iter(range(10**12))

    def apply() -> None:
        c.apply_action(hp, actions[next(i) % 64])

    def apply_pow2() -> None:
        pow2.apply_action(hp, actions[next(i) % 64])

    rows = [
        ("apply_action (default limits)", _median_us(apply)),
        ("apply_action (power-of-two batch size)", _median_us(apply_pow2)),
        ("normalize", _median_us(lambda: c.normalize(hp))),
        ("validate (with previous)", _median_us(lambda: c.validate(hp, previous=hp))),
        (
            "apply_action + normalize (one env step)",
            _median_us(lambda: c.normalize(c.apply_action(hp, actions[0]))),
        ),
    ]
    print("| call | median µs per call |")
    print("|---|---|")
    for name, us in rows:
        print(f"| {name} | {us:.2f} |")


if __name__ == "__main__":
    main()
