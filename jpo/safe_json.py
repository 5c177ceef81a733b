"""JSON parsing with a bound on nesting depth, checked before the parser recurses.

Python's ``json`` parser recurses once per ``[``/``{``: a document nested 50,000 levels
deep raises ``RecursionError`` (or worse) instead of a clean error. :func:`loads_bounded`
measures the depth first, with one regular-expression pass that skips string contents,
and refuses a deeper document with a ``ValueError`` the caller turns into its own error.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["JsonDepthError", "json_depth", "loads_bounded"]

_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)
"""A string literal (its brackets do not count; an unterminated one runs to the end) or a
bracket."""


class JsonDepthError(ValueError):
    """A JSON document nests deeper than allowed."""


def json_depth(text: str, limit: int | None = None) -> int:
    """Return the deepest nesting of ``[``/``{`` in ``text`` (stops early past ``limit``)."""
    depth = deepest = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if limit is not None and deepest > limit:
                    return deepest
        elif token in "]}":
            depth -= 1
    return deepest


def loads_bounded(text: str, *, max_depth: int, allow_constants: bool = False) -> Any:
    """Parse ``text`` as JSON; raise JsonDepthError when it nests deeper than ``max_depth``.

    Also raises ``json.JSONDecodeError`` (a ValueError) for malformed JSON; ``NaN`` and
    ``Infinity`` literals are refused too (they are not JSON) unless ``allow_constants``
    (the caller then checks finiteness itself, with its own message).
    """
    depth = json_depth(text, max_depth)
    if depth > max_depth:
        raise JsonDepthError(f"JSON nested more than {max_depth} levels deep")
    if allow_constants:
        return json.loads(text)
    return json.loads(text, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
