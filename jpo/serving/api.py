"""The HTTP API of the policy endpoint: pydantic models, the policy service, the FastAPI app.

Kept free of Ray so that the API logic is testable with FastAPI's TestClient (and usable
behind plain uvicorn); ``jpo/serving/app.py`` wraps :func:`create_api` in a Ray Serve deployment.

Routes:

* ``POST /v1/suggest`` — body :class:`SuggestRequest` (workload labels, current
  hyperparameters, and either the observation ``features`` computed by the client or a
  raw telemetry ``summary``); answer :class:`SuggestResponse` (suggested hyperparameters
  after the default constraints, raw action, predicted throughput gain, policy version).
* ``GET /healthz`` — liveness plus the loaded policy version (no auth).
* ``GET /v1/policy`` — the policy's version and manifest, with every absolute filesystem
  path in it replaced by ``<path>`` (the server's layout is not the client's business).
* ``GET /docs``, ``/redoc``, ``/openapi.json`` — the API's documentation, behind the same
  bearer token as the API when one is configured.

Bad bodies (NaN, Inf, wrong types, unknown fields, too long lists, bodies over the size
limit, values the constraints refuse, a ``feature_spec_version`` the server does not run)
are answered 422 with a one-line ``detail``; a missing or wrong bearer token 401 (when a
token is configured); request headers over ``max_header_bytes`` in all 431. An observation
for which the policy returns a non-finite action is answered 422 too, its ``detail``
naming the action (``... the policy returned a non-finite action [nan, ...]``): the action
is mapped by :func:`jpo.policy.step.policy_step`, as in the CI stage (which refuses it with
exit 5) and evaluation, never replaced by 0. The wire models live in
:mod:`jpo.policy.wire` (the endpoint client validates answers with them).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from jpo.errors import JpoError, PolicyError
from jpo.policy.wire import (
    Health,
    HyperparameterValues,
    PolicyInfo,
    RunSummaryModel,
    SuggestRequest,
    SuggestResponse,
    WorkloadLabels,
    hyperparameters_from_wire,
)
from jpo.workload.types import HYPERPARAMETER_NAMES

log = logging.getLogger(__name__)


def resolve_artifact(path: Path) -> Path:
    """Return the artifact folder ``path`` names (itself, its LATEST, or newest version)."""
    from jpo.policy.artifact import latest_artifact

    return latest_artifact(path)


class PolicyService:
    """The loaded policy plus what answering needs; reloadable without dropping requests.

    A reload loads the new artifact fully, then swaps one reference: requests in flight
    keep the policy they started with.
    """

    def __init__(self, policy_path: str | Path, constraints_path: str | Path | None = None):
        self._root = Path(policy_path)
        self._constraints_path = constraints_path
        self._lock = threading.Lock()
        self._state: tuple[Any, Path, int] | None = None
        from jpo.workload.constraints import load_constraints

        self._constraints = load_constraints(constraints_path)
        self.reload(force=True)

    @property
    def policy(self) -> Any:
        """The currently loaded :class:`jpo.policy.artifact.LocalPolicy`."""
        assert self._state is not None
        return self._state[0]

    @property
    def artifact_path(self) -> Path:
        """Folder of the loaded artifact."""
        assert self._state is not None
        return self._state[1]

    def set_policy_path(self, policy_path: str | Path) -> bool:
        """Point at another policy folder and load it (``reconfigure``); True if reloaded."""
        self._root = Path(policy_path)
        return self.reload(force=True)

    def reload(self, *, force: bool = False) -> bool:
        """Load the newest artifact under the policy path if it changed; True if swapped.

        Any unusable artifact (corrupt, tampered, oversize, paths leaving its folder) raises
        PolicyError, one line; the policy loaded before stays in service.
        """
        from jpo.policy.artifact import LocalPolicy

        with self._lock:
            try:
                artifact = resolve_artifact(self._root)
                stamp = (artifact / "manifest.json").stat().st_mtime_ns
            except OSError as err:
                raise PolicyError(f"cannot read policy artifact {self._root}: {err}") from err
            if not force and self._state is not None and self._state[1:] == (artifact, stamp):
                return False
            try:
                policy = LocalPolicy.load(artifact)
            except (OSError, ValueError) as err:
                raise PolicyError(f"cannot load policy artifact {artifact}: {err}") from err
            old = None if self._state is None else self._state[0].version
            self._state = (policy, artifact, stamp)
        if old != policy.version:
            log.info("loaded policy %s from %s (was %s)", policy.version, artifact, old)
        return True

    def info(self) -> PolicyInfo:
        """Return the policy's version and manifest."""
        policy = self.policy
        manifest = policy.manifest
        as_dict = manifest if isinstance(manifest, dict) else _to_dict(manifest)
        return PolicyInfo(version=str(policy.version), manifest=redact_paths(as_dict))

    def redact(self, text: str) -> str:
        """Replace the server's policy folders in ``text`` by ``<policy>``."""
        for folder in sorted({str(self._root), str(self.artifact_path)}, key=len, reverse=True):
            text = text.replace(folder, "<policy>")
        return text

    def suggest(self, request: SuggestRequest) -> SuggestResponse:
        """Answer one suggestion request with the current policy."""
        from jpo.learning import features as feats
        from jpo.policy.step import policy_step
        from jpo.stage.guards import predicted_throughput_gain

        policy = self.policy  # one reference for the whole request
        current = request.hyperparameters.to_hyperparameters()
        summary = request.summary.to_summary() if request.summary is not None else None
        if request.features is not None:
            if request.feature_spec_version != str(feats.FEATURE_SPEC_VERSION):
                raise PolicyError(
                    f"feature_spec_version {request.feature_spec_version!r} differs from the "
                    f"server's {feats.FEATURE_SPEC_VERSION!r}; upgrade the client (jpo) or send "
                    "`summary` instead of `features`"
                )
            wide = np.asarray(request.features, dtype=np.float64)
            if np.any(np.abs(wide) > np.finfo(np.float32).max):
                raise PolicyError(
                    "features hold values beyond the float32 range the policy computes in; "
                    "send the observation jpo.learning.features.build_observation produces"
                )
            obs = wide.astype(np.float32)
        else:
            assert summary is not None
            context = feats.WorkloadContext(
                baseline_throughput=request.baseline_throughput or summary.throughput or 1.0,
                best_val_loss=(
                    request.best_val_loss
                    if request.best_val_loss is not None
                    else summary.final_val_loss
                ),
                framework=request.workload.framework,
            )
            obs = feats.build_observation(summary, current, self._constraints, context)
        # the one mapping the CI stage and evaluation use too (jpo.policy.step): a
        # non-finite action is a PolicyError (answered 422 below), never replaced by 0
        step = policy_step(
            policy, obs, self._constraints, current, source=f"file:{self.artifact_path}"
        )
        suggested = step.hyperparameters
        gain = predicted_throughput_gain(summary, current, suggested) if summary else None
        return SuggestResponse(
            hyperparameters=HyperparameterValues.of(suggested),
            action=list(step.action),
            action_names=list(step.action_names),  # type: ignore[arg-type]  # Literal names
            predicted_gain=gain,
            policy_version=str(policy.version),
            feature_spec_version=str(feats.FEATURE_SPEC_VERSION),
            learning_rate_follows_batch=step.learning_rate_follows_batch,
        )


_ABSOLUTE_PATH = re.compile(r"^(?:/|~|[A-Za-z]:[\\/]|file:)")


def redact_paths(value: Any) -> Any:
    """Return ``value`` with every string that is an absolute path replaced by ``<path>``."""
    if isinstance(value, dict):
        return {k: redact_paths(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_paths(v) for v in value]
    if isinstance(value, str) and _ABSOLUTE_PATH.match(value):
        return "<path>"
    return value


def _to_dict(obj: Any) -> dict[str, Any]:
    if hasattr(obj, "model_dump"):
        return dict(obj.model_dump(mode="json"))
    from dataclasses import asdict, is_dataclass

    if is_dataclass(obj) and not isinstance(obj, type):
        loaded: dict[str, Any] = json.loads(json.dumps(asdict(obj), default=str))
        return loaded
    return {"value": str(obj)}


ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


class BodyLimitMiddleware:
    """Reject request bodies over ``max_bytes`` with 422 before they are parsed.

    Checks ``Content-Length`` up front and counts streamed (chunked) bytes as they arrive.
    Request headers over ``max_header_bytes`` in all (names and values) get 431 first.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_header_bytes: int = 16384):
        self.app = app
        self.max_bytes = max_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        """Run the wrapped app with a byte-counting ``receive``."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header_bytes = sum(len(n) + len(v) for n, v in scope.get("headers", []))
        if header_bytes > self.max_header_bytes:
            detail = f"request headers larger than {self.max_header_bytes} bytes"
            await _send_json(send, 431, {"detail": detail})
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.max_bytes:
                    await self._reject(send)
                    return
        seen = 0
        too_big = False

        async def counted() -> Any:
            nonlocal seen, too_big
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    too_big = True
                    return {"type": "http.disconnect"}
            return message

        started = False

        async def guarded_send(message: Any) -> None:
            nonlocal started
            if too_big and not started:
                started = True
                await self._reject(send)
                return
            if too_big:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted, guarded_send)
        if too_big and not started:
            await self._reject(send)

    async def _reject(self, send: Any) -> None:
        detail = f"request body larger than {self.max_bytes} bytes (or unreadable length)"
        await _send_json(send, 422, {"detail": detail})


async def _send_json(send: Any, status: int, content: dict[str, Any]) -> None:
    """Send a complete JSON response through a raw ASGI ``send``."""
    body = json.dumps(content).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_api(
    service: Callable[[], PolicyService] | PolicyService,
    *,
    token: str | None = None,
    max_body_bytes: int = 65536,
    max_header_bytes: int = 16384,
    on_suggest: Callable[[SuggestRequest, SuggestResponse], None] | None = None,
) -> Any:
    """Return the FastAPI app (wrapped in the body and header limits) serving ``service``.

    ``service`` may be a zero-argument callable returning the current service, so that a
    Serve replica can swap it on ``reconfigure``. ``on_suggest`` is called with each
    answered suggestion (the Serve replica counts them in its metrics).
    """
    from jpo.serving.auth import authorized

    get_service: Callable[[], PolicyService] = (
        service if callable(service) and not isinstance(service, PolicyService) else lambda: service
    )
    # The documentation routes are declared below, behind the token (FastAPI's own are open).
    app = FastAPI(
        title="JPO policy endpoint", version="1", docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.token = token

    async def require_token(request: Request) -> None:
        if not authorized(request.headers.get("authorization"), app.state.token):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong bearer token (Authorization: Bearer <JPO_SERVE_TOKEN>)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Any, err: RequestValidationError) -> JSONResponse:
        # The default handler echoes the offending input, which may be NaN/Inf and then
        # cannot be JSON-encoded: answer with where and what only.
        detail = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in err.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": detail})

    @app.exception_handler(JpoError)
    async def _jpo_error(_request: Any, err: JpoError) -> JSONResponse:
        # Raised while answering a body (constraints refuse its values, a feature spec the
        # server does not run, an observation the policy cannot take): the body is bad.
        detail = get_service().redact(" ".join(str(err).split()))
        return JSONResponse(status_code=422, content={"detail": detail})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Any, err: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers a body it cannot parse at all (e.g. nested too deep) with 400;
        # the operator guide promises 422 for every bad body.
        status = 422 if err.status_code == 400 else err.status_code
        headers = dict(err.headers) if err.headers else None
        return JSONResponse(status_code=status, content={"detail": err.detail}, headers=headers)

    guarded = [Depends(require_token)]

    @app.get("/openapi.json", include_in_schema=False, dependencies=guarded)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=guarded)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    @app.get("/redoc", include_in_schema=False, dependencies=guarded)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc")

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health(status="ok", policy_version=str(get_service().policy.version))

    @app.get("/v1/policy", response_model=PolicyInfo, dependencies=[Depends(require_token)])
    async def policy_info() -> PolicyInfo:
        return get_service().info()

    @app.post("/v1/suggest", response_model=SuggestResponse, dependencies=[Depends(require_token)])
    async def suggest(request: SuggestRequest) -> SuggestResponse:
        response = get_service().suggest(request)
        if on_suggest is not None:
            on_suggest(request, response)
        return response

    return BodyLimitMiddleware(app, max_body_bytes, max_header_bytes)


__all__ = [
    "HYPERPARAMETER_NAMES",
    "BodyLimitMiddleware",
    "Health",
    "HyperparameterValues",
    "PolicyInfo",
    "PolicyService",
    "RunSummaryModel",
    "SuggestRequest",
    "SuggestResponse",
    "WorkloadLabels",
    "create_api",
    "hyperparameters_from_wire",
    "resolve_artifact",
]
