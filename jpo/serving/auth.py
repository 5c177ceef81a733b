"""Optional bearer-token auth for the Serve app.

The token comes from the environment variable ``JPO_SERVE_TOKEN`` or from a secret file
(a Kubernetes secret mounted as a file; path from ``JPO_SERVE_TOKEN_FILE`` or the
``token_file`` setting). With neither, auth is off. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from jpo.errors import ConfigError

TOKEN_ENV = "JPO_SERVE_TOKEN"
TOKEN_FILE_ENV = "JPO_SERVE_TOKEN_FILE"


def load_token(token_file: str | None = None) -> str | None:
    """Return the expected bearer token, or None when auth is disabled.

    Precedence: ``JPO_SERVE_TOKEN``, then ``JPO_SERVE_TOKEN_FILE``, then ``token_file``.
    """
    value = os.environ.get(TOKEN_ENV, "").strip()
    if value:
        return value
    path = os.environ.get(TOKEN_FILE_ENV) or token_file
    if not path:
        return None
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as err:
        raise ConfigError(
            f"{path}: cannot read the Serve token file ({err.strerror}); fix the path in "
            f"{TOKEN_FILE_ENV} / token_file or unset it to disable auth"
        ) from err
    if not value:
        raise ConfigError(f"{path}: the Serve token file is empty; put the token in it")
    return value


def authorized(header: str | None, expected: str | None) -> bool:
    """Return whether an ``Authorization`` header carries the expected bearer token."""
    if expected is None:
        return True
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())
