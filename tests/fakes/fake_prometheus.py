"""A tiny local HTTP stub that answers like Prometheus, for faults a real server won't make.

``FakePrometheus(mode)`` listens on 127.0.0.1 (free port); ``mode`` picks the answer:
``ok``, ``empty``, ``warnings``, ``nan``, ``inf``, ``neginf``, ``hang`` (sleeps past the
client's timeout), ``503``, ``500``, ``400``, ``422``, ``401``, ``not_json``, ``scalar``,
``flaky`` (503 for the first ``fail_first`` requests, then ``ok``). It counts requests.
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
        raise ValueError(f"unknown mode {mode!r}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
