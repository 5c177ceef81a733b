"""diagnose.py history (round 12): history students keep one previous run per campaign."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "research" / "evaluate"))
sys.path.insert(0, str(REPO / "research" / "train"))
import diagnose  # noqa: E402
from campaign_history import history_names  # noqa: E402

import jpo.evaluation.evaluate as evaluate_module  # noqa: E402
import jpo.policy.source as policy_source  # noqa: E402


class _Recorder:
    """A policy that records what it is fed (a fake: the wrapper's bookkeeping is the subject)."""

    observation_names = history_names(("a", "b"))
    version = "rec"

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def act(self, x: np.ndarray) -> np.ndarray:
        self.seen.append(np.asarray(x))
        return np.zeros(4, np.float32)


def test_each_campaign_sees_its_own_previous_run() -> None:
    inner = _Recorder()
    campaign = {"key": "A"}
    policy = diagnose._HistoryPolicy(inner, lambda: campaign["key"])
    assert policy.version == "rec"  # everything but act is the inner policy's
    policy.act(np.array([1.0, 2.0]))
    campaign["key"] = "B"
    policy.act(np.array([5.0, 6.0]))
    campaign["key"] = "A"
    policy.act(np.array([3.0, 4.0]))
    np.testing.assert_array_equal(inner.seen[0], [1, 2, 0, 0, 0])
    np.testing.assert_array_equal(inner.seen[1], [5, 6, 0, 0, 0])  # B starts fresh
    np.testing.assert_array_equal(inner.seen[2], [3, 4, 1, 2, 1])


def test_history_paths_patch_both_paths_and_restore_them() -> None:
    saved = (
        evaluate_module.jpo_proposer,
        evaluate_module.suggest_proposer,
        policy_source.LocalPolicySource,
    )
    with diagnose.history_paths():
        assert evaluate_module.jpo_proposer is not saved[0]
        assert evaluate_module.suggest_proposer is not saved[1]
        assert issubclass(policy_source.LocalPolicySource, saved[2])
    assert (
        evaluate_module.jpo_proposer,
        evaluate_module.suggest_proposer,
        policy_source.LocalPolicySource,
    ) == saved


def test_a_spec_policy_goes_through_the_direct_path_unwrapped() -> None:
    calls: list[object] = []
    original = evaluate_module.jpo_proposer
    evaluate_module.jpo_proposer = lambda policy: calls.append(policy) or original
    try:
        with diagnose.history_paths():
            spec = _Recorder()
            spec.observation_names = ("a", "b")  # type: ignore[misc]
            evaluate_module.jpo_proposer(spec)
            evaluate_module.jpo_proposer(_Recorder())
    finally:
        evaluate_module.jpo_proposer = original
    assert calls[0] is spec
    assert isinstance(calls[1], diagnose._HistoryPolicy)
