"""The ``jpo`` command line: a typer root app whose subcommands live in ``jpo/cli/commands/``.

Errors reach the user as one line on stderr (``error: <what is wrong and how to fix it>``)
and a documented exit code from :func:`jpo.errors.exit_code_for`; ``--debug`` (or
``JPO_DEBUG=1``) adds the traceback. Importing this module stays cheap: subcommand modules
import ray, torch and pyarrow.dataset inside their command functions only.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from jpo import __version__
from jpo.errors import ExitCode, JpoError, exit_code_for

__all__ = ["BROKEN_PIPE_EXIT", "COMMAND_MODULES", "build_app", "checker_main", "main"]

BROKEN_PIPE_EXIT = 141
"""Exit code when stdout's reader closed the pipe (128 + SIGPIPE, as shells report it)."""

COMMAND_MODULES: tuple[str, ...] = (
    "jpo.cli.commands.check",
    "jpo.cli.commands.log",
    "jpo.cli.commands.metrics",
    "jpo.cli.commands.evaluate",
    "jpo.cli.commands.history",
    "jpo.cli.commands.suggest",
    "jpo.cli.commands.feedback",
    "jpo.cli.commands.serve",
    "jpo.cli.commands.train",
    "jpo.cli.commands.simulate",
    "jpo.cli.commands.demo",
    "jpo.cli.commands.init",
)
"""Modules whose ``register(app)`` adds a subcommand; append new commands here."""

_HELP = """JPO, the job-parameter optimizer: suggests better hyperparameters for recurring
training jobs from their Prometheus telemetry, and writes them into config.ini safely.

Exit codes: 0 ok, 1 internal error (rerun with --debug), 2 invalid input, 3 constraint
violation, 4 telemetry, 5 policy, 6 training, 7 write failed, 10/11/12 `jpo suggest` left
config.ini unchanged (by choice / no data / needs approval).
"""


class CommandModuleMissing(JpoError):
    """A module listed in COMMAND_MODULES cannot be imported or has no ``register``."""


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"jpo {__version__}")
        raise typer.Exit()


def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks on errors (or JPO_DEBUG=1).")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="Print results and errors only: no progress, notes, library warnings or "
            "Ray/RLlib logging (`jpo -q <command>`; `jpo <command> -q` works too).",
        ),
    ] = False,
) -> None:
    """JPO: job-parameter optimizer for recurring training workloads."""
    if quiet:
        from jpo.console import quiet_libraries, set_quiet

        set_quiet(True)
        quiet_libraries()


def _register_all(app: typer.Typer, modules: Sequence[str]) -> None:
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and name.startswith(err.name):
                raise CommandModuleMissing(
                    f"command module {name} (listed in COMMAND_MODULES) does not exist; "
                    f"fix: add {name.replace('.', '/')}.py or remove it from COMMAND_MODULES"
                ) from err
            raise
        register = getattr(module, "register", None)
        if not callable(register):
            raise CommandModuleMissing(
                f"command module {name} has no register(app) function; fix: define "
                "`def register(app: typer.Typer) -> None` in it"
            )
        register(app)


def build_app(modules: Sequence[str] | None = None) -> typer.Typer:
    """Return the root ``jpo`` app with every command module registered."""
    app = typer.Typer(
        name="jpo",
        help=_HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_root)
    _register_all(app, COMMAND_MODULES if modules is None else modules)
    return app


def _debug_requested(args: Sequence[str]) -> bool:
    return "--debug" in args or os.environ.get("JPO_DEBUG", "") not in ("", "0")


def _broken_pipe() -> int:
    """The reader of our stdout went away (``jpo log | head``): exit quietly, code 141.

    stdout is pointed at /dev/null so the interpreter's final flush cannot raise again;
    141 (128 + SIGPIPE) is what a shell reports for a process killed by a broken pipe.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return BROKEN_PIPE_EXIT


def _stdout_broken() -> bool:
    """Whether stdout is a pipe whose reader has gone (poll reports an error on it)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _fd, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _quiet_alias(args: list[str]) -> list[str]:
    """Move a ``-q``/``--quiet`` given after the command name to the root (``jpo log -q``).

    Commands that define their own ``--quiet`` (``jpo train``) keep it and also get the
    root's quiet mode.
    """
    if not any(a in ("-q", "--quiet") for a in args[1:]):
        return args
    if "--" in args:
        cut = args.index("--")
        head, tail = args[:cut], args[cut:]
    else:
        head, tail = args, []
    return ["--quiet", *[a for a in head if a not in ("-q", "--quiet")], *tail]


def _invoke(command: Any, args: list[str], prog_name: str, debug: bool) -> int:
    """Run a click command and map every outcome to an exit code (one line on error)."""
    from jpo.console import print_error

    try:
        rv = command.main(args=args, prog_name=prog_name, standalone_mode=False)
    except typer.Exit as err:
        return int(err.exit_code)
    except typer.Abort:
        print_error("aborted")
        return 130
    except typer.TyperException as err:
        # Usage errors (unknown option, missing argument, bad value): exit 2. typer vendors
        # click (typer._click); its ClickException derives from the public TyperException.
        fmt = getattr(err, "format_message", None)
        msg = fmt() if callable(fmt) else str(err)
        print_error(f"{msg} (see `{prog_name} --help`)")
        return int(ExitCode.INVALID_INPUT)
    except KeyboardInterrupt:
        print_error("interrupted")
        return 130
    except BrokenPipeError:
        return _broken_pipe()
    except SystemExit:
        # click turns a broken pipe into sys.exit(1) after swallowing the error
        if _stdout_broken():
            return _broken_pipe()
        raise
    except Exception as err:
        if debug:
            traceback.print_exc()
        code = exit_code_for(err)
        if isinstance(err, JpoError):
            print_error(str(err))
        else:
            print_error(
                f"internal error {type(err).__name__}: {err} "
                "(rerun with --debug and report the traceback)"
            )
        return int(code)
    if isinstance(rv, int) and not isinstance(rv, bool):
        return rv
    return int(ExitCode.OK)


def main(argv: Sequence[str] | None = None, *, prog_name: str = "jpo") -> int:
    """Run the ``jpo`` CLI; return the process exit code (console-script entry point)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(args)
    from jpo.console import print_error

    try:
        app = build_app()
    except JpoError as err:
        if debug:
            traceback.print_exc()
        print_error(str(err))
        return int(exit_code_for(err))
    code = _invoke(typer.main.get_command(app), _quiet_alias(args), prog_name, debug)
    return _flush_quietly(code)


def _flush_quietly(code: int) -> int:
    """Flush stdout now; a broken pipe gives the quiet exit (no 'Exception ignored')."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return _broken_pipe()
    except (OSError, ValueError):
        pass
    return code


def checker_main(argv: Sequence[str] | None = None) -> int:
    """Run ``workload-checker PATH [--json] [--constraints FILE]`` (same as ``jpo check``)."""
    from jpo.cli.commands.check import check_command

    args = list(sys.argv[1:] if argv is None else argv)
    app = typer.Typer(
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.command()(check_command)
    return _invoke(typer.main.get_command(app), args, "workload-checker", _debug_requested(args))


if __name__ == "__main__":
    sys.exit(main())
