"""Progress lines for the simulator's long loops (oracle searches, replay building)."""

from __future__ import annotations

import logging
import time

__all__ = ["PROGRESS_EVERY_S", "ProgressLog"]

PROGRESS_EVERY_S = 10.0
"""Seconds between progress lines of one loop (the last item always gets one)."""


class ProgressLog:
    """Log ``<what> k/n<unit> (t s)`` at most every :data:`PROGRESS_EVERY_S`, and at the end."""

    def __init__(self, logger: logging.Logger, what: str, total: int, unit: str = "") -> None:
        self.logger, self.what, self.total, self.unit = logger, what, total, unit
        self.start = self.last = time.monotonic()

    def step(self, done: int) -> None:
        """Note that ``done`` of ``total`` items are finished."""
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S or done == self.total:
            self.last = now
            self.logger.info(
                "%s %d/%d%s (%.0f s)", self.what, done, self.total, self.unit, now - self.start
            )
