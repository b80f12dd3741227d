"""Rich health states from one probe, against a real HTTP server on 127.0.0.1: the status code
and the ``ApplicationHealthState`` body decide; nothing answering is unknown, not unhealthy."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from localvmss import health
from localvmss.health import http_request, probe_many, probe_once, read_answer, state_of_http
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


class Server(ThreadingHTTPServer):
    request_queue_size = 64  # many probes connect at once; the default backlog is 5


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    srv = Server(("127.0.0.1", 0), Handler)
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


# -- the answer as it is read, and many probes at once from one thread (issue 16) ---------------


@pytest.mark.parametrize(
    ("data", "closed", "expected"),
    [
        (b"", False, None),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", False, None),  # the head is not whole
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no", False, None),  # nor the body
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False, (200, b"ok")),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA", False, (200, b"ok")),
        (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", False, None),  # no length: until it closes
        (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", True, (200, b"until the end")),
        (b"HTTP/1.0 200\r\n\r\n", True, (200, b"")),  # no reason phrase
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", False, (204, b"")),
        (b"HTTP/1.1 500 Oops\r\nContent-Length: 99\r\n\r\n", False, (500, b"")),  # not 2xx: the body does not decide
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"a" * 4096, False, (200, b"a" * 4096)),
        (b"HTTP/1.1 200 OK\r\n\r\n" + b"a" * 5000, False, (200, b"a" * 4096)),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
            False,
            (200, b"abcde"),
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", False, None),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", True, (200, b"abc")),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", False, (200, b"")),
        (b"", True, "RemoteDisconnected"),
        (b"SSH-2.0-dropbear\r\n", True, "BadStatusLine"),
        (b"HTTP/1.1 20 OK\r\n\r\n", False, "BadStatusLine"),
        (b"HTTP/1.1 200 OK\r\nContent-", True, "IncompleteRead"),
        (b"x" * 20000, False, "LineTooLong"),
    ],
)
def test_an_answer_is_decided_once_enough_of_it_came(data: bytes, closed: bool, expected: object) -> None:
    assert read_answer(data, closed) == expected


@pytest.mark.parametrize(
    ("ip", "port", "path", "expected"),
    [
        ("198.18.0.5", 80, "/healthz", b"GET /healthz HTTP/1.1\r\nHost: 198.18.0.5:80\r\n"),
        ("fd00::5", 8080, "/h?x=1", b"GET /h?x=1 HTTP/1.1\r\nHost: [fd00::5]:8080\r\n"),
    ],
)
def test_the_request_names_the_host_and_closes(ip: str, port: int, path: str, expected: bytes) -> None:
    request = http_request(ip, port, path)
    assert request.startswith(expected) and request.endswith(b"Connection: close\r\n\r\n")
    assert b"User-Agent: localvmss-health\r\n" in request


@pytest.mark.parametrize("path", ["/gesundheit\u00e4", "/a b", "/a\r\nX-Injected: 1"])
def test_a_path_that_cannot_be_sent_is_unknown_before_anything_connects(path: str) -> None:
    (result,) = probe_many([("198.18.0.5", HealthProbeModel(protocol="http", port=80, path=path))])
    assert result.state == "unknown" and result.seen.startswith("probe could not be made"), result


def raw_server(answer: bytes, close: bool = True) -> tuple[socket.socket, int]:
    """A server on 127.0.0.1 that sends ``answer`` to every connection (and closes it)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(4096)
            conn.sendall(answer)
            if close:
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener, int(listener.getsockname()[1])


def test_many_probes_at_once_each_get_their_own_result_in_order(server: int) -> None:
    ANSWERS["/many-ok"] = (200, b"ok")
    ANSWERS["/many-sick"] = (200, b'{"ApplicationHealthState": "Unhealthy"}')
    sick = b'{"ApplicationHealthState": "Unhealthy"}'
    chunks = b"%x\r\n%s\r\n0\r\n\r\n" % (len(sick), sick)
    chunked, chunked_port = raw_server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)
    silent, silent_port = raw_server(b"")  # closes without a word
    garbage, garbage_port = raw_server(b"SSH-2.0-dropbear\r\n")
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(4)
    hanging_port = hanging.getsockname()[1]
    try:
        asked = [
            ("127.0.0.1", HealthProbeModel(protocol="http", port=server, path="/many-ok")),
            ("127.0.0.1", HealthProbeModel(protocol="tcp", port=server)),
            ("127.0.0.1", HealthProbeModel(protocol="http", port=free_port(), path="/")),
            ("127.0.0.1", HealthProbeModel(protocol="http", port=server, path="/many-sick")),
            ("127.0.0.1", HealthProbeModel(protocol="http", port=hanging_port, path="/")),
            ("127.0.0.1", HealthProbeModel(protocol="http", port=chunked_port, path="/c")),
            ("127.0.0.1", HealthProbeModel(protocol="http", port=silent_port, path="/s")),
            ("127.0.0.1", HealthProbeModel(protocol="http", port=garbage_port, path="/g")),
            ("127.0.0.1", HealthProbeModel(protocol="tcp", port=free_port())),
        ] * 3
        started = time.monotonic()
        results = probe_many(asked, timeout_s=0.5)
        took = time.monotonic() - started
    finally:
        for sock in (chunked, silent, garbage, hanging):
            sock.close()
    seen = [(r.state, r.seen) for r in results]
    assert (
        seen
        == [
            ("healthy", "http /many-ok -> 200"),
            ("healthy", f"tcp {server} open"),
            ("unknown", seen[2][1]),
            ("unhealthy", "http /many-sick -> 200 (the body says Unhealthy)"),
            ("unknown", f"http {hanging_port}: timed out"),
            ("unhealthy", "http /c -> 200 (the body says Unhealthy)"),
            ("unknown", "http /s: RemoteDisconnected"),
            ("unknown", "http /g: BadStatusLine"),
            ("unknown", seen[8][1]),
        ]
        * 3
    )
    assert "Connection refused" in seen[2][1] and "Connection refused" in seen[8][1]
    assert took < 2.0, f"probed at once, not one after another: {took:.2f} s"


def test_probing_nothing_is_nothing() -> None:
    assert probe_many([]) == []


@pytest.mark.parametrize("max_open", [1, 3, 64])
def test_probes_beyond_the_window_wait_their_turn_and_each_has_its_own_timeout(server: int, max_open: int) -> None:
    ANSWERS["/window"] = (200, b"ok")
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(16)
    port = hanging.getsockname()[1]
    try:
        asked = [("127.0.0.1", HealthProbeModel(protocol="http", port=port, path="/"))] * 2
        asked += [("127.0.0.1", HealthProbeModel(protocol="http", port=server, path="/window"))] * 5
        now_open: list[int] = [0, 0]  # open now, most at once
        start, close = health._Probe.start, health._Probe.close

        def counted_start(probe: health._Probe) -> bool:
            now_open[0] += 1
            now_open[1] = max(now_open)
            return start(probe)

        def counted_close(probe: health._Probe, result: health.ProbeResult | None = None) -> None:
            now_open[0] -= 1
            close(probe, result)

        started = time.monotonic()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(health._Probe, "start", counted_start)
            patch.setattr(health._Probe, "close", counted_close)
            results = probe_many(asked, timeout_s=0.3, max_open=max_open)
        took = time.monotonic() - started
    finally:
        hanging.close()
    assert [r.state for r in results] == ["unknown"] * 2 + ["healthy"] * 5, results
    assert now_open == [0, min(max_open, 7)]
    # The two hanging probes time out one after the other through a window of 1, together otherwise.
    assert (took >= 0.55) if max_open == 1 else (took < 0.55), took


def test_each_result_is_told_as_soon_as_it_is_known(server: int) -> None:
    """``on_result`` hears a guest that answered while the probe of one that does not (a guest
    still booting) is still waiting out its timeout; every result is told once, as returned."""
    ANSWERS["/told"] = (200, b"ok")
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(4)
    told: list[tuple[int, str, bool]] = []  # index, state, was the hanging probe still open
    try:
        asked = [
            ("127.0.0.1", HealthProbeModel(protocol="http", port=hanging.getsockname()[1], path="/")),
            ("127.0.0.1", HealthProbeModel(protocol="http", port=server, path="/told")),
            ("127.0.0.1", HealthProbeModel(protocol="http", port=free_port(), path="/")),
            ("127.0.0.1", HealthProbeModel(protocol="http", port=80, path="/\u00e4")),  # cannot be made
        ]
        results = probe_many(
            asked, timeout_s=0.5, on_result=lambda i, r: told.append((i, r.state, not told_hanging(told)))
        )
    finally:
        hanging.close()
    assert sorted((i, state) for i, state, _ in told) == [(i, r.state) for i, r in enumerate(results)]
    assert [r.state for r in results] == ["unknown", "healthy", "unknown", "unknown"]
    assert told[-1][0] == 0, f"the hanging probe is told last, when it times out: {told}"
    assert all(open_ for i, _, open_ in told if i != 0), told


def told_hanging(told: list[tuple[int, str, bool]]) -> bool:
    return any(i == 0 for i, _, _ in told)
