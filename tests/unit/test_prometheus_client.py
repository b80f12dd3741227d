"""PrometheusClient over real HTTP on loopback: what it sends, and how each kind of answer (or no
answer) becomes one of our error kinds. A small server plays Prometheus with canned answers, so
the standard-library HTTP path is exercised end to end without a Prometheus binary
(tests/integration/test_prometheus.py runs the real one)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from localvmss.errors import InvalidSpec, LocalVMSSError, TemporaryError
from localvmss.metrics.prometheus import PrometheusClient, PrometheusEvaluationError


@dataclass
class Answer:
    status: int
    body: bytes
    delay_s: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    content_type: str
    form: dict[str, list[str]]


@dataclass
class FakePrometheus:
    """Answers every request with ``answers[path]`` and records what it was sent."""

    url: str
    answers: dict[str, Answer] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def answer(self, path: str, status: int, body: Any, delay_s: float = 0.0) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.answers[path] = Answer(status, raw, delay_s)


@pytest.fixture
def prom() -> Iterator[FakePrometheus]:
    fake = FakePrometheus("")

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            fake.seen.append(Seen(self.command, self.path, self.headers.get("Content-Type", ""), parse_qs(body)))
            answer = fake.answers.get(self.path, Answer(404, b"404 page not found\n"))
            time.sleep(answer.delay_s)
            try:
                self.send_response(answer.status)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
            except OSError:
                pass  # the client gave up waiting

        do_GET = do_POST = _serve  # noqa: N815 - http.server's naming

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


VECTOR = {
    "status": "success",
    "data": {"resultType": "vector", "result": [{"metric": {"instance": "web_0"}, "value": [1700000000, "42.5"]}]},
}


def test_a_query_is_a_form_post_and_its_vector_comes_back_typed(prom: FakePrometheus) -> None:
    prom.answer("/api/v1/query", 200, VECTOR)
    with PrometheusClient(prom.url + "/") as client:
        assert client.query('avg(cpu{set="web"})') == [({"instance": "web_0"}, 42.5)]
    (seen,) = prom.seen
    assert (seen.method, seen.path, seen.content_type) == ("POST", "/api/v1/query", "application/x-www-form-urlencoded")
    assert seen.form == {"query": ['avg(cpu{set="web"})']}


def test_prometheus_warnings_are_logged(prom: FakePrometheus, caplog: pytest.LogCaptureFixture) -> None:
    prom.answer("/api/v1/query", 200, {**VECTOR, "warnings": ["PromQL info: metric might not be a counter"]})
    with caplog.at_level(logging.WARNING):
        PrometheusClient(prom.url).query("rate(x[1m])")
    assert any("might not be a counter" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("status", "body", "kind", "message"),
    [
        (
            400,
            {"status": "error", "errorType": "bad_data", "error": 'invalid parameter "query": 1:5: parse error: x'},
            InvalidSpec,
            "PromQL rejected by Prometheus: 1:5: parse error: x",
        ),
        (
            422,
            {"status": "error", "errorType": "execution", "error": "many-to-many matching not allowed"},
            PrometheusEvaluationError,
            "Prometheus failed while evaluating 'x': execution: many-to-many matching not allowed",
        ),
        (503, b"<html>overloaded</html>", TemporaryError, "answered HTTP 503 without JSON while evaluating 'x'"),
        (200, b"[1, 2]", TemporaryError, "sent an unexpected answer while evaluating 'x'"),
    ],
)
def test_each_refusal_is_one_of_our_error_kinds(
    prom: FakePrometheus, status: int, body: Any, kind: type[Exception], message: str
) -> None:
    prom.answer("/api/v1/query", status, body)
    with pytest.raises(kind) as info:
        PrometheusClient(prom.url).query("x")
    assert message in str(info.value)


def test_validate_refuses_a_parse_error_and_accepts_an_evaluation_error(prom: FakePrometheus) -> None:
    client = PrometheusClient(prom.url)
    prom.answer("/api/v1/query", 422, {"status": "error", "errorType": "execution", "error": "too many samples"})
    client.validate("sum(x)")  # parsed: valid, whatever this evaluation did
    prom.answer("/api/v1/query", 400, {"status": "error", "errorType": "bad_data", "error": "1:4: parse error"})
    with pytest.raises(InvalidSpec, match="PromQL rejected by Prometheus: 1:4: parse error"):
        client.validate("sum(")


def test_a_range_query_sends_the_window_and_reads_the_matrix(prom: FakePrometheus) -> None:
    from datetime import UTC, datetime

    prom.answer(
        "/api/v1/query_range",
        200,
        {
            "status": "success",
            "data": {"resultType": "matrix", "result": [{"metric": {}, "values": [[10, "1"], [20, "NaN"]]}]},
        },
    )
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
    [(labels, points)] = PrometheusClient(prom.url).query_range("x", start, end, 30)
    assert labels == {} and points[0] == (10.0, 1.0) and str(points[1][1]) == "nan"
    assert prom.seen[0].form == {
        "query": ["x"],
        "start": [repr(start.timestamp())],
        "end": [repr(end.timestamp())],
        "step": ["30.0"],
    }


def test_nothing_listening_is_a_temporary_error_with_the_reason() -> None:
    client = PrometheusClient(f"http://127.0.0.1:{closed_port()}", timeout=2)
    assert not client.ready()
    with pytest.raises(TemporaryError, match="unreachable while evaluating 'up': .*[Cc]onnection refused") as info:
        client.query("up")
    assert "urlopen error" not in str(info.value)
    with pytest.raises(TemporaryError, match="unreachable while validating"):
        client.validate("up")


def test_a_silent_prometheus_is_a_temporary_error_after_the_timeout(prom: FakePrometheus) -> None:
    prom.answer("/api/v1/query", 200, VECTOR, delay_s=2.0)
    prom.answer("/-/ready", 200, b"Prometheus Server is Ready.\n", delay_s=2.0)
    client = PrometheusClient(prom.url, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(TemporaryError, match=r"did not answer within 0\.3s while evaluating 'up'"):
        client.query("up")
    assert not client.ready()
    assert time.monotonic() - started < 1.9


@pytest.mark.parametrize(("status", "ready"), [(200, True), (503, False), (404, False)])
def test_ready_is_a_200_from_the_readiness_endpoint(prom: FakePrometheus, status: int, ready: bool) -> None:
    prom.answer("/-/ready", status, b"Service Unavailable" if status != 200 else b"Ready.")
    assert PrometheusClient(prom.url).ready() is ready
    assert prom.seen[0].method == "GET" and prom.seen[0].path == "/-/ready"


def test_reload_posts_and_passes_on_prometheus_refusal(prom: FakePrometheus) -> None:
    config = Path("/state/prometheus/prometheus.yml")
    client = PrometheusClient(prom.url)
    prom.answer("/-/reload", 200, b"")
    client.reload(config)
    assert prom.seen[-1].method == "POST" and prom.seen[-1].path == "/-/reload"
    prom.answer("/-/reload", 500, b"failed to reload config: yaml: line 3: mapping values are not allowed\n")
    with pytest.raises(LocalVMSSError) as info:
        client.reload(config)
    assert not isinstance(info.value, TemporaryError)
    assert str(info.value) == (
        f"Prometheus refused the new configuration {config}: "
        "failed to reload config: yaml: line 3: mapping values are not allowed"
    )
    with pytest.raises(TemporaryError, match="unreachable while reloading"):
        PrometheusClient(f"http://127.0.0.1:{closed_port()}").reload(config)
