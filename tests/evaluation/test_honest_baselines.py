"""Issue 25: honest baselines, the protocol's plug-in points and the CI stage's probes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jpo.errors import ConfigError
from jpo.evaluation.evaluate import (
    EvaluationSettings,
    baseline_bar,
    evaluate,
    load_evaluation_settings,
    load_set,
    load_tuner_class,
    load_workload_folder,
    method_summary,
    paired_difference,
    tuner_methods,
)
from jpo.evaluation.tuners import (
    CampaignRules,
    HonestTuner,
    LocalTPETuner,
    PatternSearchTuner,
    RuleOfThumbTuner,
    TuningTask,
)
from jpo.sim.response import load_catalog, load_conditions, simulate_run
from jpo.stage.guards import FailedConfig
from jpo.stage.probe import probe_step
from jpo.telemetry.schema import RunSummary
from jpo.workload.constraints import load_constraints
from jpo.workload.types import Hyperparameters

REPO = Path(__file__).resolve().parents[2]
HONEST = (RuleOfThumbTuner, PatternSearchTuner, LocalTPETuner)


class _Sealed:
    """Stands in for the workload profile: any use of the response model fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"an honest baseline read the response model (profile.{name})")


class _SealedDict(dict[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise AssertionError(f"an honest baseline read task.extra[{key!r}]")

    def get(self, key: str, default: Any = None) -> Any:
        raise AssertionError(f"an honest baseline read task.extra[{key!r}]")


def _campaign(cls: type[HonestTuner], workload: str, rounds: int = 6) -> list[tuple[Any, Any]]:
    """Drive one honest baseline with measured runs only; return (proposal, anchor) pairs."""
    profile = load_catalog()[workload]
    cons = load_constraints()
    cond = load_conditions()

    def run(hp: Hyperparameters, k: int) -> RunSummary:
        rng = np.random.default_rng([7, k])
        return simulate_run(profile, hp, cond, rng=rng, run_id=f"r{k}", start=1.7e9).summary

    task = TuningTask(workload, _Sealed(), cons, profile.defaults, run(profile.defaults, 0), seed=3)
    task = dataclasses.replace(task, extra=_SealedDict())
    tuner = cls(task)
    out = []
    for k in range(1, rounds + 1):
        anchor = tuner.anchor
        hp = tuner.ask()
        out.append((hp, anchor))
        # the evaluation's noise-free objective: garbage here, and the baseline ignores it
        tuner.tell(hp, run(hp, k), float("nan"))
    return out


@pytest.mark.parametrize("cls", HONEST)
@pytest.mark.parametrize("workload", ["higgs-mlp", "coco-yolov5"])
def test_honest_baseline_sees_only_measured_runs_and_stays_in_the_trust_region(
    cls: type[HonestTuner], workload: str
) -> None:
    cons = load_constraints()
    proposals = _campaign(cls, workload)
    assert len(proposals) == 6
    for hp, anchor in proposals:
        cons.validate(hp, previous=anchor)  # one trust-region step from its best run


@pytest.mark.parametrize("cls", HONEST)
def test_honest_baseline_ignores_the_evaluations_objective(cls: type[HonestTuner]) -> None:
    profile = load_catalog()["higgs-mlp"]
    cons, cond = load_constraints(), load_conditions()
    first = simulate_run(
        profile, profile.defaults, cond, rng=np.random.default_rng(1), run_id="d", start=0.0
    ).summary
    runs = []
    for told in (0.0, 1e6):
        tuner = cls(TuningTask("higgs-mlp", _Sealed(), cons, profile.defaults, first, seed=5))
        seen = []
        for k in range(4):
            hp = tuner.ask()
            seen.append(hp)
            rng = np.random.default_rng([2, k])
            summary = simulate_run(profile, hp, cond, rng=rng, run_id=f"r{k}", start=0.0).summary
            tuner.tell(hp, summary, told)
        runs.append(seen)
    assert runs[0] == runs[1]


def _summary(loss: float, mem: float = 0.2, failure: str = "none", thr: float = 100.0) -> Any:
    return RunSummary(
        cpu_util_mean=0.5,
        cpu_util_p95=0.6,
        mem_util_mean=0.3,
        mem_util_p95=0.3,
        gpu_util_mean=0.5,
        gpu_util_p95=0.6,
        gpu_mem_util_mean=mem,
        gpu_mem_util_p95=mem,
        throughput=thr,
        final_val_loss=loss,
        duration_s=3600.0,
        gpu_hours=1.0,
        failure=failure,  # type: ignore[arg-type]
    )


def test_rule_of_thumb_doubles_then_goes_back_to_the_best_and_tries_the_next_knob() -> None:
    cons = load_constraints()
    start = Hyperparameters(64, 0.01, 8, 20)
    task = TuningTask("w", _Sealed(), cons, start, _summary(1.0), seed=0)
    tuner = RuleOfThumbTuner(task, memory_threshold=0.45)
    first = tuner.ask()
    assert (first.batch_size, first.learning_rate) == (128, pytest.approx(0.02))
    tuner.tell(first, _summary(1.0, thr=190.0), 0.0)  # paid: keep doubling
    second = tuner.ask()
    assert second.batch_size == 256
    tuner.tell(second, _summary(1.05, thr=300.0), 0.0)  # degraded val loss
    third = tuner.ask()
    assert third.batch_size == 128 and third.epochs < 20  # back to the best, epochs down
    cons.validate(third, previous=tuner.anchor)


def test_rule_of_thumb_stops_doubling_above_its_memory_threshold() -> None:
    cons = load_constraints()
    start = Hyperparameters(64, 0.01, 8, 20)
    task = TuningTask("w", _Sealed(), cons, start, _summary(1.0, mem=0.6), seed=0)
    hp = RuleOfThumbTuner(task, memory_threshold=0.45).ask()
    assert hp.batch_size == 64 and hp.epochs < 20


def test_pattern_search_respects_the_ci_memory_guard() -> None:
    cons = load_constraints()
    start = Hyperparameters(64, 0.01, 8, 20)
    task = TuningTask("w", _Sealed(), cons, start, _summary(1.0, mem=0.8), seed=0)
    tuner = PatternSearchTuner(task)
    for _ in range(4):
        hp = tuner.ask()
        assert hp.batch_size * hp.num_layers <= 64 * 8  # 0.8 x growth > 0.9: refused
        tuner.tell(hp, _summary(1.2, mem=0.8), 0.0)


def test_campaign_rules_hold_the_one_tolerance() -> None:
    rules = CampaignRules(val_loss_tolerance=0.01)
    ref = _summary(1.0)
    assert rules.holds(_summary(1.009), ref)
    assert not rules.holds(_summary(1.02), ref)
    assert not rules.holds(_summary(1.0, failure="oom"), ref)


@pytest.mark.parametrize("version", ["broad-v1", "broad-v2"])
def test_broad_test_set_is_frozen_broad_and_loads(version: str) -> None:
    catalog, frozen = load_workload_folder(REPO / "configs" / "testsets" / version)
    assert len(catalog) >= 30
    frameworks = {p.framework for p in load_catalog().values()}
    assert {p.framework for p in catalog.values()} == frameworks
    assert {p.limits.gpus for p in catalog.values()} > {1}
    fine_tunes = [n for n, f in frozen.items() if f == ("num_layers",)]
    assert fine_tunes and all("finetune" in n for n in fine_tunes)


# The seed each version of the broad set was drawn with (benchmarks/evaluate/make_testset.py
# SEEDS): broad-v2 was drawn from the grounded catalog (issue 30), broad-v1 before it.
BROAD_SEEDS = {"broad-v1": 252026, "broad-v2": 302026}


def test_the_broad_test_set_is_v2_drawn_around_the_grounded_catalog() -> None:
    """Issue 30: the broad test set follows the grounded profiles; broad-v1 stays for the record."""
    settings = load_evaluation_settings()
    assert settings.sets["broad"]["path"] == "configs/testsets/broad-v2"
    assert settings.sets["broad"]["role"] == settings.sets["broad-v1"]["role"] == "test"
    names = set(load_catalog())
    for version, seed in BROAD_SEEDS.items():
        folder = REPO / "configs" / "testsets" / version
        catalog, _frozen = load_set(settings, "broad" if version == "broad-v2" else version)
        assert len(catalog) == len(list(folder.glob("*.toml")))
        for path in folder.glob("*.toml"):
            assert f"(seed {seed}, regime " in path.read_text().splitlines()[1], path.name
    v2, _ = load_set(settings, "broad")
    bases = {p.description.rsplit("drawn around ", 1)[1] for p in v2.values()}
    assert bases <= names and len(bases) >= 12


def test_sets_have_roles_and_load(tmp_path: Path) -> None:
    settings = load_evaluation_settings()
    roles = {name: spec["role"] for name, spec in settings.sets.items()}
    assert roles["validation"] == "validation"
    assert roles["holdout"] == roles["broad"] == "test"
    holdout, _ = load_set(settings, "holdout")
    assert all(p.split == "holdout" for p in holdout.values())
    with pytest.raises(ConfigError, match=r"no \[sets\.nope\]"):
        load_set(settings, "nope")


def test_a_bad_jpo_section_names_the_file(tmp_path: Path) -> None:
    src = (REPO / "configs" / "workloads" / "higgs-mlp.toml").read_text()
    (tmp_path / "w.toml").write_text(src + '\n[jpo]\ntune = ["epochs"]\n')
    with pytest.raises(ConfigError, match=r"w\.toml"):
        load_workload_folder(tmp_path)
    with pytest.raises(ConfigError, match="not a folder"):
        load_workload_folder(tmp_path / "missing")


_PLUGIN = """
from jpo.evaluation.tuners import Tuner


class HalveEpochs(Tuner):
    name = "halve_epochs"

    def ask(self):
        return self.task.constraints.clamp(
            self.current, {"epochs": self.current.epochs / 1.5}
        )

    @property
    def uses_trust_region(self):
        return True


class NotATuner:
    pass
"""


def test_a_users_tuner_plugs_in_by_module_and_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_tuners.py").write_text(_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert tuner_methods(["my_tuners:HalveEpochs"]) == {"halve_epochs": "my_tuners:HalveEpochs"}
    for bad, match in (
        ("my_tuners", "module:Class"),
        ("no_such_module:X", "cannot import"),
        ("my_tuners:NotATuner", "not a jpo.evaluation.tuners.Tuner"),
    ):
        with pytest.raises(ConfigError, match=match):
            load_tuner_class(bad)
    settings = EvaluationSettings(
        rounds=2,
        methods=("halve_epochs", "pattern", "no_tuning"),
        tuners={"halve_epochs": "my_tuners:HalveEpochs"},
        default_runs=3,
    )
    result = evaluate(settings, workloads=["higgs-mlp"], progress=False)
    frame = result.frame()
    ours = frame[(frame["method"] == "halve_epochs") & (frame["round"] > 0)]
    epochs = list(ours["hp_epochs"])
    assert 8 > epochs[0] > epochs[1] >= 1 and ours["valid"].all()  # one step down per round
    summary = method_summary(result).set_index("method")
    for column in ("harmful_runs", "rule_breaks", "oom_runs", "oracle_fraction_single_mean"):
        assert column in summary.columns
    diff = paired_difference(result, "halve_epochs", "pattern")
    assert diff.workloads == 1 and np.isfinite(diff.mean)
    assert baseline_bar(result, method="halve_epochs") is not None


def test_probe_tries_epochs_then_learning_rate_and_never_repeats() -> None:
    cons = load_constraints()
    cur = Hyperparameters(64, 0.01, 8, 30)
    first = probe_step(cons, cur, [], [cur])
    assert first is not None and first.name == "epochs_down" and first.hyperparameters.epochs == 20
    second = probe_step(cons, cur, [], [cur, first.hyperparameters])
    assert second is not None and second.name == "lr_up"
    worse = FailedConfig(second.hyperparameters, "worse", "r2")
    third = probe_step(cons, cur, [worse], [cur, first.hyperparameters])
    assert third is not None and third.name == "lr_down"
    assert third.hyperparameters.learning_rate == pytest.approx(0.005)
    ran = [cur, first.hyperparameters, second.hyperparameters, third.hyperparameters]
    assert probe_step(cons, cur, [], ran) is None


def test_probe_keeps_frozen_parameters() -> None:
    from jpo.workload.config_file import JpoSection

    cons = load_constraints().for_workload(
        JpoSection(tunable=("batch_size", "learning_rate", "num_layers"), frozen=("epochs",))
    )
    cur = Hyperparameters(64, 0.01, 8, 30)
    probe = probe_step(cons, cur, [], [cur])
    assert probe is not None and probe.name == "lr_up" and probe.hyperparameters.epochs == 30


@pytest.mark.slow
def test_ci_stage_probes_when_the_policy_stalls(tmp_path: Path) -> None:
    from jpo.policy.artifact import LocalPolicy
    from jpo.stage.suggest import load_suggest_settings

    policy = REPO / "jpo" / "data" / "policy"
    settings = EvaluationSettings(rounds=5, methods=("jpo",), jpo_path="suggest")
    ci = load_suggest_settings().updated({"probe": {"enabled": True}})
    evaluate(
        settings,
        # each of these two probes once in its 5 rounds (criteo-dlrm, dropped, never did:
        # only its oracle search, 14 of the test's 90 s at load 11)
        workloads=["cityscapes-deeplabv3", "coco-yolov5"],
        policy=LocalPolicy.load(policy),
        policy_path=str(policy),
        progress=False,
        workdir=tmp_path,
        suggest_settings=ci,
    )
    reasons = [
        json.loads(line).get("reason", "")
        for log in tmp_path.glob("*/audit.jsonl")
        for line in log.read_text().splitlines()
    ]
    assert any(str(r).startswith("probe: ") for r in reasons)


@pytest.mark.slow
def test_cli_scores_a_folder_of_profiles_with_a_users_tuner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd
    from typer.testing import CliRunner

    from jpo.cli.app import build_app

    folder = tmp_path / "mine"
    folder.mkdir()
    src = (REPO / "configs" / "workloads" / "higgs-mlp.toml").read_text()
    src = src.replace('name = "higgs-mlp"', 'name = "my-higgs"')
    (folder / "my-higgs.toml").write_text(src + '\n[jpo]\nfreeze = ["num_layers"]\n')
    (tmp_path / "my_tuners.py").write_text(_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "report"
    args = ["evaluate", "--catalog", str(folder), "--tuner", "my_tuners:HalveEpochs"]
    args += ["--methods", "halve_epochs,pattern,no_tuning", "--rounds", "2"]
    args += ["--default-runs", "2", "--out", str(out), "--no-progress"]
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 0, result.output
    assert "halve_epochs: oracle fraction" in result.output
    frame = pd.read_parquet(out / "rounds.parquet")
    assert set(frame["workload"]) == {"my-higgs"}
    assert set(frame["hp_num_layers"]) == {load_catalog()["higgs-mlp"].defaults.num_layers}
    report = (out / "report.md").read_text()
    assert "## Protocol" in report and "harmful" in report and "| halve_epochs |" in report
