"""Loopback-only helpers for the HAProxy tests: tiny HTTP backends and a bounded load loop.

Backends answer their own name on / and 200 on /healthz (503 once told to fail). They speak
HTTP/1.0, so every request is its own TCP connection: in TCP mode HAProxy balances connections,
and a drained server must see its connections end.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_port_range(count: int, host: str = "127.0.0.1", low: int = 20000, high: int = 40000) -> int:
    """The first port of ``count`` consecutive ports that are free right now."""
    import random

    for _ in range(200):
        start = random.randrange(low, high - count)
        socks = []
        try:
            for p in range(start, start + count):
                s = socket.socket()
                socks.append(s)
                s.bind((host, p))
            return start
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports")


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # HAProxy's health checks close with a reset once they have the status line.
        return


class Backend:
    """One member: an HTTP server on 127.0.0.x answering its own name."""

    def __init__(self, name: str, address: str, port: int = 0) -> None:
        self.name = name
        self.healthy = True
        self.hits = 0
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path == "/healthz":
                    code, body = (200, b"ok\n") if backend.healthy else (503, b"failing\n")
                else:
                    backend.hits += 1
                    code, body = 200, (backend.name + "\n").encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

        self.server = _QuietServer((address, port), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 128
        self.address = address
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def get(host: str, port: int, path: str = "/", timeout: float = 3.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode().strip()
    finally:
        conn.close()


class Load:
    """``threads`` clients sending requests back to back, for at most ``max_seconds``.

    Counts successes (HTTP 200 with a backend name), failures (anything else, including resets
    and timeouts) and which backends answered.
    """

    def __init__(
        self, host: str, port: int, *, threads: int = 3, max_seconds: float = 30.0, pause_s: float = 0.002
    ) -> None:
        self.host = host
        self.port = port
        self.max_seconds = max_seconds
        self.pause_s = pause_s
        self.ok = 0
        self.failed = 0
        self.errors: Counter[str] = Counter()
        self.seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    @property
    def sent(self) -> int:
        return self.ok + self.failed

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                status, body = get(self.host, self.port)
                good = status == 200 and bool(body)
                err = "" if good else f"HTTP {status}"
            except OSError as exc:
                good, body, err = False, "", type(exc).__name__
            except http.client.HTTPException as exc:
                good, body, err = False, "", type(exc).__name__
            with self._lock:
                if good:
                    self.ok += 1
                    self.seen[body] += 1
                else:
                    self.failed += 1
                    self.errors[err] += 1
            if self.pause_s:
                time.sleep(self.pause_s)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.seen)
