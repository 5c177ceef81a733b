"""One observation -> constrained step (jpo.policy.step): the CI stage, Serve and evaluation agree.

Each case feeds the three callers the same input and compares their answers:
the CI stage through :func:`jpo.stage.suggest.suggest` (its ``proposed`` values, before the
guards), Serve through the Ray-free FastAPI app (:func:`jpo.serving.api.create_api`) with the
observation the CI stage built, and evaluation through
:func:`jpo.evaluation.evaluate.jpo_proposer` on the summary the CI stage recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes.policy import RUN_SUMMARY, fixed_action_policy
from fakes.suggest_campaign import CONFIG, HP, FakeSource, write_config
from fastapi.testclient import TestClient

from jpo.errors import ExitCode, PolicyError, exit_code_for
from jpo.evaluation.evaluate import jpo_proposer
from jpo.evaluation.tuners import TuningTask
from jpo.learning.features import FEATURE_SPEC_VERSION
from jpo.policy.artifact import LocalPolicy
from jpo.policy.source import LocalPolicySource
from jpo.policy.step import Actor, constrained_step
from jpo.serving.api import PolicyService, create_api
from jpo.sim.response import load_profile
from jpo.stage import audit
from jpo.stage.suggest import SuggestOptions, SuggestSettings, suggest
from jpo.telemetry.schema import RunSummary
from jpo.workload.config_file import read_workload
from jpo.workload.constraints import load_constraints
from jpo.workload.types import HYPERPARAMETER_NAMES, Hyperparameters

ACTION = (0.5, -0.4, 0.0, 0.6)
"""In HYPERPARAMETER_NAMES order: batch up, learning rate down, layers kept, epochs up."""

PERMUTED = ("epochs", "num_layers", "batch_size", "learning_rate")
"""Action names in an order the constraints' tunable order is not."""


class Permuted:
    """A real artifact whose action entries are named (and returned) in ``PERMUTED`` order.

    The artifact loader refuses such a manifest (``LocalPolicy.load``: "out of order"), so
    this wraps a loaded policy; an endpoint answer may name its entries in any order.
    """

    def __init__(self, policy: LocalPolicy) -> None:
        self._policy = policy
        self._order = [HYPERPARAMETER_NAMES.index(n) for n in PERMUTED]
        self.path = policy.path

    @property
    def version(self) -> int:
        """The wrapped policy's version."""
        return self._policy.version

    @property
    def action_names(self) -> tuple[str, ...]:
        """The permuted names."""
        return PERMUTED

    @property
    def learning_rate_follows_batch(self) -> float:
        """The wrapped policy's coupling."""
        return self._policy.learning_rate_follows_batch

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The wrapped policy's action, its entries in ``PERMUTED`` order."""
        return np.asarray(self._policy.act(obs))[self._order]


class _Service(PolicyService):
    """Serve's policy service answering with ``actor`` (loaded from a real artifact first)."""

    def __init__(self, policy_path: Path, actor: Actor) -> None:
        super().__init__(policy_path)
        self._actor = actor

    @property
    def policy(self) -> Any:
        """The actor in place of the loaded artifact."""
        return self._actor


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


def _ci(config: Path, policy_dir: Path, actor: Actor) -> tuple[Hyperparameters, dict[str, Any]]:
    """The CI stage's proposal and its audit record (observation and summary)."""
    source = FakeSource()
    source.add(HP, "run-1")
    options = SuggestOptions(config=config, policy_path=policy_dir)
    result = suggest(
        options,
        metric_source=source,
        policy_source=LocalPolicySource(policy_dir, policy=actor),
        settings=SuggestSettings(),
    )
    (record,) = audit.read_records(config.parent / ".jpo" / "audit.jsonl")
    assert result.proposed is not None
    return result.proposed, record.model_dump(mode="json")


def _serve(policy_dir: Path, actor: Actor, features: list[float]) -> Any:
    """Serve's answer for the CI stage's observation (FastAPI TestClient, no Ray)."""
    client = TestClient(create_api(_Service(policy_dir, actor)))
    body = {
        "workload": {"dataset": "cifar10", "model": "resnet18", "framework": "pytorch"},
        "hyperparameters": HP.as_dict(),
        "features": features,
        "feature_spec_version": FEATURE_SPEC_VERSION,
    }
    return client.post("/v1/suggest", json=body)


def _evaluation(
    actor: Actor, summary: RunSummary, constraints: Any = None
) -> Callable[[], Hyperparameters]:
    """Evaluation's direct proposer on the summary the CI stage recorded."""
    profile = load_profile("cifar10-resnet18")
    task = TuningTask(
        workload="cifar10-resnet18",
        profile=profile,
        constraints=constraints or load_constraints(),
        default=HP,
        default_summary=summary,
        seed=0,
    )
    propose = jpo_proposer(actor)
    return lambda: propose(task=task, current=HP, summary=summary, history=())[0]


@pytest.mark.parametrize("permuted", [False, True], ids=["manifest-order", "permuted-names"])
@pytest.mark.parametrize("coupling", [None, 1.0], ids=["uncoupled", "lr-follows-batch"])
def test_ci_serve_and_evaluation_answer_the_same(
    config: Path, tmp_path: Path, permuted: bool, coupling: float | None
) -> None:
    policy_dir = fixed_action_policy(tmp_path / "policy", ACTION, coupling=coupling)
    loaded = LocalPolicy.load(policy_dir)
    actor: Actor = Permuted(loaded) if permuted else loaded
    if permuted:
        assert tuple(actor.action_names) != load_constraints().tunable
    ci, record = _ci(config, policy_dir, actor)
    assert ci != HP and ci.batch_size > HP.batch_size and ci.epochs > HP.epochs
    assert ci.learning_rate != HP.learning_rate  # moved by the action or the coupling

    served = _serve(policy_dir, actor, record["features"])
    assert served.status_code == 200, served.text
    assert served.json()["hyperparameters"] == ci.as_dict()
    assert served.json()["action_names"] == list(actor.action_names)

    summary = RunSummary(**record["telemetry"]["summary"])
    assert _evaluation(actor, summary)() == ci

    # the order of the names does not change the step: the same as the manifest-order policy
    reference = constrained_step(
        load_constraints(),
        HP,
        ACTION,
        action_names=HYPERPARAMETER_NAMES,
        learning_rate_follows_batch=loaded.learning_rate_follows_batch,
        source="test",
    )
    assert ci == reference.hyperparameters


def test_entries_are_ordered_by_name_and_missing_ones_keep() -> None:
    constraints = load_constraints()
    by_name = dict(zip(HYPERPARAMETER_NAMES, ACTION, strict=True))
    permuted = constrained_step(
        constraints,
        HP,
        [by_name[n] for n in PERMUTED],
        action_names=PERMUTED,
        learning_rate_follows_batch=0.0,
        source="test",
    )
    assert permuted.vector == ACTION and permuted.action_names == PERMUTED
    partial = constrained_step(
        constraints,
        HP,
        [0.5],
        action_names=["epochs"],
        learning_rate_follows_batch=0.0,
        source="test",
    )
    assert partial.vector == (0.0, 0.0, 0.0, 0.5)
    assert partial.hyperparameters.epochs > HP.epochs
    assert partial.hyperparameters.batch_size == HP.batch_size
    unnamed = constrained_step(
        constraints,
        HP,
        ACTION,
        action_names=None,  # no names: HYPERPARAMETER_NAMES order
        learning_rate_follows_batch=0.0,
        source="test",
    )
    assert unnamed.vector == tuple(ACTION)
    with pytest.raises(PolicyError, match="3 action entries for 4 names") as err:
        constrained_step(
            constraints,
            HP,
            [0.1, 0.2, 0.3],
            action_names=HYPERPARAMETER_NAMES,
            learning_rate_follows_batch=0.0,
            source="test",
        )
    assert exit_code_for(err.value) == ExitCode.POLICY


def test_a_non_finite_action_is_refused_alike(config: Path, tmp_path: Path) -> None:
    """The CI stage's PolicyError (exit 5); Serve 422 with the message, never a silent 0."""
    policy_dir = fixed_action_policy(tmp_path / "nan", (float("nan"), 0.0, 0.0, 0.0))
    policy = LocalPolicy.load(policy_dir)
    assert np.isnan(policy.act(np.zeros(len(policy.observation_names)))[0])
    source = FakeSource()
    source.add(HP, "run-1")
    with pytest.raises(PolicyError, match="non-finite action") as ci:
        suggest(
            SuggestOptions(config=config, policy_path=policy_dir),
            metric_source=source,
            settings=SuggestSettings(),
        )
    assert exit_code_for(ci.value) == ExitCode.POLICY
    assert config.read_text() == CONFIG

    served = _serve(policy_dir, policy, [0.0] * len(policy.observation_names))
    assert served.status_code == 422
    detail = served.json()["detail"]
    assert "non-finite action [nan, 0.0, 0.0, 0.0]" in detail
    assert str(tmp_path) not in detail  # the server's paths stay redacted

    summary = RunSummary(**RUN_SUMMARY)
    with pytest.raises(PolicyError, match="non-finite action") as evaluated:
        _evaluation(policy, summary)()
    assert exit_code_for(evaluated.value) == ExitCode.POLICY


def test_a_frozen_parameter_drops_its_entry_in_ci_and_evaluation(
    config: Path, tmp_path: Path
) -> None:
    """A policy acting on all four with num_layers frozen: its entry is dropped, alike.

    (Evaluation's direct path used to hand all four entries to three tunable parameters.)
    """
    config.write_text(CONFIG + "\n[jpo]\nfreeze = num_layers\n")
    policy_dir = fixed_action_policy(tmp_path / "policy", (0.5, -0.4, 0.9, 0.6))
    policy = LocalPolicy.load(policy_dir)
    ci, record = _ci(config, policy_dir, policy)
    assert ci.num_layers == HP.num_layers and ci.batch_size > HP.batch_size
    constraints = load_constraints().for_workload(read_workload(config).jpo)
    assert constraints.tunable == ("batch_size", "learning_rate", "epochs")
    summary = RunSummary(**record["telemetry"]["summary"])
    assert _evaluation(policy, summary, constraints)() == ci
