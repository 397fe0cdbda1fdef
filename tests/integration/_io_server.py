"""A local HTTP server with injected latency, for the I/O-stage tests and the example.

``GET /item/N`` answers ``N`` after ``latency`` seconds; ``/flaky/KEY`` drops the connection
on the first request for KEY (the client sees a ConnectionError) and answers after that;
``/slow/S`` answers after S seconds. Each request's arrival time is recorded, and the most
requests it ever served at once (``peak``).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # the listen backlog: a full one drops connections (1 s SYN retries)


class LatencyServer:
    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.arrivals: list[tuple[float, str]] = []
        self._seen: set[str] = set()
        self.active = 0
        self.peak = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:
                server.record(self.path, +1)
                try:
                    self._answer()
                finally:
                    server.record(None, -1)

            def _answer(self) -> None:
                if self.path.startswith("/flaky/") and server.first(self.path):
                    self.close_connection = True
                    self.connection.close()
                    return
                slow = self.path.startswith("/slow/")
                server._closing.wait(float(self.path[6:]) if slow else server.latency)  # cut short on close
                body = self.path.rsplit("/", 1)[-1].encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                """Quiet: hundreds of requests per test."""

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def record(self, path: str | None, step: int) -> None:
        with self._lock:
            if path is not None:
                self.arrivals.append((time.monotonic(), path))
            self.active += step
            self.peak = max(self.peak, self.active)

    def count(self, prefix: str) -> int:
        with self._lock:
            return sum(1 for _, path in self.arrivals if path.startswith(prefix))

    def first(self, path: str) -> bool:
        with self._lock:
            fresh = path not in self._seen
            self._seen.add(path)
            return fresh

    def __enter__(self) -> LatencyServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
