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

from jpo.policy.source import LocalPolicySource  # noqa: E402


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


def test_history_plugins_wrap_a_history_student_on_both_paths() -> None:
    student = _Recorder()
    direct = diagnose.history_plugins(student, "/p", "direct")
    assert set(direct) == {"propose", "wrap_propose"}
    suggest = diagnose.history_plugins(student, "/p", "suggest")
    assert set(suggest) == {"policy_source", "wrap_propose"}
    source = suggest["policy_source"]
    assert isinstance(source, LocalPolicySource) and source.description == "file:/p"
    assert source.version() == "rec"  # the given policy: nothing is loaded from /p


def test_a_spec_policy_goes_through_either_path_unwrapped() -> None:
    spec = _Recorder()
    spec.observation_names = ("a", "b")  # type: ignore[misc]
    for path in ("direct", "suggest"):
        plugins = diagnose.history_plugins(spec, "/p", path)
        # evaluate builds the shipped proposer from the policy itself; only the campaign key
        # is noted around it
        assert set(plugins) == {"wrap_propose"}
