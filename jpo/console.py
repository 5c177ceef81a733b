"""Shared terminal output: one rich console per stream, and the one-line error format.

Every console JPO prints through has rich's markup and emoji codes off: user and config
text (paths, reasons, workload names) is printed as written, so ``[rollback]`` or ``:x:``
in a path or a reason never turns into a style or an emoji. ``-q`` (:func:`set_quiet`)
silences progress and notes on both consoles; results and errors still print.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from rich.console import Console

__all__ = [
    "err_console",
    "is_quiet",
    "out_console",
    "plain_console",
    "print_error",
    "print_note",
    "quiet_libraries",
    "set_quiet",
    "text_table",
]

_QUIET = {"on": False}


class _PlainConsole(Console):
    """A rich Console that lets a broken pipe surface as BrokenPipeError (jpo.cli.app maps it).

    rich's default exits with status 1 on its own; the CLI exits 141 instead, quietly.
    """

    def on_broken_pipe(self) -> None:
        """Raise BrokenPipeError for jpo.cli.app to handle."""
        self.quiet = True
        raise BrokenPipeError


def plain_console(*, stderr: bool = False, width: int | None = None) -> Console:
    """Return a console that never interprets markup, emoji codes or highlights."""
    return _PlainConsole(
        stderr=stderr,
        width=width,
        soft_wrap=width is None,
        highlight=False,
        markup=False,
        emoji=False,
    )


@lru_cache(maxsize=1)
def out_console() -> Console:
    """Return the stdout console (no markup, no emoji, no wrapping of long lines)."""
    return plain_console()


@lru_cache(maxsize=1)
def err_console() -> Console:
    """Return the stderr console (no markup, no emoji, no wrapping of long lines)."""
    return plain_console(stderr=True)


def set_quiet(quiet: bool) -> None:
    """Turn quiet mode on or off (``jpo -q``): notes and progress are not printed."""
    _QUIET["on"] = bool(quiet)


def is_quiet() -> bool:
    """Whether ``-q`` asked for quiet output."""
    return _QUIET["on"]


def print_note(message: str) -> None:
    """Print a note (progress, hints, deprecations) on stderr unless quiet."""
    if not _QUIET["on"]:
        _flush_stdout()
        err_console().print(message, markup=False, emoji=False, highlight=False)


def _flush_stdout() -> None:
    """Flush stdout so a note on stderr lands after what was printed before it."""
    import contextlib
    import sys

    with contextlib.suppress(OSError, ValueError):  # a closed pipe: jpo.cli.app handles it
        sys.stdout.flush()


def print_error(message: str, *, prefix: str = "error") -> None:
    """Print ``<prefix>: <message>`` as one line on stderr (newlines folded, markup off)."""
    text = " ".join(str(message).split("\n")).strip() or "unknown error"
    _flush_stdout()
    err_console().print(f"{prefix}: {text}", markup=False, emoji=False, style="bold red")


_LIBRARY_LOGGERS = ("ray", "ray.rllib", "ray.tune", "ray.serve", "ray.data", "torch", "py.warnings")


def quiet_libraries() -> None:
    """Silence library chatter in quiet mode: warnings, and Ray/RLlib/Tune logging.

    Called by ``jpo -q`` before a command runs and again after Ray is imported (Ray
    configures its own loggers on import). Child processes inherit the environment
    variables (Ray workers, simulated pods).
    """
    import logging
    import os
    import warnings

    if not _QUIET["on"]:
        return
    warnings.simplefilter("ignore")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")
    os.environ.setdefault("RAY_LOG_TO_DRIVER", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    logging.getLogger().setLevel(logging.ERROR)
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def text_table(
    columns: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[str] = ()
) -> list[str]:
    """Return a plain-text table (header, rule, one line per row); ``right`` columns align right.

    No wrapping and no markup: each row stays one line, whatever the terminal's width.
    """
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    align_right = {columns.index(c) for c in right if c in columns}

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if i in align_right else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return [line(columns), line(["-" * w for w in widths]), *(line(r) for r in rows)]
