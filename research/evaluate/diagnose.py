"""Diagnostics behind the quality-bar gap (research/evaluate/RESULTS.md, round 5).

Three questions, each measured with ``jpo.evaluation.evaluate``'s protocol (5 rounds, incumbent
scoring, fraction of the oracle's improvement):

``regimes``   Does the synthetic validation set predict the held-out split? Scores a
              policy on validation profiles (drawn like the training ones, another seed),
              split by the regime each profile is in at its defaults: input-bound (the
              input pipeline's CPU time per step exceeds the GPU's) or GPU-side.
``guards``    What does each CI-stage guard cost? The suggest path with one guard of
              ``configs/suggest.toml`` switched off at a time, and all of them, against
              the direct path (policy straight into the constraints).
``ensemble``  Does averaging the actions of several checkpoints transfer better than the
              last checkpoint alone? (direct path: the CI stage runs one artifact.)
``score``     Which training recipe transfers? Scores many exported policies (one line
              each: held-out split with its per-workload fractions, training split,
              validation) and, per recipe label (the folder name up to ``-s<seed>``),
              the mean and standard deviation over its training seeds, since one
              training run cannot rank recipes (rounds 5-6).
``coverage``  Are the held-out workloads inside the training distribution? Each held-out
              workload's observations (its recorded runs, as the env replays them) by
              their distance to the nearest training workload's (in standard deviations
              of the default randomization's observations, so recipes compare), and the
              features where it lies outside the training range.
``teacher``   How good is the imitation teacher (round 8)? The direct path stepping
              towards each workload's oracle configuration (it knows the oracle: a
              ceiling, not a method), with nothing, the learning rate, or the learning
              rate and epochs held.
``oracle-moves``  What must a policy learn? The oracle's configuration relative to the
              default (ratio per hyperparameter), for the catalog's training and held-out
              workloads and the training randomization's profiles, per regime.
``history``   Does the campaign's previous run help a student (round 12)? Scores students
              trained with ``imitate.py --history`` (their input adds the run before,
              ``campaign_history.py``) and any other policy, per path.
``planner``   Does a model-based planner that knows no oracle close the gap (round 11)?
              After each run it calibrates a profile on the campaign's runs (prior: the
              best-fitting training profile) and steps towards that profile's oracle
              (``planner.py``), on the direct and the suggest path.

    python research/evaluate/diagnose.py regimes [--policy P]
    python research/evaluate/diagnose.py guards [--policy P]
    python research/evaluate/diagnose.py step [--policy P]
    python research/evaluate/diagnose.py ensemble --members P1 P2 ... [--label L]
    python research/evaluate/diagnose.py score --policies P1 P2 ... [--out rows.json]
    python research/evaluate/diagnose.py coverage [--randomized 200] [--randomization PATH]
    python research/evaluate/diagnose.py teacher
    python research/evaluate/diagnose.py oracle-moves [--randomized 200]
    python research/evaluate/diagnose.py planner [--paths direct suggest] [--hold "" lr,epochs]
    python research/evaluate/diagnose.py history --policies P1 P2 ... [--paths direct suggest]

Every command prints one JSON line per variant and takes --profiles/--val-seed/--seeds
for the validation set and --holdout-seeds for the held-out split.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "research" / "train"))

from select_checkpoint import validation_profiles  # noqa: E402

from jpo.evaluation.evaluate import (  # noqa: E402
    evaluate,
    jpo_proposer,
    load_evaluation_settings,
    method_summary,
    workload_summary,
)
from jpo.policy.artifact import LocalPolicy  # noqa: E402
from jpo.policy.source import LocalPolicySource, PolicyAnswer, PolicySource  # noqa: E402
from jpo.sim.randomization import input_bound_cpu_s_per_sample  # noqa: E402

BUNDLED = REPO / "jpo" / "data" / "policy"


def regime(profile: Any) -> str:
    """Return "input-bound" if the profile's input pipeline outlasts the GPU at defaults."""
    data = profile.as_toml_dict()
    balanced = input_bound_cpu_s_per_sample(data, 1.0)
    return "input-bound" if data["compute"]["cpu_s_per_sample"] > balanced else "gpu-side"


def _score(
    policy: Any,
    policy_path: str | None,
    *,
    split: str,
    seeds: int,
    catalog: Mapping[str, Any] | None = None,
    path: str = "suggest",
    plugins: Mapping[str, Any] | None = None,
) -> Any:
    """Score a policy with ``jpo.evaluation.evaluate`` (``plugins``: its plug-in arguments)."""
    settings = load_evaluation_settings().with_overrides(
        split=split, seeds=seeds, methods=("jpo", "oracle"), jpo_path=path
    )
    return evaluate(
        settings,
        policy=policy,
        policy_path=policy_path,
        progress=False,
        catalog=catalog,
        **dict(plugins or {}),
    )


def _jpo(result: Any) -> dict[str, float]:
    row = method_summary(result).set_index("method").loc["jpo"]
    return {
        "oracle_fraction": round(float(row["oracle_fraction_mean"]), 3),
        "oracle_fraction_last": round(float(row["oracle_fraction_last_mean"]), 3),
        "val_loss_ok": round(float(row["val_loss_ok_share"]), 3),
        "oom_runs": int(row["oom_runs"]),
        "invalid_configs": int(row["invalid_configs"]),
    }


def cmd_regimes(args: argparse.Namespace) -> None:
    """Validation score of one policy, overall and per regime, next to its held-out score."""
    catalog = validation_profiles(args.profiles, args.val_seed)
    policy = LocalPolicy.load(args.policy)
    result = _score(policy, args.policy, split="all", seeds=args.seeds, catalog=catalog)
    per = workload_summary(result)
    per = per[per["method"] == "jpo"].copy()
    per["regime"] = per["workload"].map(lambda name: regime(catalog[name]))
    row: dict[str, Any] = {"policy": args.policy, "validation": _jpo(result)}
    for name, group in per.groupby("regime"):
        row[f"validation_{name}"] = {
            "oracle_fraction": round(float(group["oracle_fraction"].mean()), 3),
            "profiles": len(group),
        }
    holdout = _score(policy, args.policy, split="holdout", seeds=args.holdout_seeds)
    row["holdout"] = _jpo(holdout)
    print(json.dumps(row), flush=True)


def suggest_settings(changes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Return evaluate's plug-in for the suggest path with ``configs/suggest.toml`` changed.

    ``changes`` is ``{table: {key: value}}`` of the file.
    """
    from jpo.stage.suggest import load_suggest_settings

    return {"suggest_settings": load_suggest_settings().updated(changes)}


def cmd_guards(args: argparse.Namespace) -> None:
    """The suggest path with each guard off in turn, all off, and the direct path."""
    off: dict[str, dict[str, dict[str, Any]]] = {
        "shipped": {},
        "no_hysteresis": {"hysteresis": {"min_relative_change": 0.0}},
        "no_batch_gain_guard": {"hysteresis": {"min_predicted_gain": 0.0}},
        "no_memory_guard": {"memory": {"max_gpu_memory_fraction": 1e9}},
        "no_rollback": {"rollback": {"val_loss_tolerance": 1e9}},
    }
    every: dict[str, dict[str, Any]] = {"approval": {"max_relative_change": 1e9}}
    for d in off.values():
        for table, values in d.items():
            every[table] = {**every.get(table, {}), **values}
    off["all_off"] = every
    catalog = validation_profiles(args.profiles, args.val_seed)
    policy = LocalPolicy.load(args.policy)
    for name, changes in off.items():
        variant = suggest_settings(changes)
        row = {
            "variant": name,
            "validation": _jpo(
                _score(
                    policy,
                    args.policy,
                    split="all",
                    seeds=args.seeds,
                    catalog=catalog,
                    plugins=variant,
                )
            ),
            "holdout": _jpo(
                _score(
                    policy, args.policy, split="holdout", seeds=args.holdout_seeds, plugins=variant
                )
            ),
        }
        print(json.dumps(row), flush=True)
    row = {
        "variant": "direct_path",
        "validation": _jpo(
            _score(policy, None, split="all", seeds=args.seeds, catalog=catalog, path="direct")
        ),
        "holdout": _jpo(
            _score(policy, None, split="holdout", seeds=args.holdout_seeds, path="direct")
        ),
    }
    print(json.dumps(row), flush=True)


# Round 13's variants of the CI stage's return to the best (configs/suggest.toml
# [incumbent]), of the epochs retry after a refused repeat ([failed_configs]) and of the
# rollback tolerance; "pre-r13" is the CI stage as it was before round 13, "inc
# epochs-retry" the one shipped since. (The backtrack-halving and drift-check variants of
# round 13 measured no gain and left the product; their rows stay in RESULTS.md.)
CI_STAGE_VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "pre-r13": {"incumbent": {"enabled": False}, "failed_configs": {"retry_more_epochs": False}},
    "inc": {"incumbent": {"enabled": True}, "failed_configs": {"retry_more_epochs": False}},
    "inc epochs-retry": {
        "incumbent": {"enabled": True},
        "failed_configs": {"retry_more_epochs": True},
    },
    "inc epochs-retry tol3": {
        "incumbent": {"enabled": True},
        "failed_configs": {"retry_more_epochs": True},
        "rollback": {"val_loss_tolerance": 0.03},
    },
    "inc epochs-retry tol2": {
        "incumbent": {"enabled": True},
        "failed_configs": {"retry_more_epochs": True},
        "rollback": {"val_loss_tolerance": 0.02},
    },
}


def cmd_ci_stage(args: argparse.Namespace) -> None:
    """The suggest path with CI-stage setting variants: incumbent and last fractions."""
    policy = LocalPolicy.load(args.policy)
    names = args.variants or list(CI_STAGE_VARIANTS)
    for name in names:
        row: dict[str, Any] = {"variant": name}
        variant = suggest_settings(CI_STAGE_VARIANTS[name])
        for split in args.splits:
            if split == "validation":
                catalog = validation_profiles(args.profiles, args.val_seed)
                result = _score(
                    policy,
                    args.policy,
                    split="all",
                    seeds=args.seeds,
                    catalog=catalog,
                    plugins=variant,
                )
            else:
                seeds = args.holdout_seeds if split == "holdout" else args.train_seeds
                result = _score(policy, args.policy, split=split, seeds=seeds, plugins=variant)
            row[split] = _jpo(result)
        print(json.dumps(row), flush=True)


@dataclasses.dataclass
class ActionEnsemble:
    """Mean of the deterministic actions of several exported policies (same spec)."""

    members: Sequence[LocalPolicy]
    version: int = 0

    @property
    def learning_rate_follows_batch(self) -> float:
        """The members' action coupling (they must share it)."""
        return self.members[0].learning_rate_follows_batch

    @property
    def action_names(self) -> tuple[str, ...]:
        """The members' action names (jpo.policy.step orders the action by them)."""
        return self.members[0].action_names

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Average the members' actions."""
        return np.mean([m.act(obs) for m in self.members], axis=0)


def cmd_ensemble(args: argparse.Namespace) -> None:
    """Direct-path scores of an action-averaging ensemble and of its last member alone."""
    members = [LocalPolicy.load(p) for p in args.members]
    catalog = validation_profiles(args.profiles, args.val_seed)
    variants: dict[str, Any] = {
        f"last member ({args.members[-1]})": ActionEnsemble(members[-1:]),
        f"{args.label}: {len(members)} members": ActionEnsemble(members),
    }
    for name, policy in variants.items():
        row = {
            "variant": name,
            "validation": _jpo(
                _score(policy, None, split="all", seeds=args.seeds, catalog=catalog, path="direct")
            ),
            "holdout": _jpo(
                _score(policy, None, split="holdout", seeds=args.holdout_seeds, path="direct")
            ),
        }
        print(json.dumps(row), flush=True)


def recipe_label(policy_path: str) -> str:
    """Return a policy folder's recipe: ``v3-s2`` is ``v3``, snapshot ``v3-s2-50k`` ``v3@50k``."""
    name = Path(policy_path).name
    match = re.fullmatch(r"(.+)-s\d+(?:-(\w+))?", name)
    if match is None:
        return name
    return match.group(1) + (f"@{match.group(2)}" if match.group(2) else "")


def by_recipe(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Group score rows by their ``recipe``, in first-seen order."""
    recipes: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        recipes.setdefault(row["recipe"], []).append(row)
    return recipes


def mean_sd(values: np.ndarray) -> dict[str, float | None]:
    """Return the mean and sample standard deviation (None for one value), to 3 decimals."""
    return {
        "mean": round(float(values.mean()), 3),
        "sd": round(float(values.std(ddof=1)), 3) if len(values) > 1 else None,
    }


def cmd_score(args: argparse.Namespace) -> None:
    """Held-out, training-split and validation scores of many policies, then per recipe."""
    catalog = validation_profiles(args.profiles, args.val_seed)
    rows: list[dict[str, Any]] = []
    for path in args.policies:
        policy = LocalPolicy.load(path)
        holdout = _score(policy, path, split="holdout", seeds=args.holdout_seeds)
        per = workload_summary(holdout)
        per = per[per["method"] == "jpo"].set_index("workload")["oracle_fraction"]
        row: dict[str, Any] = {
            "policy": path,
            "recipe": recipe_label(path),
            "holdout": _jpo(holdout),
            "holdout_per_workload": {k: round(float(v), 3) for k, v in per.items()},
            "train": _jpo(_score(policy, path, split="train", seeds=args.train_seeds)),
            "validation": _jpo(
                _score(policy, path, split="all", seeds=args.seeds, catalog=catalog)
            ),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = []
    for recipe, members in by_recipe(rows).items():
        line: dict[str, Any] = {"recipe": recipe, "runs": len(members)}
        for split in ("holdout", "train", "validation"):
            values = np.array([m[split]["oracle_fraction"] for m in members])
            line[split] = {
                **mean_sd(values),
                "min": round(float(values.min()), 3),
                "max": round(float(values.max()), 3),
            }
        summary.append(line)
        print(json.dumps(line), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": rows, "recipes": summary}, indent=1) + "\n")


def _replayed_observations(config: Mapping[str, Any], starts: int) -> dict[str, np.ndarray]:
    """Return each workload's first observations (one per recorded run) as the env replays."""
    import gymnasium as gym

    from jpo.sim.replay_env import ENV_ID  # importing envs registers the id

    env = gym.make(ENV_ID, config={"episode_length": 8, **config}).unwrapped
    out = {}
    for name in env.workloads:
        rows = [env.reset(seed=i, options={"workload": name, "start": i})[0] for i in range(starts)]
        out[name] = np.array(rows)
    return out


def cmd_coverage(args: argparse.Namespace) -> None:
    """Distance of each held-out workload to the training workloads, in observation space."""
    from jpo.learning.features import OBSERVATION_NAMES

    train_config: dict[str, Any] = {"split": "train", "randomized_profiles": args.randomized}
    if args.randomization:
        train_config["randomization_path"] = args.randomization
    train = _replayed_observations(train_config, args.starts)
    held = _replayed_observations({"split": "holdout"}, args.starts)
    cloud = np.concatenate(list(train.values()))
    # distances in the default randomization's standard deviations, so that recipes compare
    default_cloud = cloud
    if args.randomization:
        default = _replayed_observations({**train_config, "randomization_path": ""}, args.starts)
        default_cloud = np.concatenate(list(default.values()))
    sd = default_cloud.std(0)
    # binary features (failure flags, framework one-hot) carry no range to be outside of
    continuous = [i for i in range(cloud.shape[1]) if len(np.unique(cloud[:, i])) > 2]
    centers = {n: x.mean(0) for n, x in train.items()}
    for name, x in held.items():
        center = x.mean(0)
        scaled = [(center - c)[continuous] / sd[continuous] for c in centers.values()]
        distances = [float(np.linalg.norm(v)) for v in scaled]
        nearest = list(centers)[int(np.argmin(distances))]
        outside = {}
        for i in continuous:
            q = float((cloud[:, i] <= center[i]).mean())
            if q < 0.01 or q > 0.99:
                outside[OBSERVATION_NAMES[i]] = {"value": round(float(center[i]), 3), "q": q}
        row = {
            "workload": name,
            "randomization": args.randomization or "configs/randomization.toml",
            "nearest_training_distance": round(min(distances), 2),
            "nearest": nearest,
            "outside_training_range": outside,
        }
        print(json.dumps(row), flush=True)


GREEDY_ENTRIES = (-1.0, -0.5, 0.0, 0.5, 1.0)
"""Action entries the greedy search tries per hyperparameter (5^4 steps, two couplings)."""


def _greedy_campaign(profile: Any, shared: Mapping[str, Any], rounds: int) -> dict[str, Any]:
    """One greedy campaign of :func:`cmd_greedy` on ``profile``."""
    import itertools

    from jpo.sim.oracle import best_config, objective, reference_config
    from jpo.sim.response import predict

    conditions, weights = shared["conditions"], shared["weights"]
    constraints, tolerance = shared["constraints"], shared["tolerance"]
    default, reference = reference_config(profile, conditions)
    oracle = best_config(
        profile, constraints, conditions, weights, settings=shared["oracle_settings"]
    )
    base = objective(reference, reference, weights)
    gap = objective(predict(profile, oracle.hp, conditions), reference, weights) - base
    current, path = default, []
    for _ in range(rounds):
        best: tuple[float, Any] | None = None
        for entries in itertools.product(GREEDY_ENTRIES, repeat=4):
            for coupling in (0.0, 1.0):
                hp = constraints.apply_action(
                    current, np.array(entries), learning_rate_follows_batch=coupling
                )
                run = predict(profile, hp, conditions)
                if run.failure != "none":
                    continue
                if run.final_val_loss > reference.final_val_loss * (1.0 + tolerance):
                    continue
                fraction = (objective(run, reference, weights) - base) / gap
                if best is None or fraction > best[0]:
                    best = (fraction, hp)
        if best is None:
            break
        path.append(round(best[0], 3))
        current = best[1]
    return {
        "workload": profile.name,
        "fraction_per_round": path,
        "final": current.as_dict(),
        "oracle": oracle.hp.as_dict(),
    }


def cmd_greedy(args: argparse.Namespace) -> None:
    """A greedy search told every neighbour's noise-free objective: perfect local knowledge.

    From the default, each round takes the one trust-region step (5^4 action grid, learning
    rate coupled to the batch or not) whose noise-free objective is highest among those
    whose noise-free val loss holds the bar's tolerance. No method can see this; it shows
    what knowing the landscape around the current configuration is worth in R rounds.
    """
    from jpo.evaluation.evaluate import evaluation_oracle_settings
    from jpo.learning.reward import load_reward_weights
    from jpo.sim.response import load_catalog, load_conditions
    from jpo.workload.constraints import load_constraints

    settings = load_evaluation_settings()
    shared = {
        "conditions": load_conditions(None, **settings.conditions),
        "weights": load_reward_weights(),
        "constraints": load_constraints(),
        "oracle_settings": evaluation_oracle_settings(settings),
        "tolerance": settings.val_loss_tolerance,
    }
    catalog = load_catalog()
    finals = []
    for _name, profile in sorted(catalog.items()):
        if profile.split != args.split:
            continue
        row = _greedy_campaign(profile, shared, settings.rounds)
        finals.append(row["fraction_per_round"][-1] if row["fraction_per_round"] else 0.0)
        print(json.dumps(row), flush=True)
    print(
        json.dumps({"split": args.split, "mean_final_fraction": round(float(np.mean(finals)), 3)})
    )


def cmd_oracle_moves(args: argparse.Namespace) -> None:
    """Median oracle/default ratio per hyperparameter, by profile set and regime."""
    import statistics

    from jpo.errors import ConfigError
    from jpo.sim.oracle import best_config
    from jpo.sim.randomization import random_profiles
    from jpo.sim.response import load_catalog

    catalog = load_catalog()
    sets: dict[str, list[Any]] = {"catalog-train": [], "catalog-holdout": [], "randomized": []}
    for profile in catalog.values():
        sets[f"catalog-{profile.split}"].append(profile)
    sets["randomized"] = random_profiles(catalog, args.randomized)
    for name, profiles in sets.items():
        by_regime: dict[str, list[tuple[str, dict[str, float]]]] = {}
        skipped = 0
        for profile in profiles:
            try:
                best = best_config(profile).hp
            except ConfigError:  # no configuration holds the val loss: nothing to learn
                skipped += 1
                continue
            d = profile.defaults
            ratio = {
                "num_layers": best.num_layers / d.num_layers,
                "batch_size": best.batch_size / d.batch_size,
                "learning_rate": best.learning_rate / d.learning_rate,
                "epochs": best.epochs / d.epochs,
            }
            by_regime.setdefault(regime(profile), []).append((profile.name, ratio))
        for reg, named in sorted(by_regime.items()):
            ratios = [r for _, r in named]
            row: dict[str, Any] = {
                "profiles": name,
                "regime": reg,
                "count": len(ratios),
                "median_ratio": {
                    k: round(statistics.median(r[k] for r in ratios), 2) for k in ratios[0]
                },
                "share_deepened_1.4x": round(
                    sum(r["num_layers"] >= 1.4 for r in ratios) / len(ratios), 2
                ),
                "skipped_untrainable": skipped,
            }
            if name.startswith("catalog"):
                row["num_layers_ratio"] = {n: round(r["num_layers"], 2) for n, r in named}
            print(json.dumps(row), flush=True)


def teacher_proposer(hold: Sequence[str]) -> dict[str, Any]:
    """Return evaluate's plug-in that steps towards each workload's oracle configuration.

    The teacher of ``research/train/imitate.py``: it knows the oracle (the tuning task
    carries it for the oracle method), so it is a ceiling, not a method.
    """

    def propose(*, task: Any, current: Any, **_: Any) -> tuple[Any, str]:
        target = task.extra["oracle_hp"]
        action = task.constraints.action_towards(current, target, hold=hold)
        return task.constraints.apply_action(current, action), "teacher"

    return {"propose": propose}


def cmd_teacher(args: argparse.Namespace) -> None:
    """Scores of the imitation teacher (steps towards the oracle), per held hyperparameters."""
    catalog = (
        validation_profiles(args.profiles, args.val_seed) if "validation" in args.splits else {}
    )
    policy = LocalPolicy.load(BUNDLED)  # not consulted: the teacher replaces its proposals
    # (round 10 also scored epochs by the critical-batch relation: no better than holding
    # them, research/evaluate/RESULTS.md; that variant left the product with issue 28)
    for hold in ("", "learning_rate", "learning_rate,epochs"):
        held = tuple(h for h in hold.split(",") if h)
        teacher = teacher_proposer(held)
        row: dict[str, Any] = {"hold": list(held), "epochs_rule": "oracle"}
        for split, seeds, cat in (
            ("holdout", args.holdout_seeds, None),
            ("train", args.train_seeds, None),
            ("validation", args.seeds, catalog),
        ):
            if split not in args.splits:
                continue
            result = _score(
                policy,
                None,
                split="all" if cat is not None else split,
                seeds=seeds,
                catalog=cat,
                path="direct",
                plugins=teacher,
            )
            row[split] = _jpo(result)
        print(json.dumps(row), flush=True)


def planner_plugins(planner: Any, hold: Sequence[str], path: str) -> dict[str, Any]:
    """Return evaluate's plug-ins that make ``path`` ask the calibrated planner for each step.

    The direct path applies its step as it is; the suggest path hands it to the CI stage as
    the policy's action (a policy source that answers with the planner's step), so the
    guards, rollback and failed-config memory act on it as on the policy's.
    """
    pending: dict[str, Any] = {}

    def plan(task: Any, current: Any, summary: Any) -> Any:
        campaign = (task.workload, task.seed)
        planner.observe(campaign, current, summary)
        return planner.target(campaign, task.profile, task.constraints)

    def towards(task: Any, current: Any, target: Any) -> np.ndarray:
        # Coupling 0: the planner aims the learning rate itself, as the teacher with none held.
        return np.asarray(
            task.constraints.action_towards(
                current, target, learning_rate_follows_batch=0.0, hold=hold
            )
        )

    def direct(*, task: Any, current: Any, summary: Any, **_: Any) -> tuple[Any, str]:
        target = plan(task, current, summary)
        if target is None:
            return current, "planner: no fit"
        action = towards(task, current, target)
        hp = task.constraints.apply_action(current, action, learning_rate_follows_batch=0.0)
        return hp, "planner"

    class PlannerSource(PolicySource):
        @property
        def description(self) -> str:
            return "planner"

        def version(self) -> str:
            return "planner"

        def answer(self, query: Any) -> Any:
            action = towards(pending["task"], query.current, pending["target"])
            return PolicyAnswer(
                action=tuple(float(a) for a in action), version="planner", source="planner"
            )

    def through_ci(inner: Callable[..., Any]) -> Callable[..., Any]:
        def propose(*, task: Any, current: Any, summary: Any, **kw: Any) -> tuple[Any, str]:
            target = plan(task, current, summary)
            if target is None:
                return current, "planner: no fit"
            pending.update(task=task, target=target)
            return inner(task=task, current=current, summary=summary, **kw)

        return propose

    if path == "direct":
        return {"propose": direct}
    return {"policy_source": PlannerSource(), "wrap_propose": through_ci}


def cmd_planner(args: argparse.Namespace) -> None:
    """Scores of the calibrated model-based planner (round 11), per path and held values."""
    from planner import CalibratedPlanner, training_priors

    from jpo.evaluation.evaluate import evaluation_oracle_settings
    from jpo.learning.reward import load_reward_weights
    from jpo.sim.response import load_catalog, load_conditions

    settings = load_evaluation_settings()
    policy = LocalPolicy.load(BUNDLED)  # not consulted: the planner replaces its proposals
    shared = {
        "priors": training_priors(load_catalog()),
        "conditions": load_conditions(None, **settings.conditions),
        "weights": load_reward_weights(),
        "oracle_settings": evaluation_oracle_settings(settings),
    }
    for hold in args.hold:
        held = tuple(h for h in hold.split(",") if h)
        for path in args.paths:
            planner = CalibratedPlanner(**shared)  # a fresh one: no campaign's runs carry over
            result = _score(
                policy,
                str(BUNDLED),
                split=args.split,
                seeds=args.holdout_seeds,
                path=path,
                plugins=planner_plugins(planner, held, path),
            )
            per = workload_summary(result)
            per = per[per["method"] == "jpo"].set_index("workload")["oracle_fraction"]
            row = {"hold": list(held), "path": path, "split": args.split, **_jpo(result)}
            row["per_workload"] = {k: round(float(v), 3) for k, v in per.items()}
            print(json.dumps(row), flush=True)


class _HistoryPolicy:
    """A history student seen as a spec-1 policy: it adds the campaign's previous observation.

    ``campaign`` names the campaign the next :meth:`act` belongs to; the proposer sets it
    before each step. The previous observation is the one this campaign's last ``act``
    saw: on the direct path the run before; on the suggest path the run of the last step
    the CI stage asked the policy for (a rollback round does not ask it).
    """

    def __init__(self, policy: Any, campaign: Callable[[], Any]) -> None:
        self._policy = policy
        self._campaign = campaign
        self._previous: dict[Any, np.ndarray] = {}

    def __getattr__(self, name: str) -> Any:  # version, action_names, coupling, ...
        return getattr(self._policy, name)

    def act(self, obs: np.ndarray) -> np.ndarray:
        from campaign_history import with_history

        campaign = self._campaign()
        x = with_history(obs, self._previous.get(campaign))
        self._previous[campaign] = np.asarray(obs, dtype=np.float32)
        return self._policy.act(x)


def history_plugins(policy: Any, policy_path: str, path: str) -> dict[str, Any]:
    """Return evaluate's plug-ins that let ``path`` run a history student (round 12).

    A history student's input adds the campaign's previous observation (:class:`_HistoryPolicy`);
    any other policy runs unchanged.
    """
    from campaign_history import is_history_input

    campaign: dict[str, Any] = {"key": None}

    def keyed(inner: Callable[..., Any]) -> Callable[..., Any]:
        def propose(*, task: Any, **kw: Any) -> Any:
            campaign["key"] = (task.workload, task.seed)
            return inner(task=task, **kw)

        return propose

    if not is_history_input(policy.observation_names):
        return {"wrap_propose": keyed}
    wrapped = _HistoryPolicy(policy, lambda: campaign["key"])
    if path == "direct":
        return {"propose": jpo_proposer(wrapped), "wrap_propose": keyed}
    return {"policy_source": LocalPolicySource(policy_path, policy=wrapped), "wrap_propose": keyed}


def cmd_history(args: argparse.Namespace) -> None:
    """Scores of history students (round 12) and their controls, per path, then per recipe."""
    rows: list[dict[str, Any]] = []
    from campaign_history import load_policy

    for path in args.policies:
        policy = load_policy(path)
        row: dict[str, Any] = {"policy": path, "recipe": recipe_label(path)}
        for eval_path in args.paths:
            result = _score(
                policy,
                path,
                split=args.split,
                seeds=args.holdout_seeds,
                path=eval_path,
                plugins=history_plugins(policy, path, eval_path),
            )
            per = workload_summary(result)
            per = per[per["method"] == "jpo"].set_index("workload")["oracle_fraction"]
            row[eval_path] = _jpo(result)
            row[eval_path]["per_workload"] = {k: round(float(v), 3) for k, v in per.items()}
        rows.append(row)
        print(json.dumps(row), flush=True)
    for recipe, members in by_recipe(rows).items():
        line: dict[str, Any] = {"recipe": recipe, "runs": len(members)}
        for eval_path in args.paths:
            values = np.array([m[eval_path]["oracle_fraction"] for m in members])
            line[eval_path] = {
                **mean_sd(values),
                "val_loss_ok_min": min(m[eval_path]["val_loss_ok"] for m in members),
            }
        print(json.dumps(line), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


def main() -> None:
    """Parse the command line and run one diagnostic."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profiles", type=int, default=48, help="validation profiles")
    p.add_argument("--val-seed", type=int, default=777002, help="validation randomization seed")
    p.add_argument("--seeds", type=int, default=2, help="noise seeds per validation profile")
    p.add_argument("--holdout-seeds", type=int, default=10, help="noise seeds per held-out one")
    sub = p.add_subparsers(dest="command", required=True)
    commands: dict[str, Callable[[argparse.Namespace], None]] = {}
    for name, fn in (("regimes", cmd_regimes), ("guards", cmd_guards)):
        s = sub.add_parser(name, help=fn.__doc__)
        s.add_argument("--policy", default=str(BUNDLED))
        commands[name] = fn
    s = sub.add_parser("ci-stage", help=cmd_ci_stage.__doc__)
    s.add_argument("--policy", default=str(BUNDLED))
    s.add_argument("--variants", nargs="+", default=None, choices=list(CI_STAGE_VARIANTS))
    s.add_argument(
        "--splits",
        nargs="+",
        default=["train", "validation"],
        choices=("train", "validation", "holdout"),
    )
    s.add_argument("--train-seeds", type=int, default=3, help="noise seeds per training workload")
    commands["ci-stage"] = cmd_ci_stage
    s = sub.add_parser("ensemble", help=cmd_ensemble.__doc__)
    s.add_argument("--members", nargs="+", required=True, help="exported policy folders")
    s.add_argument("--label", default="ensemble")
    commands["ensemble"] = cmd_ensemble
    s = sub.add_parser("score", help=cmd_score.__doc__)
    s.add_argument("--policies", nargs="+", required=True, help="exported policy folders")
    s.add_argument("--train-seeds", type=int, default=3, help="noise seeds per training workload")
    s.add_argument("--out", default=None, help="also write every row to this JSON file")
    commands["score"] = cmd_score
    s = sub.add_parser("coverage", help=cmd_coverage.__doc__)
    s.add_argument("--randomized", type=int, default=200, help="training-randomization profiles")
    s.add_argument("--randomization", default=None, help="randomization TOML (default: configs/)")
    s.add_argument("--starts", type=int, default=8, help="recorded runs per workload")
    commands["coverage"] = cmd_coverage
    s = sub.add_parser("teacher", help=cmd_teacher.__doc__)
    s.add_argument(
        "--splits",
        nargs="+",
        default=["holdout", "train", "validation"],
        choices=["holdout", "train", "validation"],
        help="splits to score (validation builds 48 profiles' oracles: the slow part)",
    )
    s.add_argument("--train-seeds", type=int, default=3, help="noise seeds per training workload")
    commands["teacher"] = cmd_teacher
    s = sub.add_parser("greedy", help=cmd_greedy.__doc__.splitlines()[0])
    s.add_argument("--split", default="holdout", choices=("holdout", "train"))
    commands["greedy"] = cmd_greedy
    s = sub.add_parser("oracle-moves", help=cmd_oracle_moves.__doc__)
    s.add_argument("--randomized", type=int, default=200, help="training-randomization profiles")
    commands["oracle-moves"] = cmd_oracle_moves
    s = sub.add_parser("planner", help=cmd_planner.__doc__)
    s.add_argument("--split", default="holdout", choices=("holdout", "train"))
    s.add_argument("--paths", nargs="+", default=["direct", "suggest"])
    s.add_argument(
        "--hold", nargs="+", default=["", "learning_rate,epochs"], help="held sets, comma-joined"
    )
    commands["planner"] = cmd_planner
    s = sub.add_parser("history", help=cmd_history.__doc__)
    s.add_argument("--policies", nargs="+", required=True, help="exported policy folders")
    s.add_argument("--split", default="holdout", choices=("holdout", "train"))
    s.add_argument("--paths", nargs="+", default=["direct"], choices=("direct", "suggest"))
    s.add_argument("--out", default=None, help="also write every row to this JSON file")
    commands["history"] = cmd_history
    args = p.parse_args()
    commands[args.command](args)


if __name__ == "__main__":
    main()
