"""``jpo serve``: run the policy endpoint (jpo/serving/app.py) on local Ray or a running cluster."""

from __future__ import annotations

import logging
import signal
import time
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
            ray.init(address=address, ignore_reinit_error=True)
        # After ray.init: its failure-signal handler (which aborts the process on SIGTERM,
        # leaving the agents behind) is replaced by one that unwinds to `finally`.
        signal.signal(signal.SIGTERM, _raise_interrupt)
        serve.start(http_options={"host": host, "port": port}, logging_config=logging_config)
        serve.run(app, name=APP_NAME, route_prefix="/", logging_config=logging_config)
        where = "this machine" if address is None else address
        typer.echo(f"JPO policy endpoint on http://{host}:{port} (Ray: {where}; Ctrl-C stops it)")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)  # a second SIGTERM ends the process at once
        _shutdown(ray, serve, shared=address is not None)
    return 0


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


def _shutdown(ray: Any, serve: Any, *, shared: bool) -> None:
    """Stop what ``jpo serve`` started: the app on a shared cluster, else Serve and Ray."""
    if not ray.is_initialized():
        return
    if shared:
        serve.delete(APP_NAME)  # leave the cluster's other apps and Serve itself running
    else:
        serve.shutdown()
    ray.shutdown()  # local: stops raylet, GCS, dashboard agent, runtime-env agent


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
