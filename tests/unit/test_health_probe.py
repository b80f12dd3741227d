"""Rich health states from one probe, against a real HTTP server on 127.0.0.1: the status code
and the ``ApplicationHealthState`` body decide; nothing answering is unknown, not unhealthy."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from localvmss.health import probe_once, state_of_http
from localvmss.spec import HealthProbeModel

ANSWERS: dict[str, tuple[int, bytes]] = {}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        status, body = ANSWERS[self.path]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize(
    ("status", "body", "state"),
    [
        (200, b'{"ApplicationHealthState": "Healthy"}', "healthy"),
        (200, b'{"ApplicationHealthState": "Unhealthy"}', "unhealthy"),
        (200, b'{"ApplicationHealthState": "unhealthy"}', "unhealthy"),  # the value in any case
        (200, b'{"applicationhealthstate": "UNHEALTHY"}', "unhealthy"),
        (204, b"", "healthy"),
        (200, b"ok", "healthy"),  # binary health: a 2xx without the field is healthy
        (200, b'{"status": "Unhealthy"}', "healthy"),
        (200, b'["Unhealthy"]', "healthy"),
        (200, b'{"ApplicationHealthState": "Degraded"}', "healthy"),
        (200, b"\xff\xfe", "healthy"),
        (500, b'{"ApplicationHealthState": "Healthy"}', "unhealthy"),  # non-2xx: the body is not read
        (404, b"", "unhealthy"),
        (301, b"", "unhealthy"),
    ],
)
def test_http_answers(server: int, status: int, body: bytes, state: str) -> None:
    path = f"/case-{status}-{abs(hash(body))}"
    ANSWERS[path] = (status, body)
    result = probe_once("127.0.0.1", HealthProbeModel(protocol="http", port=server, path=path))
    assert result.state == state
    assert state_of_http(status, body) == state
    assert str(status) in result.seen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_nothing_listening_is_unknown() -> None:
    for protocol in ("http", "tcp"):
        result = probe_once("127.0.0.1", HealthProbeModel(protocol=protocol, port=free_port()))
        assert (result.state, result.healthy) == ("unknown", False), result
        assert "refused" in result.seen.lower()


def test_an_open_tcp_port_is_healthy(server: int) -> None:
    result = probe_once("127.0.0.1", HealthProbeModel(protocol="tcp", port=server))
    assert (result.state, result.seen) == ("healthy", f"tcp {server} open")


def test_a_server_that_accepts_and_never_answers_is_unknown() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        result = probe_once("127.0.0.1", HealthProbeModel(protocol="http", port=port, path="/"), timeout_s=0.3)
    assert result.state == "unknown", result
    assert "timed out" in result.seen
