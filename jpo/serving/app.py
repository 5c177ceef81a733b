"""Ray Serve deployment of the JPO policy endpoint (FastAPI ingress).

``serve run jpo.serving.app:app`` / ``serve deploy configs/serve.yaml`` / ``jpo serve`` start
it. The HTTP API itself (routes, validation, body-size limit, auth) lives in
:mod:`jpo.serving.api` and is built per replica through ``__serve_build_asgi_app__`` (Ray Serve
2.60's late-bound ``@serve.ingress()``), so the same app is testable without Ray.

Settings (:class:`ServeSettings`) come through ``.bind(settings)`` and, at run time,
through ``user_config`` (``reconfigure``): changing ``policy_path`` in
``configs/serve.yaml`` and redeploying swaps the policy in place. Each replica also polls
its policy folder every ``poll_interval_s`` and loads a newly promoted version (a new
versioned subfolder or ``LATEST`` pointer): the new artifact is loaded fully before one
reference is swapped, so requests in flight are never dropped.

Metrics (Ray's metrics export, e.g. ``metrics-export-port`` of the KubeRay manifests; Ray
prefixes them with ``ray_``): ``jpo_serve_suggestions`` (counter, by workload labels and
``changed``: whether the suggested values differ from the request's) and
``jpo_serve_policy_loaded`` (gauge, 1 for the policy version a replica serves, 0 for the
one it replaced), beside Ray Serve's own request, latency and error metrics. The gauge is
set again on every health check (``health_check_period_s``), poll and answered request, so
it stays in the replica's export instead of going stale between policy changes.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field
from ray import serve

from jpo.errors import ConfigError, JpoError
from jpo.paths import config_path
from jpo.serving.api import PolicyService, SuggestRequest, SuggestResponse, create_api
from jpo.serving.auth import load_token
from jpo.settings import Settings, config_file, read_config, validate_settings

log = logging.getLogger("ray.serve")


class ServeSettings(Settings):
    """Replica settings (``user_config`` in ``configs/serve.yaml``; comments there)."""

    policy_path: str = ""
    """Policy artifact or versions folder; empty: the bundled ``jpo/data/policy``."""
    constraints_path: str = ""
    """Constraints TOML; empty: ``configs/constraints.toml``."""
    poll_interval_s: Annotated[float, Field(ge=0.0, le=86400.0)] = 30.0
    """Seconds between checks for a newer policy version; 0 disables polling."""
    max_body_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 65536
    """Largest accepted request body (bytes); larger bodies get 422."""
    max_header_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 16384
    """Largest accepted request headers, names and values together (bytes); larger: 431."""
    token_file: str = ""
    """Secret file with the bearer token (``JPO_SERVE_TOKEN`` wins); empty: none."""

    def resolved_policy_path(self) -> Path:
        """Return the policy folder to load."""
        if self.policy_path:
            return Path(self.policy_path)
        from jpo.policy.source import default_policy_path

        return default_policy_path()


_USER_CONFIG = "applications.0.deployments.0.user_config"
"""Where JPO's replica settings sit in serve.yaml (the rest is Ray Serve's own schema)."""


def default_settings(path: str | Path | None = None) -> dict[str, Any]:
    """Return the first deployment's ``user_config`` from ``configs/serve.yaml`` ({} if none).

    The values are checked as :class:`ServeSettings`; errors name the file and the key.
    """
    file = config_file("serve.yaml", path)
    doc = read_config(file)
    try:
        deployments = doc["applications"][0].get("deployments") or [{}]
        user_config = deployments[0].get("user_config") or {}
    except (KeyError, IndexError, TypeError, AttributeError) as err:
        raise ConfigError(
            f"{file}: cannot read the Serve settings ({err!r}); {_USER_CONFIG} is where "
            "the replica settings go (see the shipped serve.yaml)"
        ) from err
    validate_settings(ServeSettings, user_config, file, _USER_CONFIG)
    return dict(user_config)


def __getattr__(name: str) -> Path:
    """Resolve ``SERVE_YAML`` when read (``$JPO_CONFIG_DIR`` may change after import)."""
    if name == "SERVE_YAML":
        return config_path("serve.yaml")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _ReplicaMetrics:
    """The replica's own metrics (module docstring), exported through Ray's metrics agent."""

    def __init__(self) -> None:
        from ray.util import metrics

        self._suggestions = metrics.Counter(
            "jpo_serve_suggestions",
            description="Suggestions answered by the JPO policy endpoint",
            tag_keys=("dataset", "model", "framework", "changed"),
        )
        self._loaded = metrics.Gauge(
            "jpo_serve_policy_loaded",
            description="1 for the policy version this replica serves, 0 for replaced ones",
            tag_keys=("policy_version",),
        )
        self._version: str | None = None

    def suggestion(self, request: SuggestRequest, response: SuggestResponse) -> None:
        """Count one answered suggestion (and refresh the served-policy gauge)."""
        changed = response.hyperparameters != request.hyperparameters
        self._suggestions.inc(
            tags={
                "dataset": request.workload.dataset,
                "model": request.workload.model,
                "framework": request.workload.framework,
                "changed": str(changed).lower(),
            }
        )
        if self._version is not None:
            self._loaded.set(1, tags={"policy_version": self._version})

    def policy_loaded(self, version: str) -> None:
        """Set the gauge for ``version``, the served policy (and 0 for a replaced one).

        Called on every health check too: a gauge set once and never again can drop out
        of the replica's metrics export.
        """
        if self._version is not None and version != self._version:
            self._loaded.set(0, tags={"policy_version": self._version})
        self._loaded.set(1, tags={"policy_version": version})
        self._version = version


@serve.deployment(name="JpoPolicy", max_ongoing_requests=32)
@serve.ingress()
class PolicyDeployment:
    """One replica: a :class:`jpo.serving.api.PolicyService` behind the FastAPI app."""

    def __init__(self, settings: dict[str, Any] | None = None):
        self.settings = ServeSettings.model_validate(settings or {})
        self.service = PolicyService(
            self.settings.resolved_policy_path(), self.settings.constraints_path or None
        )
        self.token = load_token(self.settings.token_file or None)
        self._metrics = _ReplicaMetrics()
        self._metrics.policy_loaded(self.version())
        self._api: Any = None
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="jpo-policy-poll", daemon=True)
        self._poller.start()

    def __serve_build_asgi_app__(self) -> Any:
        """Return the replica's ASGI app (called by Ray Serve after ``__init__``)."""
        self._api = create_api(
            lambda: self.service,
            token=self.token,
            max_body_bytes=self.settings.max_body_bytes,
            max_header_bytes=self.settings.max_header_bytes,
            on_suggest=self._metrics.suggestion,
        )
        return self._api

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply a new ``user_config``: switch/reload the policy, refresh the token."""
        new = ServeSettings.model_validate(user_config or {})
        old, self.settings = self.settings, new
        if new.resolved_policy_path() != old.resolved_policy_path():
            self.service.set_policy_path(new.resolved_policy_path())
        else:
            self.service.reload()
        self._metrics.policy_loaded(self.version())
        self.token = load_token(new.token_file or None)
        if self._api is not None:
            self._api.app.state.token = self.token
            self._api.max_bytes = new.max_body_bytes
            self._api.max_header_bytes = new.max_header_bytes

    def _poll(self) -> None:
        while not self._stop.wait(self.settings.poll_interval_s or 3600.0):
            if not self.settings.poll_interval_s:
                continue
            try:
                self.service.reload()
            except JpoError as err:  # keep serving the loaded policy
                log.warning("policy reload failed, keeping version %s: %s", self.version(), err)
            else:
                self._metrics.policy_loaded(self.version())

    def version(self) -> str:
        """Return the loaded policy version."""
        return str(self.service.policy.version)

    def check_health(self) -> None:
        """Ray Serve health check: a policy must be loaded; refreshes the loaded gauge."""
        if self.service.policy is None:
            raise RuntimeError("no policy loaded")
        self._metrics.policy_loaded(self.version())

    def __del__(self) -> None:
        self._stop.set()


def build_app(
    settings: dict[str, Any] | None = None, *, user_config: dict[str, Any] | None = None
) -> Any:
    """Return the bound Serve application (default settings: ``configs/serve.yaml``).

    ``settings`` go to the constructor through ``.bind``; ``user_config`` (validated the
    same way) is applied by ``reconfigure``, and redeploying with only a new user_config
    switches replicas in place, without a restart.
    """
    values = default_settings() if settings is None else settings
    ServeSettings.model_validate(values)  # fail at build time, naming the bad key
    deployment: Any = PolicyDeployment
    if user_config is not None:
        ServeSettings.model_validate(user_config)
        deployment = deployment.options(user_config=user_config)
    return deployment.bind(values)


app = build_app()
