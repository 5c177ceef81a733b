"""``jpo serve``: run the policy endpoint (jpo/serving/app.py) on local Ray or a running cluster."""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to the root CLI."""
    app.command("serve")(serve_command)


def serve_command(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="HTTP port.")] = 8000,
    policy: Annotated[
        Path | None,
        typer.Option("--policy", help="Policy artifact or versions folder (default: bundled)."),
    ] = None,
    num_cpus: Annotated[
        int | None, typer.Option("--num-cpus", min=1, help="CPUs for local Ray (default: all).")
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="Deploy on a running Ray cluster (ray://host:10001, or auto for the one on "
            "this node) instead of starting a local one.",
        ),
    ] = None,
    log_level: Annotated[
        str,
        typer.Option(
            "--log-level",
            help="Serve log level (debug, info, warning); request (access) logs at debug only.",
        ),
    ] = "info",
) -> int:
    """Serve the policy API until interrupted (Ctrl-C or SIGTERM), then shut down cleanly.

    Without ``--address`` a local Ray is started and stopped with its every process; with
    it, the app is deployed on that cluster and deleted from it on exit.
    """
    logging_config = _logging_config(log_level)
    if address is None:
        _check_port_free(host, port)
    else:
        _check_cluster_reachable(address)
    import ray
    from ray import serve

    from jpo.console import is_quiet, quiet_libraries
    from jpo.serving.app import build_app, default_settings

    quiet_libraries()  # Ray configured its loggers on import: silence them again under -q

    settings = default_settings()
    if policy is not None:
        settings["policy_path"] = str(policy.resolve())
    app = build_app(settings)
    previous = signal.getsignal(signal.SIGTERM)
    state = _Deployment(address)
    try:
        if address is None:
            # address="local": always a new Ray of its own, never a cluster that
            # `ray start` left running on this machine (ray.init() would join that one).
            ray.init(
                address="local",
                num_cpus=num_cpus,
                include_dashboard=False,
                ignore_reinit_error=True,
                logging_level=logging.ERROR if is_quiet() else logging.INFO,
                log_to_driver=not is_quiet(),
            )
        else:
            _join_cluster(ray, address)
        # After ray.init: its failure-signal handler (which aborts the process on SIGTERM,
        # leaving the agents behind) is replaced by one that unwinds to `finally`.
        signal.signal(signal.SIGTERM, _raise_interrupt)
        _deploy(ray, serve, app, state, {"host": host, "port": port}, logging_config)
        typer.echo(_ready_message(state, host, port))
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)  # a second SIGTERM ends the process at once
        _shutdown(ray, serve, state)
    return 0


@dataclass
class _Deployment:
    """What ``jpo serve`` started, filled in as it goes, for :func:`_shutdown` to stop."""

    address: str | None  # None: a local Ray of its own
    started_serve: bool = False  # Serve's controller and proxy are this process's
    deployed: bool = False  # the app was (being) deployed by this process


def _deploy(
    ray: Any,
    serve: Any,
    app: Any,
    state: _Deployment,
    http_options: dict[str, Any],
    logging_config: dict[str, object],
) -> None:
    """Start Serve (unless the cluster runs it) and deploy the app as :data:`APP_NAME`.

    On a cluster whose Serve already runs an app of that name (a RayService's, or one a
    killed ``jpo serve`` left), refuse: deploying would replace it and exiting delete it.
    """
    from jpo.errors import ConfigError

    state.started_serve = state.address is None or not _serve_running(ray)
    if not state.started_serve and APP_NAME in serve.status().applications:
        raise ConfigError(
            f"--address {state.address!r}: the cluster's Serve already runs an application "
            f"named {APP_NAME!r} (a RayService's, or one a killed `jpo serve` left); jpo serve "
            "would replace it and delete it on exit. Query that endpoint instead, or remove "
            "the application first (`serve shutdown --address <dashboard URL>` removes every "
            "application of that Serve)"
        )
    serve.start(http_options=http_options, logging_config=logging_config)
    state.deployed = True
    serve.run(app, name=APP_NAME, route_prefix="/", logging_config=logging_config)


def _ready_message(state: _Deployment, host: str, port: int) -> str:
    """Say where the endpoint listens (on a cluster: its nodes, with Serve's HTTP options)."""
    if state.address is None:
        return f"JPO policy endpoint on http://{host}:{port} (Ray: this machine; Ctrl-C stops it)"
    where = (
        f"{host}:{port} on the cluster's nodes"
        if state.started_serve
        else "the port of the Serve already running there (--host/--port do not apply)"
    )
    return (
        f"JPO policy endpoint deployed on the Ray cluster at {state.address}, listening at "
        f"{where}; SIGTERM or Ctrl-C deletes it and leaves the cluster running"
    )


APP_NAME = "jpo"
"""Name of the Serve application ``jpo serve`` deploys."""

_LOG_LEVELS = {"debug": "DEBUG", "info": "INFO", "warning": "WARNING"}


def _logging_config(level: str) -> dict[str, object]:
    """Return Ray Serve's logging config: access logs (one line per request) only at debug."""
    from jpo.errors import ConfigError

    name = _LOG_LEVELS.get(level.lower())
    if name is None:
        raise ConfigError(f"--log-level {level!r}: use one of {', '.join(_LOG_LEVELS)}")
    return {"log_level": name, "enable_access_log": name == "DEBUG"}


def _raise_interrupt(signum: int, frame: object) -> None:
    """SIGTERM handler: unwind like Ctrl-C, so the ``finally`` clause stops Ray."""
    raise KeyboardInterrupt


def _shutdown(ray: Any, serve: Any, state: _Deployment) -> None:
    """Stop what ``jpo serve`` started: its app, Serve if it started it, and local Ray.

    On a shared cluster (``--address``) the app is deleted; Serve's controller and proxy
    go too when this process started them and no other application runs on them, so no
    actor of JPO's outlives it there. The cluster itself keeps running.
    """
    if not ray.is_initialized():
        return
    if state.address is None:
        serve.shutdown()
    elif state.deployed and _serve_running(ray):
        serve.delete(APP_NAME)  # leave the cluster's other apps running
        if state.started_serve and not serve.status().applications:
            serve.shutdown()
    ray.shutdown()  # local: stops raylet, GCS, dashboard agent, runtime-env agent


def _serve_running(ray: Any) -> bool:
    """Return whether the connected Ray cluster runs a Serve controller.

    (``serve.status()`` cannot tell: it answers an empty status when Serve is not running.)
    """
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:  # no such actor
        return False
    return True


CONNECT_TIMEOUT_S = 10.0
"""Seconds ``jpo serve --address`` waits for a TCP connection to the cluster before it
gives up (Ray itself would retry for ever, printing a warning every few seconds)."""

_ADDRESS_FIX = (
    "pass the head's GCS address host:6379 (`jpo serve` running on a node of the cluster) or "
    "its Ray Client address ray://host:10001 (KubeRay: ray://<cluster>-head-svc:10001), or "
    "--address auto on a node where `ray start` runs"
)


def _check_cluster_reachable(address: str) -> None:
    """Raise when ``--address`` is malformed (ConfigError) or nothing listens there.

    An unreachable address is a PolicyError (exit 5: the endpoint cannot be served); the
    message names the address and what to pass instead.
    """
    import socket

    from jpo.errors import ConfigError, PolicyError

    if address == "auto":
        return  # Ray resolves it (RAY_ADDRESS or this node's `ray start`); see _join_cluster
    target = address.removeprefix("ray://")
    if "://" in target:
        raise ConfigError(
            f"--address {address!r}: not a Ray cluster address (an http:// URL is the "
            f"dashboard's or an endpoint's); {_ADDRESS_FIX}"
        )
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address!r}: expected host:port; {_ADDRESS_FIX}")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        raise PolicyError(
            f"--address {address!r}: no Ray cluster answers at {host}:{port} "
            f"({err.strerror or err}); start it (`ray start --head`) or check the address: "
            f"{_ADDRESS_FIX}"
        ) from err


def _join_cluster(ray: Any, address: str) -> None:
    """Connect to the running cluster at ``address``; PolicyError (exit 5) if Ray cannot.

    The replicas run in the cluster's processes, not under this one's environment, so the
    API token settings given to ``jpo serve`` travel in the job's runtime env (the
    replicas inherit it); without this the API would be open however it was started.
    """
    import os

    from jpo.errors import PolicyError
    from jpo.serving.auth import TOKEN_ENV, TOKEN_FILE_ENV

    env_vars = {
        name: os.environ[name] for name in (TOKEN_ENV, TOKEN_FILE_ENV) if name in os.environ
    }
    try:
        ray.init(
            address=address,
            ignore_reinit_error=True,
            runtime_env={"env_vars": env_vars} if env_vars else None,
        )
    except (ConnectionError, RuntimeError) as err:
        raise PolicyError(
            f"--address {address!r}: cannot join the Ray cluster ({err}); with token auth "
            "(Ray >= 2.52, the KubeRay stack) set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN to "
            f"the cluster's token; else check the address: {_ADDRESS_FIX}"
        ) from err


def _check_port_free(host: str, port: int) -> None:
    """Raise ConfigError (exit 2) when ``host:port`` cannot be bound, before Ray starts.

    Otherwise Serve's proxy actor fails to bind deep inside Ray, after a slow start, with
    a multi-line actor traceback.
    """
    import socket

    from jpo.errors import ConfigError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as err:
        raise ConfigError(f"--host {host!r}: cannot resolve it ({err}); pass an address") from err
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as err:
            raise ConfigError(
                f"cannot listen on http://{host}:{port} ({err.strerror or err}): the port is in"
                " use or not allowed; pass another --port, or stop the process holding it"
            ) from err
