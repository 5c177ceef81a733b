"""``jpo serve``: run the policy endpoint (serve/app.py) on this machine with local Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
) -> int:
    """Start Ray locally and serve the policy API until interrupted (Ctrl-C)."""
    _check_port_free(host, port)
    import ray
    from ray import serve

    from serve.app import build_app, default_settings

    settings = default_settings()
    if policy is not None:
        settings["policy_path"] = str(policy.resolve())
    app = build_app(settings)
    ray.init(num_cpus=num_cpus, include_dashboard=False, ignore_reinit_error=True)
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(app, name="jpo", route_prefix="/")
        typer.echo(f"JPO policy endpoint on http://{host}:{port} (Ctrl-C stops it)")
        import time

        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


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
