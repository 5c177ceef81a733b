"""Generate the frozen "broad" test set of workload profiles (issue 25, item 2; issue 30).

    python benchmarks/evaluate/make_testset.py [--set broad-v2] [--out DIR] [--count 36]

Draws ``--count`` profiles from a prior BROADER than the training one
(``jpo/sim/randomization.py``): every catalog profile (both splits) may be the base, every
constant is spread further (``SPREAD_POWER`` x the training spreads in log space), and
each profile is pushed into one regime, in turn:

    lr_high        default learning rate 2.5-8x its best for the default batch (below divergence)
    lr_low         default learning rate 1/12-1/3 of its best
    epochs_many    default epochs 2.5-5x what converges (overfits, wastes GPU-hours)
    epochs_few     default epochs 0.35-0.7x what converges (under-trained)
    finetune       a pretrained model: depth fixed (``[jpo] freeze = ["num_layers"]``)
    memory_bound   the default uses 70-88 % of the GPU's memory
    input_bound    the input pipeline's CPU time per step is 1.5-4x the GPU's
    multi_gpu      2, 4 or 8 GPUs per pod (data parallel)
    idle_gpu       a GPU mostly idle: step overhead x4-12, small default batch

Frameworks cycle over every framework the catalog names. A draw is kept only when its
default (or the default made to train, the oracle's reference) trains and one default run
lasts 0.05-48 h, as for the training profiles. Each version of the set has its seed fixed
in ``SEEDS`` (written down before the set was generated, and before any score on it):
rerunning the script on the same catalog reproduces its files byte for byte. A set is
generated and committed BEFORE any policy or method is scored on it; it is a TEST set
(configs/evaluate.toml ``[sets.broad]``): never tune, select or calibrate anything on it.
The committed files stay as they are (frozen), whatever a rerun on a changed catalog gives:

    broad-v1  seed 252026, drawn from the pre-grounding catalog (commit 2efba68, issue 25);
              kept for the record (issue 30's figures before/after); a rerun on today's
              catalog no longer reproduces it (check out 2efba68 to do so)
    broad-v2  seed 302026, the same rule drawn from the grounded catalog (issue 30): the
              broad test set of configs/evaluate.toml since issue 30
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

SEEDS = {
    "broad-v1": 25_2026,  # issue 25, pre-grounding catalog: frozen
    "broad-v2": 30_2026,  # issue 30, grounded catalog: chosen before generating or scoring
}
"""Seed of each version of the set (a new version gets a new, fresh seed)."""
DEFAULT_SET = "broad-v2"
SPREAD_POWER = 1.5  # training spreads s become s**1.5 (a broader prior)
REGIMES = (
    "lr_high",
    "lr_low",
    "epochs_many",
    "epochs_few",
    "finetune",
    "memory_bound",
    "input_bound",
    "multi_gpu",
    "idle_gpu",
)
MIN_HOURS, MAX_HOURS = 0.05, 48.0
MAX_TRIES = 200

Data = dict[str, dict[str, Any]]


def _factor(rng: np.random.Generator, spread: float) -> float:
    if spread <= 1.0:
        return 1.0
    return math.exp(rng.uniform(-math.log(spread), math.log(spread)))


def _spread(data: Data, rng: np.random.Generator) -> None:
    """Multiply the profile's constants by broad log-uniform factors (in place)."""
    from jpo.sim.randomization import load_randomization

    spreads = load_randomization().spread
    for section, table in spreads.items():
        if section in ("defaults", "limits"):
            continue
        for key, spread in table.items():
            f = _factor(rng, spread**SPREAD_POWER)
            if section == "loss" and key == "loss_scale":
                data["loss"]["initial_loss"] *= f
                data["loss"]["irreducible_loss"] *= f
            else:
                data[section][key] *= f
    for key in ("batch_size", "num_layers", "epochs"):
        data["defaults"][key] = max(1, round(data["defaults"][key] * _factor(rng, 2.0)))


def _best_lr(data: Data, batch: float) -> float:
    opt = data["optimization"]
    ref_b = opt["reference_batch_size"]
    lr_max = opt["reference_learning_rate"] * (ref_b + opt["b_noise"]) / ref_b
    return float(lr_max * batch / (batch + opt["b_noise"]))


def _epochs_to_converge(data: Data) -> float:
    b = data["defaults"]["batch_size"]
    return float(data["loss"]["epochs_min"] * (1.0 + b / data["optimization"]["b_noise"]))


def _gpu_mib(data: Data) -> float:
    d, mem, lim = data["defaults"], data["memory"], data["limits"]
    n = mem["params_fixed"] + mem["params_per_layer"] * d["num_layers"]
    act = mem["activation_bytes_per_sample_per_layer"] * d["batch_size"] / lim["gpus"]
    act *= d["num_layers"]
    return float(mem["gpu_runtime_overhead_mib"] + (mem["bytes_per_param"] * n + act) / 2**20)


def _regime(name: str, data: Data, rng: np.random.Generator) -> list[str]:
    """Push the profile into one regime (in place); return the frozen parameters."""
    d = data["defaults"]
    frozen: list[str] = []
    if name == "lr_high":
        div = data["optimization"]["divergence_factor"]
        d["learning_rate"] = _best_lr(data, d["batch_size"]) * min(rng.uniform(2.5, 8.0), 0.6 * div)
    elif name == "lr_low":
        d["learning_rate"] = _best_lr(data, d["batch_size"]) * rng.uniform(1 / 12, 1 / 3)
    elif name == "epochs_many":
        d["epochs"] = max(2, round(_epochs_to_converge(data) * rng.uniform(2.5, 5.0)))
    elif name == "epochs_few":
        d["epochs"] = max(1, round(_epochs_to_converge(data) * rng.uniform(0.35, 0.7)))
    elif name == "finetune":
        frozen = ["num_layers"]
        d["learning_rate"] = _best_lr(data, d["batch_size"]) * _factor(rng, 4.0)
    elif name == "memory_bound":
        data["limits"]["gpu_memory_mib"] = float(round(_gpu_mib(data) / rng.uniform(0.70, 0.88)))
    elif name == "input_bound":
        from jpo.sim.randomization import input_bound_cpu_s_per_sample

        ratio = rng.uniform(1.5, 4.0)
        data["compute"]["cpu_s_per_sample"] = input_bound_cpu_s_per_sample(data, ratio)
    elif name == "multi_gpu":
        data["limits"]["gpus"] = int(rng.choice([2, 4, 8]))
        d["batch_size"] = int(d["batch_size"] * data["limits"]["gpus"])
    elif name == "idle_gpu":
        data["compute"]["step_overhead_s"] *= rng.uniform(4.0, 12.0)
        d["batch_size"] = max(1, round(d["batch_size"] / rng.uniform(2.0, 6.0)))
    if name not in ("lr_high", "lr_low", "finetune"):
        # the learning rate keeps its base's relation to its best (lightly spread)
        d["learning_rate"] = _best_lr(data, d["batch_size"]) * _factor(rng, 1.6)
    return frozen


def _clamp_defaults(data: Data) -> None:
    from jpo.workload.constraints import load_constraints

    cons = load_constraints()
    d = data["defaults"]
    for name in ("batch_size", "num_layers", "epochs"):
        spec = cons.params[name]
        d[name] = int(min(max(round(d[name]), max(1, spec.min)), spec.max))
    lr = cons.params["learning_rate"]
    d["learning_rate"] = float(min(max(d["learning_rate"], lr.min), lr.max))


def draw(
    index: int, bases: list[Any], frameworks: list[str], seed: int
) -> tuple[Any, list[str], str]:
    """Return profile ``index`` of the set drawn with ``seed``, its frozen parameters, regime."""
    from jpo.errors import ConfigError
    from jpo.sim.oracle import reference_config
    from jpo.sim.response import ClusterConditions, profile_from_dict

    regime = REGIMES[index % len(REGIMES)]
    framework = frameworks[index % len(frameworks)]
    rng = np.random.default_rng([seed, index])
    for _ in range(MAX_TRIES):
        base = bases[int(rng.integers(len(bases)))]
        data: Data = {k: dict(v) for k, v in base.as_toml_dict().items()}
        _spread(data, rng)
        frozen = _regime(regime, data, rng)
        _clamp_defaults(data)
        name = f"broad-{index:02d}-{regime.replace('_', '-')}"
        data["workload"] |= {
            "name": name,
            "dataset": f"broad{index:02d}",
            "framework": framework,
            "split": "holdout",
            "description": f"broad test prior, regime {regime}, drawn around {base.name}",
        }
        try:
            profile = profile_from_dict(data, source=name)
            _hp, ref = reference_config(profile, ClusterConditions())
        except ConfigError:
            continue
        if ref.failure == "none" and MIN_HOURS <= ref.duration_s / 3600.0 <= MAX_HOURS:
            return profile, frozen, regime
    raise SystemExit(f"profile {index}: no valid draw in {MAX_TRIES} tries")


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def render(profile: Any, frozen: list[str], regime: str, seed: int) -> str:
    """Return the profile's TOML file (the catalog's format plus an optional [jpo])."""
    lines = [
        f"# Workload profile: {profile.name}. Generated by benchmarks/evaluate/make_testset.py",
        f"# (seed {seed}, regime {regime}). FROZEN TEST SET: do not edit, tune or select on it.",
    ]
    for section, table in profile.as_toml_dict().items():
        lines += ["", f"[{section}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    if frozen:
        lines += ["", "[jpo]", "freeze = [" + ", ".join(f'"{n}"' for n in frozen) + "]"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the set's profile files."""
    from jpo.sim.response import load_catalog

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=sorted(SEEDS), default=DEFAULT_SET, help="version (seed)")
    parser.add_argument("--out", type=Path, help="folder (default configs/testsets/<--set>)")
    parser.add_argument("--count", type=int, default=36)
    args = parser.parse_args(argv)
    seed = SEEDS[args.set]
    out: Path = args.out or REPO / "configs" / "testsets" / args.set
    catalog = load_catalog()
    bases = [catalog[n] for n in sorted(catalog)]
    frameworks = sorted({p.framework for p in bases})
    out.mkdir(parents=True, exist_ok=True)
    for i in range(args.count):
        profile, frozen, regime = draw(i, bases, frameworks, seed)
        (out / f"{profile.name}.toml").write_text(render(profile, frozen, regime, seed), "utf-8")
        print(profile.name, profile.framework, profile.limits.gpus, frozen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
