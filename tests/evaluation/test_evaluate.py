"""Tests of jpo.evaluation (evaluate, tuners): small real runs of the protocol, no torch or ray."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from fakes.policy import random_policy
from typer.testing import CliRunner

from jpo.errors import ConfigError
from jpo.evaluation.evaluate import (
    METHODS,
    EvaluationSettings,
    evaluate,
    load_evaluation_settings,
    method_summary,
    oracle_ceiling,
    quality_bar,
    select_workloads,
    workload_summary,
)
from jpo.evaluation.report import write_report
from jpo.evaluation.tuners import OptunaTuner, RandomSearchTuner, Tuner, TuningTask, reach_box
from jpo.policy.artifact import LocalPolicy
from jpo.sim.response import load_catalog
from jpo.workload.types import HYPERPARAMETER_NAMES, Hyperparameters

WORKLOADS = ["mnist-lenet", "higgs-mlp"]


def tiny_policy(folder: Path, seed: int = 0) -> Path:
    """Write a random two-layer policy artifact with the current feature spec."""
    return random_policy(folder, seed=seed)


@pytest.fixture(scope="module")
def policy_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_policy(tmp_path_factory.mktemp("policy") / "policy")


@pytest.fixture(scope="module")
def small(policy_path: Path):
    settings = EvaluationSettings(rounds=2, seeds=1, jpo_path="direct")
    return evaluate(
        settings,
        workloads=WORKLOADS,
        policy=LocalPolicy.load(policy_path),
        policy_path=str(policy_path),
        progress=False,
    )


def test_every_round_of_every_method_is_recorded(small) -> None:
    frame = small.frame()
    assert len(frame) == len(WORKLOADS) * len(small.settings.methods) * (2 + 1)
    counts = frame.groupby(["workload", "method"]).size()
    assert set(counts) == {3}
    assert set(frame["method"]) == set(METHODS)


def test_oracle_reaches_one_and_no_tuning_zero(small) -> None:
    frame = small.frame()
    defined = frame[frame["oracle_gap"] > small.settings.min_oracle_gap]
    assert not defined.empty
    oracle = defined[(defined["method"] == "oracle") & (defined["round"] > 0)]
    np.testing.assert_allclose(oracle["oracle_fraction_last"], 1.0)
    none = defined[defined["method"] == "no_tuning"]
    np.testing.assert_allclose(none["oracle_fraction"], 0.0, atol=1e-12)
    start = defined[defined["round"] == 0]
    np.testing.assert_allclose(start["oracle_fraction"], 0.0, atol=1e-12)


def test_incumbent_is_the_best_observed_run_that_held_quality(small) -> None:
    tol = small.settings.val_loss_tolerance
    frame = small.frame().sort_values(["workload", "method", "seed", "round"])
    for _, grp in frame.groupby(["workload", "method", "seed"]):
        rounds = grp["incumbent_round"].to_numpy()
        assert np.all(rounds <= grp["round"].to_numpy())
        loss = grp["final_val_loss"].to_numpy()
        ok = (grp["failure"].to_numpy() == "none") & (loss <= loss[0] * (1 + tol))
        ok[0] = True
        if grp["method"].iloc[0] == "oracle":
            ok[:] = True
        observed = np.where(ok, grp["objective_observed"].to_numpy(), -np.inf)
        best_seen = np.maximum.accumulate(observed)
        np.testing.assert_allclose(observed[rounds], best_seen)


def test_oracle_ceiling_holds_the_oracle_to_the_methods_rule(small) -> None:
    """The ceiling re-scores the oracle's runs with the measured val-loss rule of the rest."""
    tol = small.settings.val_loss_tolerance
    frame = small.frame().sort_values(["workload", "seed", "round"])
    oracle = frame[(frame["method"] == "oracle") & (frame["oracle_gap"] > 1e-6)]
    per_workload = []
    for _, wl in oracle.groupby("workload"):
        fractions = []
        for _, grp in wl.groupby("seed"):
            loss = grp["final_val_loss"].to_numpy()
            ok = (grp["failure"].to_numpy() == "none") & (loss <= loss[0] * (1 + tol))
            ok[0] = True
            observed = np.where(ok, grp["objective_observed"].to_numpy(), -np.inf)
            best = grp["objective_true"].to_numpy()[int(np.argmax(observed))]
            fractions.append((best - grp["default_objective"].iloc[0]) / grp["oracle_gap"].iloc[0])
        per_workload.append(np.mean(fractions))
    assert oracle_ceiling(small) == pytest.approx(np.mean(per_workload))
    assert oracle_ceiling(small) <= 1.0 + 1e-9
    # No rule (a tolerance nothing exceeds): the ceiling is the oracle's own fraction, 1.
    loose_settings = EvaluationSettings(rounds=2, methods=("oracle",), val_loss_tolerance=1e9)
    loose = evaluate(loose_settings, workloads=WORKLOADS, progress=False)
    assert oracle_ceiling(loose) == pytest.approx(1.0)


def test_jpo_moves_only_inside_the_trust_region(small) -> None:
    from jpo.workload.constraints import load_constraints

    cons = load_constraints()
    frame = small.frame().sort_values(["workload", "seed", "round"])
    jpo = frame[frame["method"] == "jpo"]
    assert jpo["valid"].all()
    for _, grp in jpo.groupby(["workload", "seed"]):
        hps = [
            Hyperparameters.from_mapping({k: row[f"hp_{k}"] for k in HYPERPARAMETER_NAMES})
            for _, row in grp.iterrows()
        ]
        for before, after in itertools.pairwise(hps):
            cons.validate(after, previous=before)


def test_report_plots_and_parquet_are_written(small, tmp_path: Path) -> None:
    paths = write_report(small, tmp_path / "out")
    assert paths.report.is_file() and paths.parquet.is_file() and paths.summary.is_file()
    assert {p.name for p in paths.plots} == {
        "utilization_before_after.png",
        "gain_vs_round.png",
        "val_loss_vs_round.png",
        "gain_by_workload.png",  # small multiples: one panel per workload
    }
    for plot in paths.plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = paths.report.read_text()
    assert "## Quality bar (JPO)" in text and "mnist-lenet" in text
    # every table fits a screen: at most 10 columns, before/after pairs in one cell
    headers = [ln for ln in text.splitlines() if ln.startswith("| ") and "---" not in ln]
    tables = [ln for ln in headers if ln.startswith(("| method |", "| workload |", "| round |"))]
    assert len(tables) >= 5 and all(t.count(" | ") + 1 <= 10 for t in tables), tables
    assert "| GPU util |" in text and " -> " in text
    assert "oracle_fraction_mean" in text and "tuning_gpu_hours" in text  # nothing dropped
    back = pd.read_parquet(paths.parquet)
    assert len(back) == len(small.frame())
    assert {"oracle_fraction", "valid", "oom", "final_val_loss", "gpu_hours"} <= set(back.columns)


def test_every_method_has_its_own_look_in_the_plots(small, tmp_path: Path) -> None:
    """Overlapping methods (no tuning, random, TPE at 0) stay visible: distinct styles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jpo.evaluation.evaluate import gain_by_round
    from jpo.evaluation.report import METHOD_STYLES, OFFSET, _draw_methods, workload_rounds

    looks = {(s["color"], s["marker"], s["linestyle"]) for s in METHOD_STYLES.values()}
    assert len(looks) == len(METHOD_STYLES) and {s["marker"] for s in METHOD_STYLES.values()}
    assert len({s["marker"] for s in METHOD_STYLES.values()}) == len(METHOD_STYLES)
    fig, ax = plt.subplots()
    by_round = gain_by_round(small)
    _draw_methods(ax, by_round, "oracle_fraction")
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == list(small.settings.methods)
    starts = [float(ln.get_xdata()[0]) for ln in lines]
    assert len(set(starts)) == len(lines)  # each method shifted within a round
    assert max(starts) - min(starts) == pytest.approx(OFFSET * (len(lines) - 1))
    plt.close(fig)
    per_workload = workload_rounds(small)
    assert set(per_workload["workload"]) == set(small.workloads)


def test_summaries_are_consistent_with_the_rounds(small) -> None:
    per_workload = workload_summary(small)
    per_method = method_summary(small).set_index("method")
    assert list(per_method.index) == list(small.settings.methods)
    frame = small.frame()
    for method, row in per_method.iterrows():
        tuning = frame[(frame["method"] == method) & (frame["round"] > 0)]
        assert row["invalid_configs"] == int((~tuning["valid"]).sum())
        assert row["oom_runs"] == int(tuning["oom"].sum())
        mine = per_workload[per_workload["method"] == method]
        assert row["oracle_fraction_mean"] == pytest.approx(mine["oracle_fraction"].mean())
    assert per_method.loc["oracle", "oracle_fraction_mean"] == pytest.approx(1.0)
    bar = quality_bar(small)
    assert bar is not None
    assert bar.invalid_configs == 0
    assert set(bar.beats) == {"optuna_tpe", "random"}


def test_suggest_path_drives_the_ci_stage(policy_path: Path, tmp_path: Path) -> None:
    settings = EvaluationSettings(rounds=2, methods=("jpo",), jpo_path="suggest")
    result = evaluate(
        settings,
        workloads=WORKLOADS[:1],
        policy=LocalPolicy.load(policy_path),
        policy_path=str(policy_path),
        progress=False,
        workdir=tmp_path,
    )
    frame = result.frame()
    tuning = frame[frame["round"] > 0]
    assert tuning["valid"].all()
    assert set(tuning["note"]) <= {"changed", "rolled_back", "unchanged", "no_data"}
    campaigns = list(tmp_path.iterdir())
    assert len(campaigns) == 1 and (campaigns[0] / "config.ini").is_file()


def test_suggest_path_gives_each_campaign_its_own_config(policy_path: Path, tmp_path: Path) -> None:
    """One folder per campaign, holding its own workload's config.ini.

    Folders used to be keyed by ``id(task)``: CPython may hand a freed task's id to a later
    campaign, which then tuned the previous workload's config.ini (seen once, not on demand).
    """
    settings = EvaluationSettings(
        rounds=2, seeds=2, methods=("jpo", "random", "no_tuning"), jpo_path="suggest"
    )
    evaluate(
        settings,
        workloads=WORKLOADS[:2],
        policy=LocalPolicy.load(policy_path),
        policy_path=str(policy_path),
        progress=False,
        workdir=tmp_path,
    )
    campaigns = sorted(p.name for p in tmp_path.iterdir())
    assert len(campaigns) == 2 * 2
    for name in WORKLOADS[:2]:
        mine = [c for c in campaigns if c.startswith(f"{name}-")]
        assert len(mine) == 2
        for folder in mine:
            text = (tmp_path / folder / "config.ini").read_text()
            profile = load_catalog()[name]
            assert f"model = {profile.model}" in text and f"dataset = {profile.dataset}" in text


def test_a_given_catalog_replaces_the_workload_files(policy_path: Path) -> None:
    """Synthetic (validation) profiles can be evaluated like catalog workloads."""
    from jpo.sim.randomization import random_profiles

    (profile,) = random_profiles(load_catalog(), 1)
    settings = EvaluationSettings(rounds=1, split="all", methods=("jpo", "oracle"))
    result = evaluate(
        settings,
        policy=LocalPolicy.load(policy_path),
        policy_path=str(policy_path),
        progress=False,
        catalog={profile.name: profile},
    )
    assert result.workloads == (profile.name,)
    assert set(result.frame()["workload"]) == {profile.name}


def test_same_seed_same_rounds(policy_path: Path) -> None:
    settings = EvaluationSettings(rounds=2, methods=("random", "optuna_tpe"))
    a = evaluate(settings, workloads=WORKLOADS[:1], progress=False).frame()
    b = evaluate(settings, workloads=WORKLOADS[:1], progress=False).frame()
    pd.testing.assert_frame_equal(a, b)


def test_a_workloads_rounds_do_not_depend_on_the_other_workloads(policy_path: Path) -> None:
    # noise is keyed by workload name, so growing the catalog's split keeps old figures
    settings = EvaluationSettings(rounds=2, methods=("random", "optuna_tpe", "no_tuning"))
    alone = evaluate(settings, workloads=WORKLOADS[1:], progress=False).frame()
    both = evaluate(settings, workloads=WORKLOADS, progress=False).frame()
    both = both[both["workload"] == WORKLOADS[1]].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone, both)


class _Reckless(Tuner):
    name = "reckless"

    def ask(self) -> Hyperparameters:
        d = self.task.default
        return Hyperparameters(10**9, d.learning_rate, d.num_layers, d.epochs)


def test_invalid_proposals_are_counted_and_never_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import jpo.evaluation.evaluate as ev

    monkeypatch.setattr(ev, "_make_tuner", lambda method, task, settings, propose: _Reckless(task))
    result = evaluate(
        EvaluationSettings(rounds=3, methods=("random",)), workloads=WORKLOADS[:1], progress=False
    )
    frame = result.frame()
    tuning = frame[frame["round"] > 0]
    assert (~tuning["valid"]).all()
    assert tuning["invalid_reason"].str.contains("batch_size").all()
    # the workload reran its default: measured runs exist, scored as the default
    assert tuning["throughput"].notna().all()
    np.testing.assert_allclose(tuning["oracle_fraction_last"].dropna(), 0.0, atol=1e-12)
    assert method_summary(result).loc[0, "invalid_configs"] == 3


def test_reach_box_is_what_two_trust_region_steps_reach() -> None:
    from jpo.workload.constraints import load_constraints

    cons = load_constraints()
    hp = Hyperparameters(64, 0.01, 4, 10)
    box = reach_box(cons, hp, 2)
    f = {n: cons.params[n].trust_region for n in cons.tunable}
    assert box["batch_size"] == pytest.approx(
        (64 / f["batch_size"] ** 2, 64 * f["batch_size"] ** 2)
    )
    assert box["learning_rate"][1] == pytest.approx(min(0.1, 0.01 * f["learning_rate"] ** 2))
    assert box["num_layers"][0] <= 2 and box["num_layers"][1] >= 6


def test_baseline_proposals_stay_inside_the_constraints() -> None:
    from jpo.sim.response import load_catalog, load_conditions, predict
    from jpo.workload.constraints import load_constraints

    cons = load_constraints()
    profile = load_catalog()["mnist-lenet"]
    summary = predict(profile, profile.defaults, load_conditions())
    box = reach_box(cons, profile.defaults, 2)
    task = TuningTask("mnist-lenet", profile, cons, profile.defaults, summary, seed=3)
    boxed = TuningTask("mnist-lenet", profile, cons, profile.defaults, summary, seed=3, box=box)
    for tuner in (
        OptunaTuner(boxed, n_startup_trials=1),
        RandomSearchTuner(boxed),
        OptunaTuner(task, n_startup_trials=1),
        RandomSearchTuner(task),
        RandomSearchTuner(task, trust_region=True),
    ):
        for _ in range(6):
            hp = tuner.ask()
            previous = tuner.current if tuner.uses_trust_region else None
            cons.validate(hp, previous=previous)
            if tuner.task.box is not None:
                for name, (lo, hi) in box.items():
                    assert lo * 0.999 <= getattr(hp, name) <= hi * 1.001
            tuner.tell(hp, summary, 0.0)


def test_settings_file_and_bad_values(tmp_path: Path) -> None:
    settings = load_evaluation_settings()
    assert settings.rounds == 5 and settings.split == "holdout"
    bad = tmp_path / "evaluate.toml"
    bad.write_text("[run]\nrounds = 0\n")
    with pytest.raises(ConfigError, match=r"evaluate.toml.*rounds must be >= 1"):
        load_evaluation_settings(bad)
    bad.write_text("[run]\nroundz = 3\n")
    with pytest.raises(ConfigError, match="unknown key 'roundz'"):
        load_evaluation_settings(bad)
    with pytest.raises(ConfigError, match="methods"):
        EvaluationSettings(methods=("jpo", "grid"))


def test_workload_selection() -> None:
    from jpo.sim.response import load_catalog

    catalog = load_catalog()
    holdout = select_workloads(catalog, None, "holdout")
    train = select_workloads(catalog, None, "train")
    assert holdout and train and not set(holdout) & set(train)
    assert sorted(select_workloads(catalog, None, "all")) == sorted(holdout + train)
    with pytest.raises(ConfigError, match="unknown workload"):
        select_workloads(catalog, ["no-such-workload"])


def test_jpo_without_a_policy_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="needs a policy"):
        evaluate(EvaluationSettings(rounds=1), workloads=WORKLOADS[:1], progress=False)


def test_cli_writes_the_report(policy_path: Path, tmp_path: Path) -> None:
    from jpo.cli.commands.evaluate import register

    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:
        """Make typer keep the subcommand name."""

    out = tmp_path / "cli"
    args = ["evaluate", "--policy", str(policy_path), "--rounds", "1", "--out", str(out)]
    args += ["--workloads", WORKLOADS[0], "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "report.md").is_file()
    assert "quality bar:" in result.output


def test_registered_in_the_jpo_cli(tmp_path: Path) -> None:
    from jpo.cli.app import build_app

    out = tmp_path / "cli-root"
    args = ["evaluate", "--methods", "no_tuning,oracle", "--workloads", WORKLOADS[0]]
    args += ["--rounds", "1", "--out", str(out), "--no-progress"]
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 0, result.output
    assert "oracle: oracle fraction 1.000" in result.output
    assert (out / "rounds.parquet").is_file()


def test_unknown_workload_exits_with_invalid_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from jpo.cli.app import main

    args = ["evaluate", "--methods", "oracle", "--workloads", "nope", "--out", str(tmp_path)]
    assert main(args) == 2
    assert "unknown workload" in capsys.readouterr().err
    assert not (tmp_path / "report.md").exists()


def test_evaluation_imports_neither_torch_nor_ray() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from jpo.evaluation.evaluate import EvaluationSettings, evaluate\n"
        "s = EvaluationSettings(rounds=1, methods=('optuna_tpe', 'random', 'oracle'))\n"
        "evaluate(s, workloads=['mnist-lenet'], progress=False)\n"
        "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_reach_box_oracle_is_reported_next_to_the_global_one(small) -> None:
    """The reach-box oracle (R trust-region steps) never beats the global oracle."""
    frame = small.frame()
    first = frame[frame["round"] == 0].iloc[0]
    assert first["oracle_reach_objective"] <= first["oracle_objective"] + 1e-9
    oracle = frame[(frame["method"] == "oracle") & (frame["round"] > 0)]
    # the global oracle's config scores >= 1 against the smaller reach-box gap
    assert (oracle["oracle_reach_fraction"].dropna() >= 1.0 - 1e-9).all()
    summary = method_summary(small).set_index("method")
    assert "oracle_reach_fraction_mean" in summary.columns
    assert summary.loc["no_tuning", "oracle_reach_fraction_mean"] == pytest.approx(0.0)


def test_direct_path_hands_the_policy_the_campaigns_runs() -> None:
    """The direct path builds CI's context (jpo.learning.features.context_from_runs) from every
    earlier run of the campaign, as the replay env and `jpo suggest` do."""
    from jpo.evaluation.tuners import JpoPolicyTuner, TuningTask
    from jpo.sim.response import ClusterConditions, load_profile, predict
    from jpo.workload.constraints import load_constraints
    from jpo.workload.types import Hyperparameters

    profile = load_profile("cifar10-resnet18")
    default = Hyperparameters(64, 0.01, 18, 30)
    runs = [
        predict(profile, Hyperparameters(64 * 2**i, 0.01, 18, 30), ClusterConditions())
        for i in range(3)
    ]
    task = TuningTask("cifar10-resnet18", profile, load_constraints(), default, runs[0], seed=0)
    seen: list[dict] = []

    def propose(**kw):  # type: ignore[no-untyped-def]
        seen.append(kw)
        return kw["current"], "direct"

    tuner = JpoPolicyTuner(task, propose=propose)
    tuner.ask()
    tuner.tell(Hyperparameters(128, 0.01, 18, 30), runs[1], 0.0)
    tuner.ask()
    tuner.tell(Hyperparameters(256, 0.01, 18, 30), runs[2], 0.0)
    tuner.ask()
    assert [len(kw["history"]) for kw in seen] == [0, 1, 2]
    assert seen[2]["history"] == (runs[0], runs[1]) and seen[2]["summary"] == runs[2]


def test_a_shift_in_the_cluster_from_a_round_on(tmp_path: Path) -> None:
    # issue 27: from [shift] round on, runs see [shift] conditions; every row also scores
    # its values under them against their own reference
    settings = EvaluationSettings(
        rounds=3,
        seeds=1,
        methods=("no_tuning",),
        conditions={"contention": 0.15},
        shift_round=2,
        shift_conditions={"contention": 0.8, "gpu_contention_share": 1.0},
    )
    frame = evaluate(settings, workloads=["mnist-lenet"], progress=False).frame()
    assert frame["shifted"].tolist() == [False, False, True, True]
    quiet = frame[~frame["shifted"]]["throughput"]
    busy = frame[frame["shifted"]]["throughput"]
    assert busy.max() < 0.8 * quiet.min()  # co-tenants slow the GPU too
    # the same (default) values every round: one shifted score, below the quiet one
    assert frame["objective_shifted_true"].nunique() == 1
    assert (frame["objective_shifted_true"] == frame["default_objective_shifted"]).all()
    steady = settings.with_overrides(shift_round=0)
    assert not any(steady.shifted(r) for r in range(4)) and settings.shifted(2)
    with pytest.raises(ConfigError, match="shift round must be >= 0"):
        EvaluationSettings(shift_round=-1)
    file = tmp_path / "evaluate.toml"
    file.write_text("[shift]\nround = 4\nconditions = { contention = 0.5 }\n")
    loaded = load_evaluation_settings(file)
    assert loaded.shift_round == 4 and loaded.shift_conditions == {"contention": 0.5}
