"""The HTTP edge: ``/metrics`` (Prometheus), ``/healthz`` (alive), ``/readyz`` (streaming)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from invalidator.core.placement import parse_server
from invalidator.runtime.metrics import Metrics
from invalidator.runtime.telemetry import Health

STALL_SECONDS = 30.0  # the loop has not turned for this long: not alive


class HttpServer:
    """Serves the endpoints on a daemon thread."""

    def __init__(self, listen: str, metrics: Metrics, health: Health):
        host, port = parse_server(listen, listen=True)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.metrics = metrics
        self.health = health
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        if path == "/metrics":
            body = generate_latest(self.metrics.registry)
            self._reply(request, 200, body, CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            alive = time.monotonic() - self.health.last_loop < STALL_SECONDS
            self._reply(request, 200 if alive else 503, b"ok\n" if alive else b"stalled\n")
        elif path == "/readyz":
            problems = "".join(
                f"started with a failed check (--lenient): {p}\n" for p in self.health.problems
            )
            if self.health.streaming:
                self._reply(request, 200, f"streaming\n{problems}".encode())
            else:
                reason = self.health.last_error or "not streaming"
                self._reply(request, 503, f"not streaming: {reason}\n{problems}".encode())
        else:
            self._reply(request, 404, b"not found\n")

    @staticmethod
    def _reply(
        request: BaseHTTPRequestHandler,
        code: int,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
    ) -> None:
        request.send_response(code)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)
