"""Where the CI stage gets its action from: a local artifact or a Serve endpoint.

:class:`PolicySource` is the small abstract base; :class:`LocalPolicySource` runs an
exported artifact with numpy (:class:`jpo.policy.artifact.LocalPolicy`), and
:class:`EndpointPolicySource` asks the Serve app over HTTP (``POST /v1/suggest``) with a
total deadline per attempt (:mod:`jpo.http_deadline`: a server that drips bytes is cut off
at ``timeout_s``) and bounded retries. :class:`FallbackPolicySource` tries the endpoint
first and, when it is unreachable, slow, answers 5xx or answers something malformed, uses
the local policy if allowed — otherwise it raises :class:`PolicyUnavailable` with a clear
message. A 401/403 is never hidden by the fallback: it raises
:class:`jpo.errors.PolicyAuthError` (exit 8), since a wrong token would otherwise go
unnoticed behind the bundled policy.

Nothing here imports ray or torch; httpx is imported only when an endpoint is used.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jpo.errors import PolicyAuthError, PolicyError
from jpo.paths import BUNDLED_POLICY_DIR
from jpo.policy.step import Actor, checked_action
from jpo.telemetry.schema import RunSummary
from jpo.workload.types import Hyperparameters, WorkloadKey

__all__ = [
    "EndpointPolicySource",
    "FallbackPolicySource",
    "LocalPolicySource",
    "PolicyAnswer",
    "PolicyQuery",
    "PolicySource",
    "PolicyUnavailable",
    "default_policy_path",
]

TOKEN_ENV = "JPO_SERVE_TOKEN"


class PolicyUnavailable(PolicyError):
    """The endpoint failed and no local fallback was allowed: leave the file unchanged."""


@dataclass(frozen=True, slots=True)
class PolicyQuery:
    """What a policy needs: the workload, its current values, the observation."""

    key: WorkloadKey
    current: Hyperparameters
    observation: np.ndarray
    feature_spec_version: str
    summary: RunSummary | None = None


@dataclass(frozen=True, slots=True)
class PolicyAnswer:
    """A policy's answer: the raw action in [-1, 1]^k and where it came from."""

    action: tuple[float, ...]
    version: str
    source: str
    suggested: Hyperparameters | None = None
    predicted_gain: float | None = None
    action_names: tuple[str, ...] | None = None
    notes: tuple[str, ...] = field(default=())
    learning_rate_follows_batch: float = 0.0
    """The action mapping's coupling the policy was trained with (jpo.workload.constraints)."""


def default_policy_path() -> Path:
    """Return the folder of the bundled policy (``jpo/data/policy``)."""
    return BUNDLED_POLICY_DIR


class PolicySource(ABC):
    """A backend that maps an observation to an action."""

    @property
    @abstractmethod
    def description(self) -> str:
        """Human-readable origin (a file path or URL), recorded in the audit log."""

    @abstractmethod
    def version(self) -> str:
        """Return the policy version this source serves (may contact the backend)."""

    @abstractmethod
    def answer(self, query: PolicyQuery) -> PolicyAnswer:
        """Return the policy's action for ``query`` (raises PolicyError on any failure)."""


class LocalPolicySource(PolicySource):
    """An exported artifact run in-process with numpy (loaded lazily, once).

    ``policy``: an already loaded policy to run instead (``path`` then only names it).
    """

    def __init__(self, path: str | Path | None = None, *, policy: Actor | None = None):
        self.path = Path(path) if path is not None else default_policy_path()
        self._policy: Any = policy

    @property
    def description(self) -> str:
        """The artifact folder, as ``file:<path>``."""
        return f"file:{self.path}"

    def _load(self) -> Any:
        if self._policy is None:
            from jpo.policy.artifact import LocalPolicy

            path = self.path
            try:
                self._policy = LocalPolicy.load(path)
            except PolicyError:
                raise
            except (OSError, ValueError, KeyError) as err:
                raise PolicyError(
                    f"{path}: cannot load the policy artifact ({err}); re-export it or pass "
                    "--policy PATH"
                ) from err
        return self._policy

    def version(self) -> str:
        """Return the artifact's version."""
        return str(self._load().version)

    def answer(self, query: PolicyQuery) -> PolicyAnswer:
        """Run the actor on the observation."""
        policy = self._load()
        action = checked_action(policy.act(query.observation), self.description)
        names = tuple(getattr(policy, "action_names", ()) or ()) or None
        return PolicyAnswer(
            action=action,
            version=str(policy.version),
            source=self.description,
            action_names=names,
            learning_rate_follows_batch=float(getattr(policy, "learning_rate_follows_batch", 0.0)),
        )


MAX_ANSWER_DEPTH = 16
"""Deepest JSON nesting accepted in an endpoint's answer (the SuggestResponse needs 3)."""


class EndpointPolicySource(PolicySource):
    """The Serve app over HTTP, with a total deadline per attempt and bounded retries.

    Retries (with doubling back-off) happen only on connection errors, timeouts and 5xx;
    4xx answers and malformed bodies fail at once. Every failure is a PolicyError whose
    message names the URL and the cause.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 2.0,
        retries: int = 1,
        backoff_s: float = 0.2,
        token: str | None = None,
        transport: Any = None,
    ):
        import os

        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
        self._transport = transport

    @property
    def description(self) -> str:
        """The endpoint URL."""
        return self.url

    def _request(self, method: str, route: str, body: dict[str, Any] | None = None) -> Any:
        import httpx

        from jpo.http_deadline import DeadlineTransport, deadline
        from jpo.safe_json import loads_bounded

        transport = self._transport if self._transport is not None else DeadlineTransport()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        url = f"{self.url}{route}"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                with (
                    deadline(self.timeout_s),  # total per attempt, however slow the bytes
                    httpx.Client(timeout=self.timeout_s, transport=transport) as client,
                ):
                    response = client.request(method, url, json=body, headers=headers)
            except httpx.TimeoutException:
                last = f"no answer within {self.timeout_s:g} s"
                continue
            except httpx.HTTPError as err:
                last = f"unreachable ({type(err).__name__}: {err})"
                continue
            if response.status_code >= 500:
                last = f"server error {response.status_code}"
                continue
            if response.status_code in (401, 403):
                raise PolicyAuthError(
                    f"{url}: {response.status_code} unauthorized; set {TOKEN_ENV} to the "
                    "endpoint's bearer token (never hidden by --fallback-local)"
                )
            if response.status_code != 200:
                raise PolicyError(
                    f"{url}: rejected the request with {response.status_code}: "
                    f"{' '.join(response.text[:300].split())}"
                )
            try:
                return loads_bounded(
                    response.text, max_depth=MAX_ANSWER_DEPTH, allow_constants=True
                )
            except ValueError as err:
                raise PolicyError(
                    f"{url}: answered 200 with a body that is not JSON ({str(err)[:100]})"
                ) from err
        raise PolicyError(
            f"{url}: {last} after {self.retries + 1} attempt(s); check the endpoint or use "
            "--policy / --fallback-local"
        )

    def version(self) -> str:
        """Return the endpoint's policy version (``GET /v1/policy``)."""
        data = self._request("GET", "/v1/policy")
        if not isinstance(data, dict) or not isinstance(data.get("version"), str):
            raise PolicyError(f"{self.url}/v1/policy: malformed answer (no string `version`)")
        return str(data["version"])

    def answer(self, query: PolicyQuery) -> PolicyAnswer:
        """POST the observation (and summary) and validate the answer."""
        from pydantic import ValidationError

        from jpo.policy.wire import RunSummaryModel, SuggestResponse

        body: dict[str, Any] = {
            "workload": {
                "dataset": query.key.dataset,
                "model": query.key.model,
                "framework": query.key.framework,
            },
            "hyperparameters": query.current.as_dict(),
            "features": [float(x) for x in np.asarray(query.observation).reshape(-1)],
            "feature_spec_version": query.feature_spec_version,
        }
        if query.summary is not None:
            summary = {name: getattr(query.summary, name) for name in RunSummaryModel.model_fields}
            if all(isinstance(v, str) or math.isfinite(float(v)) for v in summary.values()):
                body["summary"] = summary
        data = self._request("POST", "/v1/suggest", body)
        try:
            parsed = SuggestResponse.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise PolicyError(
                f"{self.url}/v1/suggest: malformed answer ({where}: {first.get('msg')})"
            ) from err
        action = checked_action(parsed.action, self.url)
        return PolicyAnswer(
            action=action,
            version=parsed.policy_version,
            source=self.url,
            suggested=parsed.hyperparameters.to_hyperparameters(),
            predicted_gain=parsed.predicted_gain,
            action_names=tuple(parsed.action_names),
            learning_rate_follows_batch=parsed.learning_rate_follows_batch,
        )


class FallbackPolicySource(PolicySource):
    """Try sources in order; report each failure in the answer's notes.

    With only the endpoint (no fallback allowed) a failure raises PolicyUnavailable.
    """

    def __init__(self, sources: Sequence[PolicySource]):
        if not sources:
            raise ValueError("FallbackPolicySource needs at least one source")
        self.sources = tuple(sources)

    @property
    def description(self) -> str:
        """The sources, in order."""
        return " -> ".join(s.description for s in self.sources)

    def version(self) -> str:
        """Return the first reachable source's version."""
        errors: list[str] = []
        for source in self.sources:
            try:
                return source.version()
            except PolicyAuthError:
                raise
            except PolicyError as err:
                errors.append(str(err))
        raise PolicyUnavailable("; ".join(errors))

    def answer(self, query: PolicyQuery) -> PolicyAnswer:
        """Return the first source's answer that succeeds."""
        notes: list[str] = []
        for source in self.sources:
            try:
                got = source.answer(query)
            except PolicyAuthError:
                raise  # a wrong token must stop the stage, not fall back
            except PolicyError as err:
                notes.append(f"policy source failed: {err}")
                continue
            if notes:
                notes.append(f"fell back to {source.description}")
            return PolicyAnswer(
                action=got.action,
                version=got.version,
                source=got.source,
                suggested=got.suggested,
                predicted_gain=got.predicted_gain,
                action_names=got.action_names,
                notes=(*notes, *got.notes),
                learning_rate_follows_batch=got.learning_rate_follows_batch,
            )
        hint = "" if len(self.sources) > 1 else " (local fallback disabled: --no-fallback-local)"
        raise PolicyUnavailable(" ; ".join(notes) + hint + "; config.ini left unchanged")
