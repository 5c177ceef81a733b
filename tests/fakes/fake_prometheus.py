"""A tiny local HTTP stub that answers like Prometheus, for faults a real server won't make.

``FakePrometheus(mode)`` listens on 127.0.0.1 (free port); ``mode`` picks the answer:
``ok``, ``empty``, ``warnings``, ``nan``, ``inf``, ``neginf``, ``hang`` (sleeps past the
client's timeout), ``503``, ``500``, ``400``, ``422``, ``401``, ``not_json``, ``scalar``,
``flaky`` (503 for the first ``fail_first`` requests, then ``ok``), and corrupt answers
a real Prometheus never sends: ``abc`` (a sample value that is not a number),
``novalue`` (a pair without a value), ``badshape`` (a value that is a list),
``notlist`` (``result`` is an object), ``deep`` (JSON nested 100,000 levels). It
counts requests.

:class:`CorruptingProxy` forwards to a real Prometheus but answers one query (matched by a
substring of its PromQL) with a corrupt body; :class:`DripServer` answers any request
correctly, one byte at a time (status line and headers included), to test deadlines.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SERIES_LABELS = {
    "label_dataset": "cifar10",
    "label_model": "resnet18",
    "label_framework": "pytorch",
    "label_run_id": "r1",
}


def _matrix(values: list[str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    pairs = [[1_700_000_000 + 15 * i, v] for i, v in enumerate(values)]
    return {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [{"metric": labels or SERIES_LABELS, "values": pairs}],
        },
    }


def _corrupt(pairs: Any) -> dict[str, Any]:
    body = _matrix(["0.5"])
    body["data"]["result"][0]["values"] = pairs
    return body


CORRUPT: dict[str, Any] = {
    "abc": _corrupt([[1_700_000_000, "0.5"], [1_700_000_015, "abc"]]),
    "novalue": _corrupt([[1_700_000_000, "0.5"], [1_700_000_015]]),
    "badshape": _corrupt([[1_700_000_000, ["0.5", "0.6"]]]),
    "notlist": {"status": "success", "data": {"resultType": "matrix", "result": {"a": 1}}},
}
"""Corrupt 200 answers, by mode name (a real Prometheus cannot be made to send them)."""


class FakePrometheus:
    """Prometheus-shaped HTTP stub with a switchable failure mode."""

    def __init__(self, mode: str = "ok", *, fail_first: int = 2, hang_s: float = 5.0) -> None:
        self.mode = mode
        self.fail_first = fail_first
        self.hang_s = hang_s
        self.requests = 0
        self.last_form: dict[str, list[str]] = {}
        self.last_headers: dict[str, str] = {}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                from urllib.parse import parse_qs, urlparse

                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                form = parse_qs(body) | parse_qs(urlparse(self.path).query)
                stub.requests += 1
                stub.last_form = form
                stub.last_headers = dict(self.headers)
                status, payload = stub.respond(stub.requests)
                if payload is None:
                    return
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = _answer
            do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def respond(self, n: int) -> tuple[int, Any]:
        """Return (HTTP status, JSON payload or raw bytes) for the ``n``-th request."""
        mode = self.mode
        if mode == "flaky":
            mode = "503" if n <= self.fail_first else "ok"
        if mode == "ok":
            return 200, _matrix(["0.5", "0.6", "0.7", "0.8"])
        if mode == "empty":
            return 200, {"status": "success", "data": {"resultType": "matrix", "result": []}}
        if mode == "warnings":
            body = _matrix(["0.5", "0.6"])
            body["warnings"] = ["remote read: store gateway eu-1 unavailable"]
            return 200, body
        if mode in ("nan", "inf", "neginf"):
            bad = {"nan": "NaN", "inf": "+Inf", "neginf": "-Inf"}[mode]
            return 200, _matrix(["0.5", bad, "0.7"])
        if mode == "hang":
            time.sleep(self.hang_s)
            return 200, _matrix(["0.5"])
        if mode == "scalar":
            return 200, {"status": "success", "data": {"resultType": "string", "result": [1, "x"]}}
        if mode == "not_json":
            return 200, b"<html>not prometheus</html>"
        if mode in ("400", "422"):
            return int(mode), {
                "status": "error",
                "errorType": "bad_data",
                "error": 'parse error: unexpected "}"',
            }
        if mode == "503":
            return 503, {"status": "error", "errorType": "timeout", "error": "query timed out"}
        if mode == "500":
            return 500, {"status": "error", "errorType": "internal", "error": "boom"}
        if mode == "401":
            return 401, b"Unauthorized"
        if mode in CORRUPT:
            return 200, CORRUPT[mode]
        if mode == "deep":
            return 200, b'{"status": "success", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        raise ValueError(f"unknown mode {mode!r}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class CorruptingProxy:
    """Forward every request to ``upstream`` except queries containing ``match``.

    Those are answered with ``CORRUPT[mode]`` (e.g. the optional GPU-count query).
    """

    def __init__(self, upstream: str, match: str, mode: str = "abc") -> None:
        import urllib.request
        from urllib.parse import parse_qs

        proxy = self
        self.hits = 0

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                query = " ".join(parse_qs(body.decode()).get("query", []))
                if match in query:
                    proxy.hits += 1
                    status, data = 200, json.dumps(CORRUPT[mode]).encode()
                else:
                    req = urllib.request.Request(upstream + self.path, data=body, method="POST")
                    req.add_header("Content-Type", "application/x-www-form-urlencoded")
                    with urllib.request.urlopen(req, timeout=30) as answer:
                        status, data = answer.status, answer.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class DripServer:
    """A loopback HTTP server that sends a correct answer one byte every ``interval_s``.

    Status line, headers and body are all dripped, so no per-read timeout ever expires:
    only a total deadline stops a client. ``sent`` counts the bytes written; a client that
    gives up early leaves ``sent`` below ``total`` (the size of the full answer).
    """

    def __init__(self, body: bytes | None = None, *, interval_s: float = 0.05) -> None:
        import socket

        self.body = body if body is not None else json.dumps(_matrix(["0.5"] * 8)).encode()
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(self.body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        self.answer = head + self.body
        self.total = len(self.answer)
        self.sent = 0
        self.interval_s = interval_s
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: Any) -> None:
        with conn:
            conn.settimeout(5.0)
            try:
                conn.recv(65536)  # the request (small: one read is enough here)
                for i in range(self.total):
                    if self._stop.is_set():
                        return
                    conn.sendall(self.answer[i : i + 1])
                    self.sent += 1
                    time.sleep(self.interval_s)
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
