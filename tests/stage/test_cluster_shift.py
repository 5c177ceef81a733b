"""The CI stage when the cluster's contention rises mid-campaign (issue 27, RESULTS.md §10).

In process, as tests/stage/test_suggest.py: simulated cifar10-resnet18 runs
(jpo.sim.response) served by the fake MetricSource, the batch-up policy, ``jpo.stage.suggest``
and its feedback path. The first runs see a quiet cluster; from the shift on, co-tenants
take 60 % of the node and all of it slows the GPU (throughput falls by 60 % at unchanged
values), so every run after it scores below the best run measured before it.

The restart on a shift (``[incumbent] restart_on_shift``) ships off: measured on the training
split and the validation set it did not pay (research/evaluate/SELECTION-shift.md and
RESULTS.md); these tests switch it on (``ON``) and check the default still behaves as before.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes.policy import random_policy
from fakes.suggest_campaign import HP, FakeSource, log_of, run, write_config

from jpo.sim.response import ClusterConditions
from jpo.stage import audit
from jpo.stage.record import suggestion_records
from jpo.stage.suggest import SuggestResult, SuggestSettings, SuggestStatus
from jpo.workload.types import Hyperparameters

BUSY = ClusterConditions(contention=0.6, gpu_contention_share=1.0)
"""The cluster after the shift: co-tenants take 60 % of the node, the GPU's share too."""
ON = SuggestSettings().updated({"incumbent": {"restart_on_shift": True}})
"""The restart switched on (it ships off: research/evaluate/SELECTION-shift.md)."""


def _campaign(
    config: Path,
    policy: Path,
    rounds: int,
    settings: SuggestSettings = ON,
    quiet_runs: int = 2,
) -> tuple[FakeSource, list[SuggestResult]]:
    """Run ``rounds`` rounds (run, then suggest); runs after ``quiet_runs`` see BUSY."""
    fake, results, current = FakeSource(), [], HP
    for i in range(1, rounds + 1):
        busy = BUSY if i > quiet_runs else None
        fake.add(current, f"run-{i}", conditions=busy, val_loss=0.5)
        result = run(config, fake, policy, settings=settings)
        results.append(result)
        current = result.after or current
    return fake, results


def _letters(results: list[SuggestResult]) -> str:
    """The decisions as letters: C changed, R rolled back, u unchanged."""
    letter = {SuggestStatus.CHANGED: "C", SuggestStatus.ROLLED_BACK: "R"}
    return "".join(letter.get(r.status, "u") for r in results)


def test_the_oscillation_after_a_shift_stops(config: Path, tmp_path: Path) -> None:
    # A policy whose step depends on what it observes (random weights, seed 6); runs 5-10
    # on the busy cluster. The first step after the shift scores below run 4's pre-shift
    # record and is returned from (nothing tells the cluster from the values yet); the
    # rerun of run 4's values shows the shift, and the campaign goes on under the new
    # contention (on main: "CCCCRCRCRC", the oscillation of the next test)
    policy = random_policy(tmp_path / "policy-random", seed=6)
    _, results = _campaign(config, policy, rounds=10, quiet_runs=4)
    assert _letters(results) == "CCCCRCCCCC"
    assert any(n.startswith("cluster shift: run run-6") for n in results[5].notes)


def test_without_the_restart_the_stage_oscillates(config: Path, tmp_path: Path) -> None:
    # each new step after the shift scored below run 4's pre-shift record and was rolled
    # back; the policy, asked again from run 4's values, proposed another step: a rollback
    # every other decision, as live-03 in benchmarks/train/RESULTS.md §10
    policy = random_policy(tmp_path / "policy-random", seed=6)
    # (the shipped default: the restart is off)
    _, results = _campaign(config, policy, rounds=10, settings=SuggestSettings(), quiet_runs=4)
    assert _letters(results) == "CCCCRCRCRC"


def test_after_a_contention_shift_the_stage_stops_chasing_the_old_best(
    config: Path, policy_up: Path
) -> None:
    _, results = _campaign(config, policy_up, rounds=6)
    statuses = [r.status for r in results]
    # runs 1-2 quiet: two steps up; run 3 (busy, new values) scores below run 2's record:
    # nothing tells the cluster from the values yet, so it is returned to run 2's values
    assert statuses[:3] == [SuggestStatus.CHANGED, SuggestStatus.CHANGED, SuggestStatus.ROLLED_BACK]
    best = results[1].after
    assert results[2].after == results[0].after
    # run 4 reran those values and lost as much: the cluster changed, so the stage stops
    # measuring against run 2 and asks the policy again (it was held at run 2's values
    # for good: the step, scored against that ghost, was refused as "worse")
    fourth = results[3]
    assert fourth.status is SuggestStatus.CHANGED
    assert fourth.after == best
    assert any(n.startswith("cluster shift: run run-4") for n in fourth.notes)
    # and the campaign goes on under the new contention: no more rollbacks, bigger batches
    assert statuses[3:] == [SuggestStatus.CHANGED] * 3
    last = results[-1].after
    assert last is not None and best is not None and last.batch_size > best.batch_size


def test_without_the_restart_the_stage_holds_the_pre_shift_best(
    config: Path, policy_up: Path
) -> None:
    _, results = _campaign(
        config, policy_up, rounds=6, settings=ON.updated({"incumbent": {"restart_on_shift": False}})
    )
    statuses = [r.status for r in results]
    assert statuses[2] is SuggestStatus.ROLLED_BACK
    assert statuses[3:] == [SuggestStatus.UNCHANGED] * 3
    assert all(any("scored below the campaign's best" in n for n in r.notes) for r in results[3:])


def test_a_worse_step_after_the_shift_is_still_returned_from(config: Path, policy_up: Path) -> None:
    fake, results = _campaign(config, policy_up, rounds=4)
    step = results[3].after
    rerun = results[2].after
    assert step is not None and rerun is not None and step != rerun
    # the step runs with the GPU and CPU idle: worse than run 4 under the same contention
    fake.add(step, "run-5", conditions=BUSY, val_loss=0.5, gpu_util=0.02, cpu_util=0.02)
    fifth = run(config, fake, policy_up, settings=ON)
    assert fifth.status is SuggestStatus.ROLLED_BACK
    assert fifth.after == rerun
    assert any("best known-good run run-4" in n for n in fifth.notes)
    # ... and is remembered as worse, against run 4 (the reference after the shift)
    fake.add(rerun, "run-6", conditions=BUSY, val_loss=0.5)
    sixth = run(config, fake, policy_up, settings=ON)
    assert sixth.status is SuggestStatus.UNCHANGED
    assert not any(n.startswith("cluster shift") for n in sixth.notes)


@pytest.mark.parametrize(
    ("failure", "remembered"), [({"run_status": 2.0}, "oom"), ({"val_loss": 0.8}, "degraded")]
)
def test_failed_and_degraded_configs_stay_refused_after_a_shift(
    config: Path, policy_up: Path, failure: dict[str, float], remembered: str
) -> None:
    fake = FakeSource()
    fake.add(HP, "run-1", val_loss=0.5)
    first = run(config, fake, policy_up)
    assert first.after is not None
    fake.add(first.after, "run-2", val_loss=0.5)
    second = run(config, fake, policy_up)
    assert second.status is SuggestStatus.CHANGED and second.after is not None
    fake.add(second.after, "run-3", None, **{"val_loss": 0.5, **failure})
    assert run(config, fake, policy_up).status is SuggestStatus.ROLLED_BACK
    # run 2's values again, now on the busy cluster: a shift, the window restarts ...
    fake.add(first.after, "run-4", conditions=BUSY, val_loss=0.5)
    fourth = run(config, fake, policy_up, settings=ON.updated(
        {"failed_configs": {"retry_more_epochs": False}}
    ))  # fmt: skip
    assert any(n.startswith("cluster shift: run run-4") for n in fourth.notes)
    # ... and the step that failed stays refused
    assert fourth.status is SuggestStatus.UNCHANGED
    assert any("failed-config memory" in n and remembered in n for n in fourth.notes)


def test_a_rerun_of_the_best_within_the_noise_margin_is_no_shift(
    config: Path, policy_up: Path
) -> None:
    # the same campaign with the cluster quiet throughout: no restart, nothing rolled back
    _, results = _campaign(config, policy_up, rounds=4, quiet_runs=4)
    assert not any(n.startswith("cluster shift") for r in results for n in r.notes)
    from jpo.stage.incumbent import IncumbentSettings, campaign_scores

    records = suggestion_records(audit.read_records(log_of(config)))
    scores = campaign_scores(records, IncumbentSettings(restart_on_shift=True))
    assert scores.shift is None
    assert [r.run_id for r in scores.runs] == ["run-1", "run-2", "run-3", "run-4"]


def test_the_restart_needs_no_new_audit_field(config: Path, policy_up: Path) -> None:
    # the shift is recomputed from the records: the same log read again finds it
    _campaign(config, policy_up, rounds=4)
    from jpo.stage.incumbent import IncumbentSettings, campaign_scores

    records = suggestion_records(audit.read_records(log_of(config)))
    scores = campaign_scores(records, IncumbentSettings(restart_on_shift=True))
    assert scores.shift is not None and scores.shift.run_id == "run-4"
    assert scores.shift.record_run_id == "run-2"
    assert scores.shift.record - scores.shift.measured > IncumbentSettings().shift_margin
    assert [r.run_id for r in scores.runs] == ["run-4"]  # the new reference
    off = campaign_scores(records, IncumbentSettings(restart_on_shift=False))
    assert off.shift is None and off.runs[0].run_id == "run-1"


# ----------------------------------------------------------------- the second design
# `shift_keeps_worse` (a restart keeps the "worse" entries judged before the best's last
# matching measurement) and `shift_reruns` (reruns below the record before a shift):
# research/evaluate/SELECTION-shift2.md.

KEEP = ON.updated({"incumbent": {"shift_keeps_worse": True}})
"""The restart that forgets only the reference."""
KEEP2 = KEEP.updated({"incumbent": {"shift_reruns": 2}})
"""... and needs two reruns of the best's values below its record."""
SLOW = {"gpu_util": 0.02, "cpu_util": 0.02, "throughput": 50.0, "samples_total": 1000.0}
"""A run that left the GPU and CPU idle and crawled: worse than the best under any contention."""


def _two_steps_then_a_crawl(
    config: Path, policy: Path, settings: SuggestSettings
) -> tuple[FakeSource, Hyperparameters, Hyperparameters]:
    """Runs 1-2 quiet (the policy's steps A1, A2), run 3 at A2 crawling; return (source, A1, A2)."""
    fake = FakeSource()
    fake.add(HP, "run-1", val_loss=0.5)
    a1 = run(config, fake, policy, settings=settings).after
    assert a1 is not None
    fake.add(a1, "run-2", val_loss=0.5)
    a2 = run(config, fake, policy, settings=settings).after
    assert a2 is not None
    fake.add(a2, "run-3", val_loss=0.5, **SLOW)
    return fake, a1, a2


def _worse_before_the_shift(
    config: Path, policy: Path, settings: SuggestSettings
) -> tuple[SuggestResult, SuggestResult]:
    """Step A2 scores worse on the quiet cluster and is returned from; A1 reruns quiet, then busy.

    Return the suggestions after the quiet rerun (run 4) and after the busy one (run 5).
    """
    fake, a1, a2 = _two_steps_then_a_crawl(config, policy, settings)
    assert a2 != a1
    third = run(config, fake, policy, settings=settings)
    assert third.status is SuggestStatus.ROLLED_BACK and third.after == a1
    fake.add(a1, "run-4", val_loss=0.5)  # the record holds: the yardstick is still good
    fourth = run(config, fake, policy, settings=settings)
    fake.add(a1, "run-5", conditions=BUSY, val_loss=0.5)  # the cluster changed
    return fourth, run(config, fake, policy, settings=settings)


def test_the_first_design_lets_the_policy_back_to_a_step_worse_before_the_shift(
    config: Path, policy_up: Path
) -> None:
    # what SELECTION-shift.md measured: the restart forgot that A2 had lost on the quiet
    # cluster, and the policy went straight back to it
    fourth, fifth = _worse_before_the_shift(config, policy_up, ON)
    assert fourth.status is SuggestStatus.UNCHANGED  # A2 refused as worse
    assert any("scored below the campaign's best" in n for n in fourth.notes)
    assert any(n.startswith("cluster shift: run run-5") for n in fifth.notes)
    assert fifth.status is SuggestStatus.CHANGED


def test_keeping_the_worse_entries_refuses_that_step_after_the_restart(
    config: Path, policy_up: Path
) -> None:
    fourth, fifth = _worse_before_the_shift(config, policy_up, KEEP)
    assert fourth.status is SuggestStatus.UNCHANGED
    assert any(n.startswith("cluster shift: run run-5") for n in fifth.notes)
    # the window restarted (run 5 is the reference) but A2's loss on the quiet cluster,
    # judged before run 4 matched the record, is still remembered
    assert fifth.status is SuggestStatus.UNCHANGED
    assert any("failed-config memory" in n and "in run run-3" in n for n in fifth.notes)
    from jpo.stage.incumbent import IncumbentSettings, campaign_scores

    records = suggestion_records(audit.read_records(log_of(config)))
    scores = campaign_scores(records, KEEP.incumbent)
    assert [r.run_id for r in scores.runs] == ["run-5"]
    assert [r.run_id for r in scores.kept_worse] == ["run-3"]  # recomputed from the log
    assert campaign_scores(records, IncumbentSettings(restart_on_shift=True)).kept_worse == ()


def test_a_step_judged_against_the_ghost_is_not_kept_as_worse(
    config: Path, policy_up: Path
) -> None:
    # run 3 (the step, on the busy cluster) was returned from before any rerun showed the
    # shift: judged against the ghost, so the restart forgets it with the reference, and
    # the campaign goes on under the new contention as with the first design
    _, results = _campaign(config, policy_up, rounds=6, settings=KEEP)
    statuses = [r.status for r in results]
    assert statuses[:3] == [SuggestStatus.CHANGED, SuggestStatus.CHANGED, SuggestStatus.ROLLED_BACK]
    assert any(n.startswith("cluster shift: run run-4") for n in results[3].notes)
    assert statuses[3:] == [SuggestStatus.CHANGED] * 3
    assert results[3].after == results[1].after


def test_two_reruns_are_needed_before_a_shift(config: Path, policy_up: Path) -> None:
    _, results = _campaign(config, policy_up, rounds=6, settings=KEEP2)
    letters = _letters(results)
    # run 4, the first busy rerun of run 2's values, is not yet a shift: the step stays
    # refused as worse (u); run 5, the second, is; then the campaign goes on
    assert letters == "CCRuCC"
    assert not any(n.startswith("cluster shift") for r in results[:4] for n in r.notes)
    shift = [n for n in results[4].notes if n.startswith("cluster shift: run run-5")]
    assert shift and "(rerun 2 below it)" in shift[0]
    from jpo.stage.incumbent import campaign_scores

    records = suggestion_records(audit.read_records(log_of(config)))
    scores = campaign_scores(records[:3], KEEP2.incumbent)  # outcomes up to run 4
    assert scores.shift is None  # one low rerun (run 4): no shift yet
    scores = campaign_scores(records, KEEP2.incumbent)
    assert scores.shift is not None and scores.shift.reruns == 2
    assert scores.shift.record_run_id == "run-2"


def test_a_rerun_within_the_margin_starts_the_count_again(config: Path, policy_up: Path) -> None:
    from jpo.stage.incumbent import campaign_scores

    fake = FakeSource()
    current = HP
    for i, busy in enumerate((None, None, BUSY, None, BUSY), start=1):
        fake.add(current, f"run-{i}", conditions=busy, val_loss=0.5)
        result = run(config, fake, policy_up, settings=KEEP2)
        # hold the values after run 1 (a refused or returned step): every later run reruns them
        current = result.after if i == 1 and result.after is not None else current
    records = suggestion_records(audit.read_records(log_of(config)))
    # runs 3 and 5 fell below run 2's record, but run 4 matched it in between
    assert campaign_scores(records, KEEP2.incumbent).shift is None
    one = campaign_scores(records, KEEP.incumbent)
    assert one.shift is not None and one.shift.run_id == "run-5"


JUDGE = KEEP.updated({"incumbent": {"shift_rejudges": True}})
"""The restart that judges the runs after the best's last matching measurement again."""


def _worse_right_after_the_record(config: Path, policy: Path, settings: SuggestSettings) -> str:
    """Step A2 crawls right after run 2's record; A1 reruns on the busy cluster; return letters."""
    fake, a1, _ = _two_steps_then_a_crawl(config, policy, settings)
    third = run(config, fake, policy, settings=settings)
    fake.add(a1, "run-4", conditions=BUSY, val_loss=0.5)
    fourth = run(config, fake, policy, settings=settings)
    assert any(n.startswith("cluster shift: run run-4") for n in fourth.notes)
    return _letters([third, fourth])


def test_a_step_worse_than_the_rerun_too_stays_refused(policy_up: Path, tmp_path: Path) -> None:
    # run 3 ran between the record and the rerun that showed the shift: it may have run on
    # either cluster. `keep` forgets it and the policy goes back to it; judged again
    # against the busy rerun, it is worse there too, so `shift_rejudges` keeps it refused
    (tmp_path / "keep").mkdir()
    (tmp_path / "judge").mkdir()
    keep, judge = write_config(tmp_path / "keep"), write_config(tmp_path / "judge")
    assert _worse_right_after_the_record(keep, policy_up, KEEP) == "RC"
    assert _worse_right_after_the_record(judge, policy_up, JUDGE) == "Ru"
    from jpo.stage.incumbent import campaign_scores

    records = suggestion_records(audit.read_records(log_of(judge)))
    assert [r.run_id for r in campaign_scores(records, JUDGE.incumbent).kept_worse] == ["run-3"]
    records = suggestion_records(audit.read_records(log_of(keep)))
    assert campaign_scores(records, KEEP.incumbent).kept_worse == ()


def test_a_step_better_than_the_rerun_is_let_back(config: Path, policy_up: Path) -> None:
    # the ghost case: run 3's bigger batch on the busy cluster scored below run 2's quiet
    # record, but above run 4, the busy rerun of run 2's values: judged again, it is
    # forgotten, and the campaign goes on as with `keep`
    _, results = _campaign(config, policy_up, rounds=6, settings=JUDGE)
    assert _letters(results) == "CCRCCC"
    records = suggestion_records(audit.read_records(log_of(config)))
    from jpo.stage.incumbent import campaign_scores

    assert campaign_scores(records, JUDGE.incumbent).kept_worse == ()
