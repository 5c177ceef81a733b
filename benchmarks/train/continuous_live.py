"""Continuous learning on a live simulated cluster, with a contention shift (issue 27).

1. **Workloads the bundled policy never trained on**: ``--workloads`` K profiles drawn by
   :func:`jpo.sim.randomization.random_profiles` with a FRESH seed (``--profile-seed``;
   the bundled policy's 200 synthetic profiles came from ``configs/randomization.toml``'s
   seed 1234). Fresh draws, not the catalog's held-out split, because that split is where
   forgetting is reported: a cluster made of it would let the cycles train on the very
   workloads the report scores. Each is relabelled ``live00``, ``live01``...
2. **Campaigns through the CI stage against live pods**: a real Prometheus (Debian's
   ``prometheus``, :class:`jpo.cli.demo.LocalPrometheus`) scrapes one
   :class:`jpo.sim.live.LiveWorkload` pod per workload every second. Each of ``--rounds``
   rounds runs every workload with the values in its ``config.ini`` (pods in parallel),
   then ``jpo feedback`` (from round 2) and ``jpo suggest`` (bundled policy) in process
   (:mod:`jpo.stage`), each workload with its own ``.jpo/audit.jsonl``. Each run's
   simulated time runs at its own speedup, so that it lasts about ``--run-wall-s`` wall
   seconds (or ``--speedup`` for every pod): the pods export their simulated training time
   (``jpo_training_elapsed_seconds``), from which JPO reads the runs' durations and
   GPU-hours, so runs at different speedups compare correctly.
3. **Contention shift**: from round ``rounds // 2 + 1`` the co-tenants' mean contention
   goes from ``configs/cluster.toml``'s value (0.15) to ``--shift-contention`` (0.6): they
   take 60 % of the node's CPU capacity and, through ``gpu_contention_share`` (0.3), 18 %
   of the GPU's speed, as when a busy batch tenant lands on the nodes. Input-bound jobs
   slow down most; the question is whether the policy follows.
4. **Continuous cycles**: ``python -m jpo.train --continuous --cycles C`` with the shipped
   ``configs/train.yaml``, pulling the history from that Prometheus
   (``continuous.prometheus_url``) and the workloads' audit logs (concatenated into one
   file for ``continuous.audit_log``); only sizes, paths and the live query steps are set
   with ``--set`` (plus any ``--set`` given here, passed through).
5. **Scores** of the policy served before and after each cycle (bundled, then whatever was
   promoted), on the same seeded episodes: the K true profiles before and after the
   shift, the validation set the cycles' promotion check reads (no forgetting), and the
   catalog's held-out split (a test set nothing chose on: no forgetting); plus each cycle's own
   promotion check, and what each served policy suggests from every workload's last
   (post-shift) run.

6. **The teacher** of the cycles on that history (:func:`teacher_targets`): the oracle of
   each profile calibrated from the pulled history beside the oracle of its true profile,
   and the direction of the first teacher action from the defaults against the direction
   towards the true oracle (RESULTS.md §10b).

Results go to ``continuous_live.json`` beside this script (``--out``), with the machine.
Live pods export their simulated training time (``jpo_training_elapsed_seconds``), so the
pulled history's run durations and GPU-hours are the simulated runs', not the wall seconds
they took here (before 2026-12-06 they were wall seconds: RESULTS.md §10). ``--cycles 0``
stops after the campaigns and the history pull (the teacher table is still computed).

Run:  python benchmarks/train/continuous_live.py --workloads 4 --rounds 8 --cycles 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from jpo.cli.demo import LIVE_QUERY, LocalPrometheus  # noqa: E402
from jpo.net import free_port  # noqa: E402
from jpo.paths import BUNDLED_POLICY_DIR, config_path  # noqa: E402
from jpo.reporting.machine import describe_machine  # noqa: E402
from jpo.sim.live import LiveWorkload  # noqa: E402
from jpo.sim.response import ClusterConditions, WorkloadProfile, load_conditions  # noqa: E402

OUT = Path(__file__).resolve().parent / "continuous_live.json"
PROFILE_SEED = 2027  # fresh randomization seed: not configs/randomization.toml's 1234
SHIFT_CONTENTION = 0.6  # co-tenants' mean contention after the shift (cluster.toml: 0.15)
LINGER_S = 4.0  # wall seconds a finished pod's final state stays scraped
EPISODE_LENGTH = 8  # runs per scored campaign, as configs/train.yaml's env
SCORE_SEED = 777  # first seed of the scoring episodes (episode i: SCORE_SEED + i)
LIVE_QUERY_STEP_S = float(LIVE_QUERY["run_step_s"])  # the history pull's step (s)
SIGN_EPS = 0.05  # |action| below this counts as "no move" in the teacher table (§10b)


@dataclass(frozen=True)
class Workload:
    """One workload of the simulated cluster: its true profile, config.ini and pod."""

    profile: WorkloadProfile
    config: Path
    port: int
    speedup: float | None  # None: each run its own (about --run-wall-s wall seconds)


@dataclass(frozen=True)
class RunRow:
    """One run of a campaign: the values it ran with, what the pod measured, the decision."""

    workload: str
    round: int
    contention: float
    batch_size: int
    learning_rate: float
    num_layers: int
    epochs: int
    failure: str
    gpu_util: float
    cpu_util: float
    throughput: float
    val_loss: float
    simulated_hours: float
    speedup: float
    decision: str


# --------------------------------------------------------------------------- set-up


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Read the sizes (module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", type=int, default=4, help="K fresh randomized workloads")
    p.add_argument("--rounds", type=int, default=8, help="R runs per campaign (shift at R/2)")
    p.add_argument(
        "--cycles", type=int, default=2, help="continuous-learning cycles (0: pull history only)"
    )
    p.add_argument("--budget-iterations", type=int, default=4, help="iterations per cycle")
    p.add_argument("--speedup", type=float, default=None, help="one speedup for every pod")
    p.add_argument("--run-wall-s", type=float, default=30.0, help="wall s of a run (about)")
    p.add_argument("--shift-contention", type=float, default=SHIFT_CONTENTION)
    p.add_argument("--profile-seed", type=int, default=PROFILE_SEED)
    p.add_argument("--episodes", type=int, default=32, help="episodes per set and policy")
    p.add_argument("--holdout", default="", help="held-out workloads (comma list; '': all)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="K=V",
        help="extra jpo train --set override (repeatable; after this script's)",
    )
    p.add_argument("--workdir", type=Path, default=None, help="default: a fresh temp folder")
    p.add_argument("--out", type=Path, default=OUT)
    return p.parse_args(argv)


def fresh_profiles(count: int, seed: int) -> list[WorkloadProfile]:
    """Draw ``count`` randomized profiles with a fresh seed, relabelled live00, live01..."""
    from jpo.sim.randomization import load_randomization, random_profiles
    from jpo.sim.response import load_catalog

    settings = load_randomization(seed=seed)
    drawn = random_profiles(load_catalog(), count, settings=settings)
    return [
        replace(p, name=f"live-{i:02d}", dataset=f"live{i:02d}", split="holdout")
        for i, p in enumerate(drawn)
    ]


def write_config_ini(folder: Path, profile: WorkloadProfile) -> Path:
    """Write the workload's config.ini at its profile's defaults."""
    folder.mkdir(parents=True, exist_ok=True)
    d = profile.defaults
    path = folder / "config.ini"
    path.write_text(
        f"# {profile.source}\n[workload]\ndataset = {profile.dataset}\nmodel = {profile.model}\n"
        f"framework = {profile.framework}\n\n[hyperparameters]\nbatch_size = {d.batch_size}\n"
        f"learning_rate = {d.learning_rate!r}\nnum_layers = {d.num_layers}\n"
        f"epochs = {d.epochs}\n",
        encoding="utf-8",
    )
    return path


def write_profiles(folder: Path, profiles: Sequence[WorkloadProfile]) -> Path:
    """Write the true profiles in the catalog's TOML format (for the scoring env)."""
    folder.mkdir(parents=True, exist_ok=True)
    for profile in profiles:
        lines: list[str] = []
        for section, table in profile.as_toml_dict().items():
            lines += ["", f"[{section}]"]
            lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
        (folder / f"{profile.name}.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def live_config_dir(root: Path, shift_contention: float) -> Path:
    """Copy configs/ with [query] steps scaled to second-long live runs (as ``jpo demo``).

    Also writes ``cluster-shifted.toml`` beside it (the cluster after the shift).
    """
    folder = root / "configs"
    shutil.copytree(config_path("metrics.toml").parent, folder)
    metrics = folder / "metrics.toml"
    text = metrics.read_text(encoding="utf-8")
    for key, value in LIVE_QUERY.items():
        text = re.sub(rf"(?m)^{key}\s*=.*$", f"{key} = {value}", text, count=1)
    metrics.write_text(text, encoding="utf-8")
    cluster = (folder / "cluster.toml").read_text(encoding="utf-8")
    shifted = re.sub(r"(?m)^contention\s*=.*$", f"contention = {shift_contention}", cluster)
    (root / "cluster-shifted.toml").write_text(shifted, encoding="utf-8")
    return folder


def make_workloads(root: Path, profiles: Sequence[WorkloadProfile], args: Any) -> list[Workload]:
    """Write each workload's config.ini and fix its pod's port (and ``--speedup``)."""
    return [
        Workload(p, write_config_ini(root / p.name, p), free_port(), args.speedup) for p in profiles
    ]


def speedup_of(w: Workload, hp: Any, cond: ClusterConditions, run_wall_s: float) -> float:
    """The run's speedup: ``--speedup``, else so that it lasts about ``run_wall_s`` here."""
    from jpo.sim.response import predict

    if w.speedup is not None:
        return w.speedup
    return max(predict(w.profile, hp, cond).duration_s / run_wall_s, 1e-3)


# --------------------------------------------------------------------------- campaigns


def conditions_of(round_no: int, rounds: int, shift: float) -> ClusterConditions:
    """The cluster of a round: cluster.toml's, with the co-tenants' shift after R/2."""
    base = load_conditions()
    return base if round_no <= rounds // 2 else replace(base, contention=shift)


def run_pods(
    workloads: Sequence[Workload], round_no: int, cond: ClusterConditions, run_wall_s: float
) -> list[LiveWorkload]:
    """Run every workload once as a live pod (in parallel); return the finished pods."""
    from jpo.workload.config_file import read_workload

    hps = [read_workload(w.config).hyperparameters for w in workloads]
    pods = [
        LiveWorkload(
            w.profile,
            hp,
            cond,
            port=w.port,
            speedup=speedup_of(w, hp, cond, run_wall_s),
            seed=1000 * round_no + i,
            run_id=f"{w.profile.dataset}-run-{round_no}",
            linger_s=LINGER_S,
        )
        for i, (w, hp) in enumerate(zip(workloads, hps, strict=True))
    ]
    try:
        for pod in pods:
            pod.start()
        for pod in pods:
            pod.wait()
        return pods
    finally:
        for pod in pods:
            pod.stop()


def ci_stage(w: Workload, round_no: int, source: Any, metrics: Path) -> str:
    """``jpo feedback`` on this round's run (from round 2), then ``jpo suggest``; the status."""
    from jpo.errors import JpoError
    from jpo.policy.source import LocalPolicySource
    from jpo.stage.feedback import FeedbackOptions, feedback
    from jpo.stage.suggest import SuggestOptions, suggest

    if round_no > 1:
        run_id = f"{w.profile.dataset}-run-{round_no}"
        try:
            feedback(FeedbackOptions(w.config, run_id, metrics_path=metrics), metric_source=source)
        except JpoError as err:
            print(f"  {w.profile.name}: feedback on {run_id}: {err}", flush=True)
    try:
        result = suggest(
            SuggestOptions(config=w.config, approve=True, metrics_path=metrics),
            metric_source=source,
            policy_source=LocalPolicySource(None),
        )
    except JpoError as err:  # as a pipeline would: config.ini untouched, the campaign goes on
        return f"error: {err}"
    return f"{result.status.value}: {result.message}"


def run_row(
    w: Workload, round_no: int, cond: ClusterConditions, pod: LiveWorkload, said: str
) -> RunRow:
    """One campaign row from the pod's own (true) run."""
    run = pod.current_run
    hp, s = run.hp, run.summary
    return RunRow(
        w.profile.name,
        round_no,
        cond.contention,
        int(hp.batch_size),
        float(hp.learning_rate),
        int(hp.num_layers),
        int(hp.epochs),
        s.failure,
        s.gpu_util_mean,
        s.cpu_util_mean,
        s.throughput,
        s.final_val_loss,
        s.duration_s / 3600.0,
        pod.speedup,
        said.split(":", 1)[0],
    )


def run_campaigns(
    workloads: Sequence[Workload], args: Any, url: str, metrics: Path
) -> list[RunRow]:
    """R rounds of live runs + CI stage for every workload (module docstring, 2-3)."""
    from jpo.telemetry.promql import load_catalog
    from jpo.telemetry.sources import PrometheusSource

    source = PrometheusSource.from_url(url, load_catalog(metrics))
    rows: list[RunRow] = []
    for r in range(1, args.rounds + 1):
        cond = conditions_of(r, args.rounds, args.shift_contention)
        start = time.monotonic()
        pods = run_pods(workloads, r, cond, args.run_wall_s)
        time.sleep(2.0)  # the last scrapes land
        for w, pod in zip(workloads, pods, strict=True):
            said = ci_stage(w, r, source, metrics)
            rows.append(run_row(w, r, cond, pod, said))
            print(f"  round {r} {w.profile.name}: {_describe(rows[-1])} -> {said}", flush=True)
        print(f"round {r} (contention {cond.contention}) took {time.monotonic() - start:.0f} s")
    return rows


def _describe(row: RunRow) -> str:
    return (
        f"batch {row.batch_size}, lr {row.learning_rate:.3g}, layers {row.num_layers}, "
        f"epochs {row.epochs}: {row.failure}, GPU {row.gpu_util:.0%}, CPU {row.cpu_util:.0%}, "
        f"{row.throughput:,.0f}/s, val loss {row.val_loss:.4f}"
    )


# --------------------------------------------------------------------------- cycles


def combined_audit_log(workloads: Sequence[Workload], path: Path) -> Path:
    """Concatenate the workloads' audit logs into one file for ``continuous.audit_log``."""
    with path.open("w", encoding="utf-8") as out:
        for w in workloads:
            out.write((w.config.parent / ".jpo" / "audit.jsonl").read_text(encoding="utf-8"))
    return path


def run_cycles(root: Path, args: Any, url: str, config_dir: Path, audit: Path) -> dict[str, Any]:
    """``python -m jpo.train --continuous`` on the pulled history; return its JSON summary."""
    sets = {
        "storage.path": root / "store",
        "continuous.prometheus_url": url,
        "continuous.history_path": root / "history",
        "continuous.audit_log": audit,
        "continuous.policy_dir": root / "policies",
        "continuous.budget_iterations": args.budget_iterations,
        "continuous.eval_episodes": args.episodes,
        "continuous.interval_s": 0,
        "continuous.step_s": LIVE_QUERY_STEP_S,
        "continuous.lookback_s": 86400,
        "continuous.env_overrides_with_history.teacher_cache": root / "oracles-history.json",
        "reporting.progress_bar": "false",
        "resources.ray_num_cpus": 2,
    }
    cmd = [sys.executable, "-m", "jpo.train", "--continuous", "--cycles", str(args.cycles)]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    for extra in args.overrides:
        cmd += ["--set", extra]
    env = {**os.environ, "JPO_CONFIG_DIR": str(config_dir), "PYTHONPATH": str(REPO)}
    log = root / "train.log"
    print(f"continuous learning: {' '.join(cmd[1:])} (log {log})", flush=True)
    with log.open("w", encoding="utf-8") as err:
        done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    if done.returncode != 0:
        tail = log.read_text(encoding="utf-8")[-3000:]
        raise SystemExit(f"jpo train --continuous exited {done.returncode}:\n{tail}")
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    summary["command"] = cmd[1:]
    return summary


def pull_history(url: str, metrics: Path, history: Path) -> int:
    """Pull the whole campaign history into the store ``history`` (as a cycle's first pull)."""
    from jpo.telemetry.history import append_history
    from jpo.telemetry.promql import load_catalog
    from jpo.telemetry.sources import PrometheusSource

    source = PrometheusSource.from_url(url, load_catalog(metrics))
    now = time.time()
    return append_history(history, source.history(now - 86400, now, LIVE_QUERY_STEP_S))


def served_after_each_cycle(summary: dict[str, Any]) -> list[tuple[str, Path]]:
    """(label, artifact) of the policy served before cycle 1 and after each cycle."""
    served = [("bundled", BUNDLED_POLICY_DIR)]
    for report in summary["cycles"]:
        if report["promoted"]:
            served.append((f"after cycle {report['cycle']}", Path(report["policy_path"])))
        else:
            served.append((f"after cycle {report['cycle']}", served[-1][1]))
    return served


# --------------------------------------------------------------------------- scores


def scoring_sets(
    root: Path, profiles_dir: Path, holdout_names: str
) -> dict[str, Callable[[], Any]]:
    """Episode sets: the cluster's TRUE profiles before/after the shift, validation, held-out."""
    from jpo.sim.replay_env import PrometheusReplayEnv
    from jpo.train.trainer import load_train_config

    common = {"episode_length": EPISODE_LENGTH, "teacher": False, "step_info": False}
    cluster = {**common, "source": "catalog", "catalog_path": str(profiles_dir), "split": "all"}
    shifted = {**cluster, "cluster_path": str(root / "cluster-shifted.toml")}
    # the cycles' own no-forgetting set (configs/train.yaml env.eval_config: the validation
    # set), and the catalog's held-out split, a test set the cycles never read (its 14-day
    # runs sampled at most 2,000 times each, as the validation set's)
    eval_config = load_train_config().env.eval_config
    validation: dict[str, Any] = {**common, "source": "catalog", **eval_config}
    holdout: dict[str, Any] = {
        **common,
        "source": "catalog",
        "split": "holdout",
        "catalog_max_samples_per_run": eval_config.get("catalog_max_samples_per_run", 0),
    }
    if holdout_names:
        holdout["workloads"] = holdout_names.split(",")
    return {
        "cluster, before the shift": lambda: PrometheusReplayEnv(cluster),
        "cluster, after the shift": lambda: PrometheusReplayEnv(shifted),
        "validation set (the cycles' no-forgetting check)": lambda: PrometheusReplayEnv(validation),
        "held-out split (test set, no forgetting)": lambda: PrometheusReplayEnv(holdout),
    }


def score_policies(
    served: Sequence[tuple[str, Path]], sets: dict[str, Callable[[], Any]], episodes: int
) -> list[dict[str, Any]]:
    """Mean return of each served policy per set, and its paired difference to the bundled."""
    from jpo.policy.artifact import LocalPolicy
    from jpo.train.continuous import episode_returns

    cache: dict[Path, dict[str, list[float]]] = {}
    rows = []
    for label, path in served:
        if path not in cache:
            policy = LocalPolicy.load(path)
            cache[path] = {
                name: episode_returns(policy.act, make, episodes=episodes, seed=SCORE_SEED)
                for name, make in sets.items()
            }
        row: dict[str, Any] = {"served": label, "policy": str(path)}
        for name, returns in cache[path].items():
            d = np.asarray(returns) - np.asarray(cache[served[0][1]][name])
            se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else 0.0
            row[name] = {"mean": float(np.mean(returns)), "vs_bundled": float(d.mean()), "se": se}
        rows.append(row)
    return rows


def last_suggestions(
    workloads: Sequence[Workload], served: Sequence[tuple[str, Path]]
) -> list[dict[str, Any]]:
    """What each served policy suggests from each workload's last policy decision's input."""
    from jpo.policy.artifact import LocalPolicy
    from jpo.policy.step import policy_step
    from jpo.stage.audit import read_records
    from jpo.workload.constraints import load_constraints
    from jpo.workload.types import Hyperparameters

    constraints = load_constraints()
    out = []
    for w in workloads:
        records = read_records(w.config.parent / ".jpo" / "audit.jsonl")
        with_input = [r for r in records if r.features]  # rollbacks do not ask the policy
        if not with_input:
            continue
        last = with_input[-1]
        current = Hyperparameters.from_mapping(dict(last.before))
        obs = np.asarray(last.features, dtype=np.float32)
        row: dict[str, Any] = {
            "workload": w.profile.name,
            "run": last.telemetry.get("run_id"),
            "current": current.as_dict(),
        }
        for label, path in served:
            step = policy_step(LocalPolicy.load(path), obs, constraints, current, source=label)
            row[label] = step.hyperparameters.as_dict()
        out.append(row)
    return out


def history_env_config(root: Path, history: str = "history", **extra: Any) -> dict[str, Any]:
    """The env config of the cycles on the pulled history (configs/train.yaml's)."""
    from jpo.train.continuous import load_continuous_config
    from jpo.train.trainer import load_train_config

    cfg = load_train_config()
    config = {**cfg.env.config, **load_continuous_config(cfg).env_overrides_with_history}
    where = {"history_path": str(root / history), "step_info": False}
    cache = {"teacher_cache": str(root / f"oracles-{history}.json")}  # the cycles' cache
    return {**config, **where, **cache, "teacher": True, **extra}


def wall_clock_history(root: Path, rows: Sequence[RunRow]) -> str:
    """Rewrite the pulled history as live pods exported it before 2026-12-06; its folder name.

    No ``elapsed_s`` (durations = the wall seconds between scrapes) and the samples counter
    divided by the run's speedup (counter / wall seconds = the run's throughput), to compare
    the teacher on the same campaigns with and without simulated durations.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from jpo.telemetry.history import append_history, read_history

    table = read_history(root / "history")
    table = table.filter(pc.not_equal(table.column("metric"), "elapsed_s"))
    speedups = {f"{r.workload.replace('-', '')}-run-{r.round}": r.speedup for r in rows}
    scale = np.array([speedups.get(str(run), 1.0) for run in table.column("run_id").to_pylist()])
    counter = np.asarray(pc.equal(table.column("metric"), "samples_total"))
    values = np.asarray(table.column("value")) / np.where(counter, scale, 1.0)
    table = table.set_column(table.schema.get_field_index("value"), "value", pa.array(values))
    append_history(root / "history-wall", table)
    return "history-wall"


def action_signs(action: Any, tunable: Sequence[str]) -> dict[str, int]:
    """Each tunable hyperparameter's direction in an action (|a| < SIGN_EPS: 0)."""
    return {
        n: int(np.sign(a)) if abs(a) >= SIGN_EPS else 0
        for n, a in zip(tunable, action, strict=True)
    }


def teacher_targets(
    root: Path, profiles: Sequence[WorkloadProfile], history: str = "history"
) -> dict[str, Any]:
    """The cycles' teacher on the pulled history beside the TRUE profiles' oracles.

    Per workload: the oracle of the profile calibrated from the history (what the BC term
    steps towards), the true profile's oracle (same search and constraints), and the
    direction of the first teacher action from the defaults for the shipped teacher and
    for variant U (``teacher_hold_unvaried``; RESULTS.md §10b), against the direction
    towards the true oracle; the gap |normalized target - normalized true oracle| per
    hyperparameter (``Constraints.normalize``: 0-1 within the limits, log where they say).
    Counts of right/wrong directions over all workloads.
    """
    from jpo.sim.replay_env import PrometheusReplayEnv
    from jpo.sim.teacher import cached_oracle_configs, oracle_configs
    from jpo.workload.types import HYPERPARAMETER_NAMES

    env = PrometheusReplayEnv(history_env_config(root, history, teacher_hold_unvaried=True))
    cons, shipped = env.constraints, tuple(env.config.teacher_hold)
    calibrated = cached_oracle_configs(
        env.profiles, cons, Path(env.config.teacher_cache) if env.config.teacher_cache else None
    )
    by_key = {
        prof.key: (name, prof) for name, prof in zip(env.workloads, env.profiles, strict=True)
    }
    true = oracle_configs(profiles, cons)
    rows, counts = [], {v: {"right": 0, "wrong": 0} for v in ("shipped", "U")}
    for p in profiles:
        name, fitted = by_key[p.key]
        target, want = calibrated.get(fitted.name), true.get(p.name)
        row: dict[str, Any] = {
            "workload": p.name,
            "defaults": p.defaults.as_dict(),
            "true_profile": want.as_dict() if want else None,
            "calibrated_from_history": target.as_dict() if target else None,
            "hold": {"shipped": list(shipped), "U": list(env.teacher_hold(name))},
        }
        if target is not None and want is not None:
            gap = np.abs(cons.normalize(target) - cons.normalize(want))
            row["normalized_gap"] = dict(zip(HYPERPARAMETER_NAMES, gap.tolist(), strict=True))
            truth = action_signs(cons.action_towards(p.defaults, want), cons.tunable)
            row["direction"] = {"true": truth}
            for variant, hold in (("shipped", shipped), ("U", env.teacher_hold(name))):
                got = action_signs(cons.action_towards(p.defaults, target, hold=hold), cons.tunable)
                row["direction"][variant] = got
                for n, s in got.items():
                    counts[variant]["right"] += int(s != 0 and s == truth[n])
                    counts[variant]["wrong"] += int(s != 0 and s == -truth[n])
        rows.append(row)
    return {"workloads": rows, "counts": counts}


def halves(rows: Sequence[RunRow], rounds: int) -> dict[str, dict[str, float]]:
    """Campaign figures before vs after the shift: medians over workloads' runs, failures."""
    out = {}
    for name, after in (("before", False), ("after", True)):
        part = [r for r in rows if (r.round > rounds // 2) == after]
        ok = [r for r in part if r.failure == "none"]
        out[name] = {
            "runs": len(part),
            "oom": sum(r.failure == "oom" for r in part),
            "failed": sum(r.failure != "none" for r in part),
            "median_batch_size": _median([r.batch_size for r in part]),
            "median_gpu_util": _median([r.gpu_util for r in ok]),
            "median_cpu_util": _median([r.cpu_util for r in ok]),
            "median_throughput": _median([r.throughput for r in ok]),
            "median_val_loss": _median([r.val_loss for r in ok]),
        }
    return out


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


# --------------------------------------------------------------------------- main


def experiment(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Run the experiment (module docstring) in the work folder ``root``; return the results."""
    started = time.time()
    config_dir = live_config_dir(root, args.shift_contention)
    profiles = fresh_profiles(args.workloads, args.profile_seed)
    workloads = make_workloads(root, profiles, args)
    prom = LocalPrometheus(root, targets=[f"127.0.0.1:{w.port}" for w in workloads])
    url = prom.start()
    print(f"Prometheus at {url} scrapes {len(workloads)} live pods; work folder {root}")
    try:
        rows = run_campaigns(workloads, args, url, config_dir / "metrics.toml")
        campaigns_s = time.time() - started
        audit = combined_audit_log(workloads, root / "audit-all.jsonl")
        if args.cycles == 0:  # the history only (e.g. to study the teacher on it)
            pull_history(url, config_dir / "metrics.toml", root / "history")
            summary: dict[str, Any] = {"cycles": [], "command": []}
        else:
            summary = run_cycles(root, args, url, config_dir, audit)
    finally:
        prom.stop()
    cycles_s = time.time() - started - campaigns_s
    served = served_after_each_cycle(summary)
    sets = scoring_sets(root, write_profiles(root / "profiles", profiles), args.holdout)
    scores = score_policies(served, sets, args.episodes) if args.cycles else []
    return {
        "machine": describe_machine(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "workloads": [
            {
                "name": w.profile.name,
                "source": w.profile.source,
                "speedup": w.speedup,
                "gpus": w.profile.limits.gpus,
                "defaults": w.profile.defaults.as_dict(),
            }
            for w in workloads
        ],
        "campaign_rows": [asdict(r) for r in rows],
        "campaign_halves": halves(rows, args.rounds),
        "cycles": summary["cycles"],
        "train_command": summary["command"],
        "scores": scores,
        "last_suggestions": last_suggestions(workloads, served),
        "teacher_targets": teacher_targets(root, profiles),
        "wall_s": {"campaigns": campaigns_s, "cycles": cycles_s, "total": time.time() - started},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the experiment in ``--workdir`` (kept) or a temporary folder; write the JSON."""
    args = parse_args(argv)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = experiment(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="jpo-cllive-") as tmp:
            result = experiment(args, Path(tmp))
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("campaign_halves", "scores", "wall_s")}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
