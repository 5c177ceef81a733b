"""Shared terminal output: one rich console per stream, and the one-line error format."""

from __future__ import annotations

from functools import lru_cache

from rich.console import Console

__all__ = ["err_console", "out_console", "print_error"]


@lru_cache(maxsize=1)
def out_console() -> Console:
    """Return the stdout console (no markup, no wrapping of long lines)."""
    return Console(soft_wrap=True, highlight=False)


@lru_cache(maxsize=1)
def err_console() -> Console:
    """Return the stderr console (no markup, no wrapping of long lines)."""
    return Console(stderr=True, soft_wrap=True, highlight=False)


def print_error(message: str, *, prefix: str = "error") -> None:
    """Print ``<prefix>: <message>`` as one line on stderr (newlines folded, markup off)."""
    text = " ".join(str(message).split("\n")).strip() or "unknown error"
    err_console().print(f"{prefix}: {text}", markup=False, style="bold red")
