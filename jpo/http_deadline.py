"""An httpx transport with a TOTAL deadline per call, not only a timeout per socket read.

httpx's timeouts apply to each connect, read and write separately: a server that sends
one byte per second never trips a 3 s read timeout and can hold a client for as long as
it likes (issue 26: 93 s with a 3 s timeout). :class:`DeadlineTransport` runs httpcore's
connection pool on a network backend whose every socket operation is given only the time
left before the caller's deadline, and fails with ``httpx.ReadTimeout`` (or
``ConnectTimeout``/``WriteTimeout``) once it has passed, whatever the server drips:
status line, headers and body alike. The deadline is per thread (:func:`deadline`), so
one pooled client serves concurrent calls, each with its own.

Usage::

    client = httpx.Client(transport=DeadlineTransport(), timeout=3.0)
    with deadline(3.0):
        response = client.post(url, data=...)   # raises httpx.TimeoutException by t+3 s
        body = response.read()

Outside a ``deadline`` block the transport behaves like httpx's own. The overshoot is at
most one socket operation's scheduling latency (milliseconds), not one read timeout.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore
import httpx

__all__ = ["DeadlineTransport", "deadline", "time_left"]

_local = threading.local()


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[float]:
    """Give every socket operation of this thread's HTTP calls ``seconds`` in total."""
    previous = getattr(_local, "deadline", None)
    end = time.monotonic() + seconds
    if previous is not None:
        end = min(end, previous)
    _local.deadline = end
    try:
        yield end
    finally:
        _local.deadline = previous


def time_left() -> float | None:
    """Seconds left before this thread's deadline (None outside :func:`deadline`)."""
    end = getattr(_local, "deadline", None)
    return None if end is None else end - time.monotonic()


def _budget(timeout: float | None, error: type[Exception]) -> float | None:
    """Return the timeout to give one socket operation, or raise ``error`` when none is left."""
    left = time_left()
    if left is None:
        return timeout
    if left <= 0:
        raise error("the call's total deadline has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose reads and writes never outlast the thread's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Read at most ``max_bytes`` within the time left."""
        return self._inner.read(max_bytes, _budget(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Write ``buffer`` within the time left."""
        self._inner.write(buffer, _budget(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        """Close the socket."""
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        """Upgrade to TLS within the time left."""
        budget = _budget(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, budget))

    def get_extra_info(self, info: str) -> Any:
        """Pass through (socket, TLS details)."""
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's sync backend with every stream wrapped in :class:`_DeadlineStream`."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        """Connect within the time left."""
        budget = _budget(timeout, httpcore.ConnectTimeout)
        stream = self._inner.connect_tcp(host, port, budget, local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        """Connect within the time left."""
        budget = _budget(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, budget, socket_options))

    def sleep(self, seconds: float) -> None:
        """Sleep (httpcore's retry pause)."""
        self._inner.sleep(seconds)


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    """Re-raise httpcore's exceptions as httpx's namesakes (httpx does the same)."""
    try:
        yield
    except httpcore.TimeoutException as err:
        kind = getattr(httpx, type(err).__name__, httpx.TimeoutException)
        raise kind(str(err) or "timed out") from err
    except httpcore.NetworkError as err:
        kind = getattr(httpx, type(err).__name__, httpx.NetworkError)
        raise kind(str(err)) from err
    except (httpcore.ProtocolError, httpcore.UnsupportedProtocol, httpcore.ProxyError) as err:
        kind = getattr(httpx, type(err).__name__, httpx.TransportError)
        raise kind(str(err)) from err


class _Body(httpx.SyncByteStream):
    """The response body, with httpcore's errors mapped while it streams."""

    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        """Yield the body's chunks."""
        with _mapped():
            yield from self._stream

    def close(self) -> None:
        """Release the connection."""
        closer = getattr(self._stream, "close", None)
        if closer is not None:
            with _mapped():
                closer()


class DeadlineTransport(httpx.BaseTransport):
    """An HTTP(S) transport whose calls honour :func:`deadline` (module docstring)."""

    def __init__(self, *, verify: bool = True) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            network_backend=_DeadlineBackend(),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request through the pool."""
        assert isinstance(request.stream, httpx.SyncByteStream)
        req = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _mapped():
            resp = self._pool.handle_request(req)
        assert isinstance(resp.stream, Iterable)
        return httpx.Response(
            status_code=resp.status,
            headers=resp.headers,
            stream=_Body(resp.stream),
            extensions=resp.extensions,
        )

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.close()
