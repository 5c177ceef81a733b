"""Continuous-learning cycles against the served policy: RESULTS.md §8-§13's setup, rerunnable.

A history store of catalog workloads the bundled policy never trained on (held-out split;
simulated runs written with :func:`jpo.sim.simulator.generate_runs` and
:func:`jpo.telemetry.history.append_history`), then ``python -m jpo.train --continuous``
with ``configs/train.yaml``, sizes and variants changed by ``--set`` only. Each variant
and RLlib seed (``--seeds``) runs in its own storage and policy folder (its own cycles
from the bundled policy); the history and the teacher's oracle cache are shared. Each
cycle's candidate-vs-served comparisons (same seeded episodes) go into ``--out``,
rewritten after every run: the cycle's own ``cluster`` and ``validation`` sets (its
promotion check) and, measured here beside the cycle on the same policies and episodes,
the catalog's held-out split ``holdout`` (a test set: reported, never used to choose). A
run that fails is retried once (``--retries``); a run that fails again is recorded with
its error and the next one starts. ``--summarize`` applies §13's selection rule
(``--rule 12``: §12's; ``13b``, ``13c``: those sections'). Variants in :data:`FRESH` run
every cycle as its own ``--cycles 1`` process with its own fresh storage (no checkpoint
resumed: fresh critics, the actor warm-started from the policy served at that time) and
the run's shared policy folder (RESULTS.md §13c).

Run (from the repository root, ``PYTHONPATH=.``)::

    python benchmarks/train/continuous_cycles.py --variants u1 w_u1 --seeds 3 4 5 \
        --cycles 2 --budget-iterations 2 --out benchmarks/train/continuous.json
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

WORKLOADS = ("higgs-mlp", "criteo-dlrm", "xsum-bart", "coco-yolov5")  # held-out split (§8)

# variant -> --set overrides on top of the shared ones (RESULTS.md §9 says what each is)
VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {  # §8: fresh critics steer v5's actor at once, the recipe's actor rate
        "continuous.critic_warmup_updates": 0,
        "continuous.actor_updates": None,  # §9/§12 ran before the bound existed
        "continuous.actor_lr": None,
        "continuous.anchor_weight": 0,
    },
    "warmup": {  # actor frozen for the first 300 updates of the first cycle
        "continuous.critic_warmup_updates": 300,
        "continuous.actor_updates": None,  # §9/§12 ran before the bound existed
        "continuous.actor_lr": None,
        "continuous.anchor_weight": 0,
    },
    "lowlr": {  # a tenth of the recipe's actor learning rate
        "continuous.critic_warmup_updates": 0,
        "continuous.actor_updates": None,  # §9/§12 ran before the bound existed
        "continuous.actor_lr": 0.00005,
        "continuous.anchor_weight": 0,
    },
    "anchor": {  # distillation towards the served policy's actions, weight 3 (as BC's)
        "continuous.critic_warmup_updates": 0,
        "continuous.actor_updates": None,  # §9/§12 ran before the bound existed
        "continuous.actor_lr": None,
        "continuous.anchor_weight": 3,
    },
    "warmup_anchor": {  # the warm-up and the anchor together (RESULTS.md §12)
        "continuous.critic_warmup_updates": 300,
        "continuous.actor_updates": None,  # §9/§12 ran before the bound existed
        "continuous.actor_lr": None,
        "continuous.anchor_weight": 3,
    },
    "all": {  # the three together
        "continuous.critic_warmup_updates": 300,
        "continuous.actor_updates": None,  # §9/§12 ran before the bound existed
        "continuous.actor_lr": 0.00005,
        "continuous.anchor_weight": 3,
    },
    "shipped": {},  # configs/train.yaml's continuous table as it is
    "served_start": {  # RESULTS.md §13b: as shipped, every cycle's actor from the served policy
        "continuous.actor_from_served": True,
    },
    "fresh": {},  # RESULTS.md §13c: as shipped, every cycle a first cycle (see FRESH)
    # RESULTS.md §13: cycles bounded in actor updates (continuous.actor_updates)
    "u1": {  # one actor update per cycle, no warm-up (§12's one-update candidate, per cycle)
        "continuous.critic_warmup_updates": 0,
        "continuous.actor_updates": 1,
        "continuous.actor_lr": None,
        "continuous.anchor_weight": 0,
    },
    "w_u1": {  # the warm-up (300 updates, critics only), then one actor update
        "continuous.critic_warmup_updates": 300,
        "continuous.actor_updates": 1,
        "continuous.actor_lr": None,
        "continuous.anchor_weight": 0,
    },
    "u10lr": {  # 10 actor updates at a tenth of the recipe's actor rate
        "continuous.critic_warmup_updates": 0,
        "continuous.actor_updates": 10,
        "continuous.actor_lr": 0.00005,
        "continuous.anchor_weight": 0,
    },
    "u100lr": {  # 100 actor updates at a tenth of the recipe's actor rate
        "continuous.critic_warmup_updates": 0,
        "continuous.actor_updates": 100,
        "continuous.actor_lr": 0.00005,
        "continuous.anchor_weight": 0,
    },
}
RULE13 = ("u1", "w_u1", "u10lr", "u100lr")
"""RESULTS.md §13's variants, in the order they run (and break exact ties)."""
FRESH = frozenset({"fresh"})
"""Variants whose every cycle starts from nothing but the served policy (RESULTS.md §13c)."""
FRESH_SEED_STRIDE = 100
"""§13c: cycle k of a FRESH run with seed s uses RLlib seed s + 100 (k - 1): the history is
fixed here, so one seed would repeat cycle 1 whenever the served policy is unchanged."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", nargs="+", default=["shipped"], choices=sorted(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="RLlib seeds: one run each")
    p.add_argument("--retries", type=int, default=1, help="reruns of a run that fails")
    p.add_argument("--cycles", type=int, default=2)
    p.add_argument("--budget-iterations", type=int, default=2, help="x 500 env steps per cycle")
    p.add_argument("--eval-episodes", type=int, default=32)
    p.add_argument("--runs", type=int, default=8, help="simulated runs per workload")
    p.add_argument("--seed", type=int, default=21, help="seed of the simulated history")
    p.add_argument("--work", default="/tmp/jpo-continuous", help="scratch folder")
    p.add_argument("--out", default="benchmarks/train/continuous.json")
    p.add_argument(
        "--summarize", nargs="+", metavar="JSON", help="no runs: merge these --out files, apply §12"
    )
    p.add_argument(
        "--rule",
        choices=("12", "13", "13b", "13c"),
        default="13",
        help="the selection rule --summarize applies",
    )
    p.add_argument(
        "--no-extra-sets",
        action="store_true",
        help="do not measure the held-out split beside the cycles (§13 reports it)",
    )
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    return p


def write_history(root: Path, runs: int, seed: int) -> None:
    """Write the simulated history of :data:`WORKLOADS` once."""
    import pyarrow as pa

    from jpo.sim.simulator import generate_runs
    from jpo.telemetry.history import append_history

    if root.is_dir():
        return
    sim = generate_runs(list(WORKLOADS), runs, seed=seed)
    append_history(root, pa.concat_tables([r.table for r in sim]))


def _yaml(value: Any) -> str:
    return "null" if value is None else str(value)


def _sets(
    name: str, seed: int, args: argparse.Namespace, work: Path, store: Path
) -> dict[str, Any]:
    """The ``--set`` overrides of one variant's run (or, for :data:`FRESH`, one cycle)."""
    folder = work / f"{name}-s{seed}"
    return {
        "seed": seed,
        "storage.path": store,
        "continuous.history_path": work / "history",
        "continuous.policy_dir": folder / "policies",
        "continuous.budget_iterations": args.budget_iterations,
        "continuous.eval_episodes": args.eval_episodes,
        "continuous.interval_s": 0,
        "continuous.env_overrides_with_history.teacher_cache": work / "oracles.json",
        "storage.keep": 30,  # every cycle's last checkpoint stays (the extra sets export it)
        "reporting.progress_bar": "false",
        "resources.ray_num_cpus": 1,
        **VARIANTS[name],
    }


def _cycles(
    sets: dict[str, Any], cycles: int, extra: list[str], log_path: Path, what: str
) -> tuple[list[str], list[dict[str, Any]]]:
    """Run ``python -m jpo.train --continuous`` with ``sets``; return its command and cycles."""
    cmd = [sys.executable, "-m", "jpo.train", "--continuous", "--cycles", str(cycles)]
    cmd += [a for k, v in sets.items() for a in ("--set", f"{k}={_yaml(v)}")]
    cmd += [a for item in extra for a in ("--set", item)]
    with log_path.open("w") as log:
        proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): see {log_path}")
    return cmd, list(json.loads(proc.stdout.strip().splitlines()[-1])["cycles"])


def _fresh_cycles(
    name: str, seed: int, args: argparse.Namespace, work: Path
) -> tuple[dict[str, Any], list[str], list[dict[str, Any]]]:
    """§13c: each cycle its own one-cycle process and storage; the policy folder shared."""
    folder = work / f"{name}-s{seed}"
    cycles: list[dict[str, Any]] = []
    commands: list[str] = []
    sets: dict[str, Any] = {}
    for k in range(1, args.cycles + 1):
        sets = _sets(name, seed, args, work, folder / f"store-c{k}")
        sets["seed"] = seed + FRESH_SEED_STRIDE * (k - 1)
        what = f"variant {name} seed {seed} cycle {k}"
        cmd, (report,) = _cycles(sets, 1, args.extra, folder / f"log-c{k}.txt", what)
        cycles.append(
            {
                **report,
                "cycle": k,
                "storage_path": str(sets["storage.path"]),
                "rllib_seed": sets["seed"],
            }
        )
        commands.append(" ".join(cmd[1:]))
    sets["storage.path"] = folder / "store-c<k>"
    sets["seed"] = f"{seed} + {FRESH_SEED_STRIDE} (k - 1)"
    return sets, commands, cycles


def run_variant(name: str, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Run ``--cycles`` cycles of one variant and seed in a fresh folder; return its reports."""
    folder = work / f"{name}-s{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t0 = time.monotonic()
    if name in FRESH:
        sets, commands, cycles = _fresh_cycles(name, seed, args, work)
    else:
        sets = _sets(name, seed, args, work, folder / "store")
        what = f"variant {name} seed {seed}"
        cmd, cycles = _cycles(sets, args.cycles, args.extra, folder / "log.txt", what)
        commands = [" ".join(cmd[1:])]
    wall = time.monotonic() - t0
    return {
        "variant": name,
        "seed": seed,
        "sets": {k: _yaml(v) for k, v in sets.items()},
        "wall_s": wall,
        "command": commands[0] if len(commands) == 1 else commands,
        "cycles": cycles,
    }


def table(results: list[dict[str, Any]]) -> str:
    """Markdown rows: variant, cycle, set, candidate, served, paired difference, SE, promoted."""
    rows = [
        "| variant | seed | cycle | set | candidate | served | mean diff | SE | promoted |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        if "error" in res:
            rows.append(f"| {res['variant']} | {res['seed']} | failed: {res['error']} |")
        for c in res.get("cycles", []):
            for set_name, comp in (c["comparisons"] or {}).items():
                rows.append(
                    f"| {res['variant']} | {res['seed']} | {c['cycle']} | {set_name} | "
                    f"{comp['candidate']:.3f} | "
                    f"{comp['served']:.3f} | {comp['mean_difference']:+.3f} | "
                    f"{comp['standard_error']:.3f} | {'yes' if c['promoted'] else 'no'} |"
                )
    return "\n".join(rows)


def _terms(variant: str) -> int:
    """Number of fine-tuning terms a variant turns on (warm-up, actor rate, anchor)."""
    sets = VARIANTS.get(variant, {})
    return sum(
        (
            bool(sets.get("continuous.critic_warmup_updates")),
            sets.get("continuous.actor_lr") is not None,
            bool(sets.get("continuous.anchor_weight")),
        )
    )


def _diffs(runs: list[dict[str, Any]], set_name: str) -> list[tuple[float, float]]:
    """(mean paired difference, SE) of one set in every cycle of ``runs``."""
    return [
        (
            c["comparisons"][set_name]["mean_difference"],
            c["comparisons"][set_name]["standard_error"],
        )
        for r in runs
        for c in r["cycles"]
    ]


def _net(run: dict[str, Any], set_name: str) -> float:
    """The served policy after the run's cycles vs the first served one: promoted diffs summed."""
    return float(
        sum(c["comparisons"][set_name]["mean_difference"] for c in run["cycles"] if c["promoted"])
    )


def _finished_runs(results: list[dict[str, Any]], name: str, cycles: int) -> list[dict[str, Any]]:
    """The runs of variant ``name`` that finished all ``cycles`` without an error."""
    return [
        r
        for r in results
        if r["variant"] == name and "error" not in r and len(r["cycles"]) == cycles
    ]


def _measured(runs: list[dict[str, Any]], sets: tuple[str, ...]) -> bool:
    """Whether every cycle of ``runs`` compared candidate and served on each of ``sets``."""
    return all(set(sets) <= set(c["comparisons"] or {}) for r in runs for c in r["cycles"])


def _rule_figures(
    runs: list[dict[str, Any]], forgetting: str, sets: tuple[str, ...]
) -> dict[str, Any]:
    """Score (mean cluster diff) and its SE, eligible (no ``forgetting`` loss beyond 2 SE),
    improves (score - 2 SE > 0), and per run the served policy's net gain on ``sets``."""
    cluster = _diffs(runs, "cluster")
    score = sum(d for d, _ in cluster) / len(cluster)
    se = math.sqrt(sum(e * e for _, e in cluster)) / len(cluster)
    return {
        "score": score,
        "se": se,
        "eligible": all(d >= -2 * e for d, e in _diffs(runs, forgetting)),
        "improves": score - 2 * se > 0,
        "net": {r["seed"]: {k: _net(r, k) for k in sets} for r in runs},
    }


def score_variants(results: list[dict[str, Any]], cycles: int) -> list[dict[str, Any]]:
    """RESULTS.md §12's rule, per variant: complete?, score and SE, eligible?, net gains."""
    out = []
    sets = ("cluster", "holdout")
    for name in dict.fromkeys(r["variant"] for r in results):
        runs = _finished_runs(results, name, cycles)
        complete = len(runs) >= 2 and _measured(runs, sets)
        row: dict[str, Any] = {"variant": name, "terms": _terms(name), "complete": complete}
        if complete:
            row |= _rule_figures(runs, "holdout", sets)
        out.append(row)
    return out


def choose(scored: list[dict[str, Any]], shipped: str = "warmup") -> str:
    """The default by §12's rule: best eligible score; ties (< the larger SE) -> fewer terms."""
    eligible = [v for v in scored if v["complete"] and v["eligible"]]
    if not eligible:
        return shipped
    best = max(eligible, key=lambda v: v["score"])
    tied = [v for v in eligible if best["score"] - v["score"] < max(best["se"], v["se"])]
    return str(
        min(tied, key=lambda v: (v["terms"], v["variant"] != shipped, -v["score"]))["variant"]
    )


def summary(results: list[dict[str, Any]], cycles: int) -> str:
    """Markdown: per variant the rule's figures, then the default it chooses."""
    scored = score_variants(results, cycles)
    rows = [
        "| variant | terms | complete | score (SE) | eligible | improves (score - 2 SE > 0) |"
        " served after the cycles vs the first served, per seed: cluster / held-out |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in scored:
        if not v["complete"]:
            rows.append(f"| {v['variant']} | {v['terms']} | no | | | | |")
            continue
        net = "; ".join(
            f"seed {s}: {n['cluster']:+.3f} / {n['holdout']:+.3f}" for s, n in v["net"].items()
        )
        rows.append(
            f"| {v['variant']} | {v['terms']} | yes | {v['score']:+.3f} ({v['se']:.3f}) | "
            f"{'yes' if v['eligible'] else 'no'} | {'yes' if v['improves'] else 'no'} | {net} |"
        )
    none = not any(v["complete"] and v["eligible"] for v in scored)
    why = " (no variant eligible: the shipped one stays)" if none else ""
    rows.append(f"\nchosen by the rule: {choose(scored)}{why}")
    return "\n".join(rows)


# --------------------------------------------------------------------------- extra sets


class _Reused:
    """One built env serving every policy's episodes (``close`` keeps it for the next)."""

    def __init__(self, env: Any) -> None:
        self.env = env

    def reset(self, **kwargs: Any) -> Any:
        """Reset the env (a seeded reset fixes the episode)."""
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> Any:
        """Step the env."""
        return self.env.step(action)

    def close(self) -> None:
        """Keep the env: it is built once per set."""


HOLDOUT = {  # the catalog's held-out split (role "test"), thinned as in §12's later runs
    "source": "catalog",
    "split": "holdout",
    "randomized_profiles": 0,
    "catalog_profiles": True,
    "catalog_max_samples_per_run": 2000,
}


def extra_set_envs() -> dict[str, Any]:
    """Env factories of the sets a cycle may not measure, each env built once.

    ``validation``: configs/train.yaml's ``env.eval_config`` (configs/evaluate.toml's
    validation set, role "validation"), which the cycles' promotion check measures itself;
    ``holdout``: the catalog's held-out split (:data:`HOLDOUT`, role "test": reported only).
    """
    from jpo.train.trainer import load_train_config, make_env

    cfg = load_train_config()
    section = cfg.env.model_dump()
    configs = {
        "validation": {**cfg.env.eval_config, "teacher": False},
        "holdout": {**HOLDOUT, "teacher": False},
    }
    built: dict[str, _Reused] = {}

    def factory(name: str) -> Any:
        def make() -> _Reused:
            if name not in built:
                built[name] = _Reused(make_env(section, configs[name]))
            return built[name]

        return make

    return {name: factory(name) for name in configs}


def measure_extra_sets(
    res: dict[str, Any],
    envs: dict[str, Any],
    episodes: int,
    served_returns: dict[tuple[str, str], list[float]],
) -> None:
    """Add each cycle's candidate-vs-served comparison on the sets the cycle did not measure.

    The candidate is the cycle's checkpoint exported as the cycle exported it; the served
    policy is the one the cycle compared with; both on the same seeded episodes (the
    cycles' ``eval_seed``).
    """
    from dataclasses import asdict

    from jpo.policy.artifact import LocalPolicy
    from jpo.train.continuous import compare, episode_returns, load_continuous_config
    from jpo.train.trainer import Storage, export_latest, load_train_config

    cfg = load_train_config()
    conf = load_continuous_config(cfg)
    for c in res["cycles"]:
        comps = c["comparisons"] = dict(c["comparisons"] or {})
        missing = [name for name in envs if name not in comps]
        if not missing:
            continue
        path = str(c.get("storage_path") or res["sets"]["storage.path"])  # FRESH: per cycle
        storage = Storage(path)
        out = Path(path).parent / f"candidate-{c['cycle']}"
        shutil.rmtree(out, ignore_errors=True)
        candidate = LocalPolicy.load(export_latest(cfg, storage, out, checkpoint=c["checkpoint"]))
        served = LocalPolicy.load(c["served_path"])
        for name in missing:
            kwargs = {"episodes": episodes, "seed": conf.eval_seed}
            key = (name, str(served.path))
            if key not in served_returns:
                served_returns[key] = episode_returns(served.act, envs[name], **kwargs)
            cand = episode_returns(candidate.act, envs[name], **kwargs)
            comps[name] = {
                **asdict(compare(cand, served_returns[key], conf)),
                "measured_by": "continuous_cycles.py",
            }


# --------------------------------------------------------------------------- §13's rule


def _setting(variant: str, key: str) -> Any:
    """A variant's ``continuous.*`` value: its own, else configs/train.yaml's."""
    sets = VARIANTS.get(variant, {})
    if key in sets:
        return sets[key]
    from jpo.train.trainer import load_train_config

    return load_train_config().continuous.get(key.removeprefix("continuous."))


def _recipe_actor_lr() -> float:
    """configs/train.yaml's ``sac.actor_lr``: a cycle's actor rate when none is set."""
    from jpo.train.trainer import load_train_config

    return float(load_train_config().sac.actor_lr)


def _movement(variant: str) -> float:
    """Bound on how far a cycle moves an actor weight: actor updates x actor rate (Adam)."""
    updates = _setting(variant, "continuous.actor_updates")
    rate = _setting(variant, "continuous.actor_lr") or _recipe_actor_lr()
    return math.inf if updates is None else float(updates) * float(rate)


def _terms13(variant: str) -> int:
    """Fine-tuning terms a variant turns on (warm-up, actor bound, actor rate, anchor, restart)."""
    return sum(
        (
            bool(_setting(variant, "continuous.critic_warmup_updates")),
            _setting(variant, "continuous.actor_updates") is not None,
            _setting(variant, "continuous.actor_lr") is not None,
            bool(_setting(variant, "continuous.anchor_weight")),
            bool(_setting(variant, "continuous.actor_from_served")),
        )
    )


def score_rule13(
    results: list[dict[str, Any]], cycles: int, seeds: int = 3
) -> list[dict[str, Any]]:
    """RESULTS.md §13's rule, per variant: complete?, score and SE, eligible?, per-run net."""
    out = []
    sets = ("cluster", "validation", "holdout")
    for name in dict.fromkeys(r["variant"] for r in results):
        runs = _finished_runs(results, name, cycles)
        complete = len({r["seed"] for r in runs}) >= seeds and _measured(runs, sets)
        row: dict[str, Any] = {
            "variant": name,
            "terms": _terms13(name),
            "movement": _movement(name),
            "complete": complete,
        }
        if complete:
            row |= _rule_figures(runs, "validation", sets)
        out.append(row)
    return out


def choose_rule13(scored: list[dict[str, Any]]) -> str | None:
    """§13's default: best eligible score above 0; ties (< the larger SE) -> fewer terms,
    then smaller movement, then the earlier in :data:`RULE13`; None: the default stays."""
    eligible = [v for v in scored if v["complete"] and v["eligible"] and v["score"] > 0]
    if not eligible:
        return None
    best = max(eligible, key=lambda v: v["score"])
    tied = [v for v in eligible if best["score"] - v["score"] < max(best["se"], v["se"])]
    order = {name: i for i, name in enumerate(RULE13)}
    return str(
        min(
            tied,
            key=lambda v: (v["terms"], v["movement"], order.get(v["variant"], len(order))),
        )["variant"]
    )


def choose_rule13b(scored: list[dict[str, Any]]) -> bool:
    """RESULTS.md §13b: whether ``actor_from_served`` becomes the default.

    Yes iff ``served_start`` is complete, eligible and scores above 0, and ``shipped`` is
    not as good: incomplete or ineligible, or behind by at least the larger of the two SEs.
    """
    by_name = {v["variant"]: v for v in scored}
    new, old = by_name.get("served_start"), by_name.get("shipped")
    if new is None or not (new["complete"] and new["eligible"] and new["score"] > 0):
        return False
    if old is None or not (old["complete"] and old["eligible"]):
        return True
    return bool(new["score"] - old["score"] >= max(new["se"], old["se"]))


def verdict_rule13c(
    results: list[dict[str, Any]], cycles: int = 4, seeds: int = 3
) -> dict[str, Any]:
    """RESULTS.md §13c: whether every-cycle-fresh (``fresh``) is recommended for the product.

    Yes iff every ``fresh`` run completed (``seeds`` runs, ``cycles`` cycles, all three sets),
    no cycle is worse than served on the VALIDATION set by more than 2 SE, and the mean
    cluster difference over cycles 2..``cycles`` of all runs minus 2 pooled SE is above 0.
    """
    runs = [r for r in results if r["variant"] == "fresh"]
    sets = ("cluster", "validation", "holdout")
    complete = (
        len({r["seed"] for r in runs}) >= seeds
        and all("error" not in r and len(r["cycles"]) == cycles for r in runs)
        and all(set(sets) <= set(c["comparisons"] or {}) for r in runs for c in r["cycles"])
    )
    out: dict[str, Any] = {"complete": complete, "recommend": False}
    if not complete:
        return out
    later = [
        (
            c["comparisons"]["cluster"]["mean_difference"],
            c["comparisons"]["cluster"]["standard_error"],
        )
        for r in runs
        for c in r["cycles"]
        if c["cycle"] >= 2
    ]
    out["later_mean"] = sum(d for d, _ in later) / len(later)
    out["later_se"] = math.sqrt(sum(se * se for _, se in later)) / len(later)
    out["eligible"] = all(d >= -2 * se for d, se in _diffs(runs, "validation"))
    out["recommend"] = bool(out["eligible"] and out["later_mean"] - 2 * out["later_se"] > 0)
    return out


def cycle_table(results: list[dict[str, Any]]) -> str:
    """Markdown, one row per cycle: each set's candidate / served, difference (SE)."""
    sets = ("cluster", "validation", "holdout")
    rows = [
        "| variant | seed | cycle | served | "
        + " | ".join(f"{s}: candidate / served, diff (SE)" for s in sets)
        + " | promoted |",
        "|---|---|---|---|" + "---|" * len(sets) + "---|",
    ]
    for res in results:
        if "error" in res:
            rows.append(f"| {res['variant']} | {res['seed']} | failed: {res['error']} |")
        for c in res.get("cycles", []):
            comps = c["comparisons"] or {}
            cells = [
                f"{comps[s]['candidate']:.3f} / {comps[s]['served']:.3f}, "
                f"{comps[s]['mean_difference']:+.3f} ({comps[s]['standard_error']:.3f})"
                if s in comps
                else "not measured"
                for s in sets
            ]
            served = f"v{c['served_version']}" if c.get("served_version") else "-"
            rows.append(
                f"| {res['variant']} | {res['seed']} | {c['cycle']} | {served} | "
                + " | ".join(cells)
                + f" | {'yes: v' + str(c['policy_version']) if c['promoted'] else 'no'} |"
            )
    return "\n".join(rows)


def summary_rule13(results: list[dict[str, Any]], cycles: int, *, choose: bool = True) -> str:
    """Markdown: per variant §13's figures, then (``choose``) the default the rule chooses."""
    scored = score_rule13(results, cycles)
    rows = [
        "| variant | terms | movement bound | complete | score (SE) | eligible (validation) |"
        " improves (score - 2 SE > 0) | served after the cycles vs v6, per seed:"
        " cluster / validation / held-out |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in scored:
        if not v["complete"]:
            rows.append(f"| {v['variant']} | {v['terms']} | {v['movement']:.0e} | no | | | | |")
            continue
        net = "; ".join(
            f"seed {s}: {n['cluster']:+.3f} / {n['validation']:+.3f} / {n['holdout']:+.3f}"
            for s, n in v["net"].items()
        )
        rows.append(
            f"| {v['variant']} | {v['terms']} | {v['movement']:.0e} | yes | "
            f"{v['score']:+.3f} ({v['se']:.3f}) | {'yes' if v['eligible'] else 'no'} | "
            f"{'yes' if v['improves'] else 'no'} | {net} |"
        )
    if not choose:
        return "\n".join(rows)
    chosen = choose_rule13(scored)
    rows.append(
        f"\nchosen by §13's rule: {chosen}"
        if chosen
        else "\nchosen by §13's rule: none (no complete, eligible variant scores above 0): "
        "the default stays"
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Build the history, run each variant's cycles, write and print the comparisons."""
    args = _parser().parse_args(argv)
    if args.summarize:
        merged = [r for f in args.summarize for r in json.loads(Path(f).read_text())["results"]]
        if args.rule == "12":
            print(table(merged))
            print(summary(merged, args.cycles))
            return 0
        print(cycle_table(merged))
        print(summary_rule13(merged, args.cycles, choose=args.rule == "13"))
        if args.rule == "13b":
            chosen = choose_rule13b(score_rule13(merged, args.cycles))
            verdict = "becomes" if chosen else "does not become"
            print(f"§13b: actor_from_served {verdict} the default")
        if args.rule == "13c":
            v = verdict_rule13c(merged, args.cycles)
            if v["complete"]:
                print(
                    f"§13c: cycles 2-{args.cycles} cluster mean {v['later_mean']:+.3f} "
                    f"(SE {v['later_se']:.3f}); validation within 2 SE in every cycle: "
                    f"{'yes' if v['eligible'] else 'no'}"
                )
            verdict = "recommends" if v["recommend"] else "does not recommend"
            print(f"§13c {verdict} every cycle fresh (complete: {v['complete']})")
        return 0
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    write_history(work / "history", args.runs, args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    envs = {} if args.no_extra_sets else extra_set_envs()
    served_returns: dict[tuple[str, str], list[float]] = {}
    for name in args.variants:
        for seed in args.seeds:
            res = run_with_retries(name, seed, args, work)
            if envs and "error" not in res:
                t0 = time.monotonic()
                try:
                    measure_extra_sets(res, envs, args.eval_episodes, served_returns)
                except Exception as err:
                    res["extra_sets_error"] = repr(err)
                res["extra_sets_s"] = time.monotonic() - t0
            results.append(res)
            out.write_text(
                json.dumps({"workloads": WORKLOADS, "results": results}, indent=1, default=str)
            )
    print(table(results))
    print(summary_rule13(results, args.cycles) if envs else summary(results, args.cycles))
    return 0 if all("error" not in r for r in results) else 1


def run_with_retries(name: str, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Run one variant and seed, retrying ``--retries`` times; a last failure is recorded."""
    errors: list[str] = []
    for _ in range(args.retries + 1):
        t0 = time.monotonic()
        try:
            res = run_variant(name, seed, args, work)
        except RuntimeError as err:
            errors.append(str(err))
            print(f"{err} after {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
            failed = work / f"failed-{name}-s{seed}-{len(errors)}"
            shutil.copytree(work / f"{name}-s{seed}", failed, dirs_exist_ok=True)
            continue
        print(f"variant {name} seed {seed}: {res['wall_s']:.0f} s", file=sys.stderr, flush=True)
        return {**res, "failed_attempts": errors}
    return {"variant": name, "seed": seed, "error": errors[-1], "failed_attempts": errors}


if __name__ == "__main__":
    sys.exit(main())
