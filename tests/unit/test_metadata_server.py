"""The daemon's metadata socket: HTTP framing as the proxy sends it (``read_request``), the
answers (``http_answer``, ``answer``), and the one-thread server over a real unix socket: many
connections at once, a slow or silent one holding no other up, stop and start again."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localvmss import metadata
from localvmss.errors import TemporaryError
from localvmss.metadata import BadRequest, MetadataServer, MetadataService, Request, answer, http_answer, read_request
from localvmss.model import OrchestrationMode
from localvmss.spec import parse_scale_set_body
from localvmss.store import InstanceRow, ScheduledEventRow, Store

HEAD = b"GET /metadata/scheduledevents HTTP/1.0\r\nMetadata: true\r\nX-Forwarded-For: 198.18.0.5\r\n\r\n"
POST = b'POST /metadata/scheduledevents HTTP/1.0\r\nContent-Length: 13\r\nMetadata: true\r\n\r\n{"a": "body"}'


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", None),
        (b"GET / HTTP/1.0\r\nMetadata: true\r\n", None),  # the head is not whole yet
        (HEAD, Request("GET", "/metadata/scheduledevents", {"Metadata": "true", "X-Forwarded-For": "198.18.0.5"}, b"")),
        (POST[:-3], None),  # the body is not whole yet
        (
            POST,
            Request(
                "POST", "/metadata/scheduledevents", {"Content-Length": "13", "Metadata": "true"}, b'{"a": "body"}'
            ),
        ),
        (
            POST + b"more",
            Request(
                "POST", "/metadata/scheduledevents", {"Content-Length": "13", "Metadata": "true"}, b'{"a": "body"}'
            ),
        ),
        (b"GET /x HTTP/1.1\r\nA:b\r\nC:  d e \r\n\r\n", Request("GET", "/x", {"A": "b", "C": "d e"}, b"")),
        (b"GET /x HTTP/1.0\r\ncontent-length: 0\r\n\r\n", Request("GET", "/x", {"content-length": "0"}, b"")),
    ],
)
def test_a_request_is_read_when_it_is_whole(data: bytes, expected: Request | None) -> None:
    assert read_request(data) == expected


@pytest.mark.parametrize(
    ("data", "status", "said"),
    [
        (b"GET /x\r\n\r\n", 400, "malformed request line"),
        (b"GET  /x HTTP/1.0\r\n\r\n", 400, "malformed request line"),
        (b"GET /x FTP/1.0\r\n\r\n", 400, "malformed request line"),
        (b"GET /x HTTP/1.0\r\nno colon\r\n\r\n", 400, "malformed header"),
        (b"GET /x HTTP/1.0\r\n: v\r\n\r\n", 400, "malformed header"),
        (b"POST /x HTTP/1.0\r\nContent-Length: ten\r\n\r\n", 400, "Content-Length"),
        (b"POST /x HTTP/1.0\r\nContent-Length: -1\r\n\r\n", 400, "Content-Length"),
        (b"POST /x HTTP/1.0\r\nContent-Length: 65537\r\n\r\n", 413, "too large"),
        (b"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "chunked"),
        (b"GET /x HTTP/1.0\r\nA: " + b"a" * (17 * 1024), 431, "head too large"),  # never ends
        (b"GET /x HTTP/1.0\r\nA: " + b"a" * (17 * 1024) + b"\r\n\r\n", 431, "head too large"),
    ],
)
def test_what_cannot_be_served_is_refused_with_its_status(data: bytes, status: int, said: str) -> None:
    with pytest.raises(BadRequest, match=said) as caught:
        read_request(data)
    assert caught.value.status == status


@pytest.mark.parametrize(
    ("status", "line"),
    [
        (200, "HTTP/1.0 200 OK"),
        (404, "HTTP/1.0 404 Not Found"),
        (503, "HTTP/1.0 503 Service Unavailable"),
        (599, "HTTP/1.0 599 Unknown"),
    ],
)
def test_an_answer_is_compact_json_with_its_length(status: int, line: str) -> None:
    raw = http_answer(status, {"Events": [], "x": "é"})
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    assert lines[0] == line
    assert "Content-Type: application/json; charset=utf-8" in lines and "Connection: close" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert body == b'{"Events":[],"x":"\\u00e9"}'  # ASCII, as the guest's awk reads it


class FakeService:
    """What ``answer`` asks of the service; ``fail`` makes ``handle`` raise."""

    def __init__(self, fail: Exception | None = None, delay_s: float = 0.0) -> None:
        self.fail = fail
        self.delay_s = delay_s
        self.seen: list[Request] = []

    def unchanged(self, method: str, target: str, headers: dict[str, str]) -> bool:
        return False

    def handle_with_headers(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        self.seen.append(Request(method, target, headers, body))
        time.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        return 200, {"method": method, "target": target, "body": body.decode()}, {"X-Localvmss-Poll-After": "7"}


@pytest.mark.parametrize(
    ("method", "fail", "status"),
    [
        ("GET", None, 200),
        ("POST", None, 200),
        ("PUT", None, 405),
        ("DELETE", None, 405),
        ("BREW", None, 501),
        ("GET", TemporaryError("the store is busy"), 503),
        ("GET", RuntimeError("a bug"), 500),  # logged; the service goes on
    ],
)
def test_answer_never_raises(method: str, fail: Exception | None, status: int) -> None:
    service = FakeService(fail)
    assert answer(service, Request(method, "/x", {}, b""))[0] == status  # type: ignore[arg-type]


def exchange(path: Path, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


def status_and_doc(raw: bytes) -> tuple[int, Any]:
    head, body = raw.split(b"\r\n\r\n", 1)
    return int(head.split(b" ")[1]), json.loads(body)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[MetadataServer, FakeService]]:
    service = FakeService()
    server = MetadataServer(tmp_path / "metadata.sock", service)  # type: ignore[arg-type]
    server.start()
    yield server, service
    server.stop()


def test_the_socket_is_root_only_and_answers(served: tuple[MetadataServer, FakeService]) -> None:
    server, _ = served
    assert server.path.stat().st_mode & 0o777 == 0o600
    raw = exchange(server.path, HEAD)
    assert status_and_doc(raw) == (200, {"method": "GET", "target": "/metadata/scheduledevents", "body": ""})
    assert b"\r\nX-Localvmss-Poll-After: 7\r\n" in raw.split(b"\r\n\r\n")[0]
    assert status_and_doc(exchange(server.path, POST))[1]["body"] == '{"a": "body"}'
    assert status_and_doc(exchange(server.path, b"GET /x\r\n\r\n"))[0] == 400


def test_a_request_sent_in_pieces_and_many_at_once_are_all_answered(served: tuple[MetadataServer, FakeService]) -> None:
    server, service = served
    with socket.socket(socket.AF_UNIX) as slow:
        slow.connect(str(server.path))
        slow.sendall(POST[:10])  # a slow proxy holds no other connection up
        results: list[bytes] = []
        threads = [threading.Thread(target=lambda: results.append(exchange(server.path, HEAD))) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert len(results) == 20 and all(status_and_doc(r)[0] == 200 for r in results)
        slow.sendall(POST[10:])
        slow.settimeout(5)
        assert status_and_doc(slow.recv(65536))[1]["body"] == '{"a": "body"}'
    assert len(service.seen) == 21


def test_a_silent_connection_is_closed_after_the_read_timeout(
    served: tuple[MetadataServer, FakeService], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = served
    monkeypatch.setattr(metadata, "READ_TIMEOUT_S", 0.2)
    with socket.socket(socket.AF_UNIX) as silent:
        silent.settimeout(5)
        silent.connect(str(server.path))
        started = time.monotonic()
        assert silent.recv(100) == b""  # closed without an answer
        assert time.monotonic() - started < 3
    assert status_and_doc(exchange(server.path, HEAD))[0] == 200


def test_a_proxy_that_goes_away_mid_request_is_forgotten(served: tuple[MetadataServer, FakeService]) -> None:
    server, service = served
    for _ in range(5):
        with socket.socket(socket.AF_UNIX) as gone:
            gone.connect(str(server.path))
            gone.sendall(HEAD[:5])
    assert status_and_doc(exchange(server.path, HEAD))[0] == 200
    assert len(service.seen) == 1


def test_stop_closes_the_socket_and_start_serves_again(served: tuple[MetadataServer, FakeService]) -> None:
    server, _ = served
    server.stop()
    assert not server.path.exists()
    assert [t for t in threading.enumerate() if t.name == "metadata"] == []
    with pytest.raises(OSError):
        exchange(server.path, HEAD)
    server.start()
    assert status_and_doc(exchange(server.path, HEAD))[0] == 200


# -- how soon a guest asks again ----------------------------------------------------------------


def _set_body(notices: bool) -> dict[str, Any]:
    profile: dict[str, Any] = {"storageProfile": {"imageReference": {"id": "base"}}}
    if notices:
        profile["scheduledEventsProfile"] = {
            "terminateNotificationProfile": {"enable": True, "notBeforeTimeout": "PT60S"}
        }
    return {"sku": {"capacity": 1}, "properties": {"virtualMachineProfile": profile}}


@pytest.mark.parametrize(
    ("notices", "pending", "expected"),
    [
        (False, False, metadata.POLL_IDLE_S),  # nothing can be scheduled for it
        (True, False, metadata.POLL_FAST_S),  # a scale-in may send it a notice at any time
        (True, True, metadata.POLL_FAST_S),
        (False, True, metadata.POLL_FAST_S),  # sent before the profile was disabled: still shown
    ],
)
def test_the_guest_is_told_how_soon_to_ask_again(tmp_path: Path, notices: bool, pending: bool, expected: int) -> None:
    store = Store(tmp_path / "state.db")
    try:
        spec, _ = parse_scale_set_body("web", _set_body(notices), {"base"})
        store.insert_scale_set("web", OrchestrationMode.UNIFORM.value, spec.model_dump(mode="json"), 1, "Succeeded")
        with store.transaction() as db:
            row = InstanceRow("web", 0, "h1", 0, 0, "52:54:00:00:00:01", "198.18.0.5", 1, "running", "Succeeded", 0.0)  # type: ignore[arg-type]
            store.insert_instance(db, row)
        if pending:
            store.schedule_event(ScheduledEventRow("ev-1", "web", 0, "Terminate", "web000000", 1.0, 61.0))
        service = MetadataService(store, lambda: None, time.time)
        guest = {"Metadata": "true", "X-Forwarded-For": "198.18.0.5", "X-Localvmss-Host": "h1"}
        status, doc, extra = service.handle_with_headers("GET", "/metadata/scheduledevents", guest, b"")
        assert status == 200 and len(doc["Events"]) == int(pending)
        assert extra == {metadata.POLL_HEADER: str(expected)}
        assert service.handle_with_headers("GET", "/metadata/instance", guest, b"")[2] == {}  # only for events
        assert service.handle("GET", "/metadata/scheduledevents", guest, b"") == (status, doc)
    finally:
        store.close()


# -- a request that waits for a change (long poll) ------------------------------------------------


@pytest.fixture
def guest_plane(tmp_path: Path) -> Iterator[tuple[Store, MetadataServer]]:
    """A real store with one instance (web/0 at 198.18.0.5 on h1) in a set that sends notices,
    served on a unix socket."""
    store = Store(tmp_path / "state.db")
    spec, _ = parse_scale_set_body("web", _set_body(True), {"base"})
    store.insert_scale_set("web", OrchestrationMode.UNIFORM.value, spec.model_dump(mode="json"), 2, "Succeeded")
    with store.transaction() as db:
        for iid in (0, 1):
            mac, ip = f"52:54:00:00:00:0{iid}", f"198.18.0.{5 + iid}"
            store.insert_instance(db, InstanceRow("web", iid, "h1", 0, 0, mac, ip, 1, "running", "Succeeded", 0.0))  # type: ignore[arg-type]
    server = MetadataServer(tmp_path / "metadata.sock", MetadataService(store, lambda: None, time.time))
    server.start()
    yield store, server
    server.stop()
    store.close()


def events_request(ip: str = "198.18.0.5", seen: str | None = None, method: str = "GET", body: bytes = b"") -> bytes:
    head = f"{method} /metadata/scheduledevents HTTP/1.0\r\nMetadata: true\r\nX-Forwarded-For: {ip}\r\n"
    head += "X-Localvmss-Host: h1\r\n" + (f"{metadata.WAIT_HEADER}: {seen}\r\n" if seen is not None else "")
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class Asked(threading.Thread):
    """One request on its own connection, its answer and when it came."""

    def __init__(self, path: Path, data: bytes) -> None:
        super().__init__(daemon=True)
        self.path, self.data = path, data
        self.raw = b""
        self.took = 0.0
        self.start()

    def run(self) -> None:
        started = time.monotonic()
        self.raw = exchange(self.path, self.data, timeout=15)
        self.took = time.monotonic() - started

    def doc(self) -> Any:
        self.join(15)
        return status_and_doc(self.raw)[1]


@pytest.mark.parametrize(
    ("seen", "held"),
    [
        (None, False),  # no header: answered at once (an Azure-shaped client)
        ("1", False),  # the guest saw another incarnation: answered at once
        ("0", True),  # still incarnation 0: held
        ("x", False),
        ("", False),
        ("99999999999", False),  # too long to be one
    ],
)
def test_a_request_is_held_only_while_its_document_is_unchanged(
    guest_plane: tuple[Store, MetadataServer], monkeypatch: pytest.MonkeyPatch, seen: str | None, held: bool
) -> None:
    _store, server = guest_plane
    monkeypatch.setattr(metadata, "MAX_WAIT_S", 0.5)
    asked = Asked(server.path, events_request(seen=seen))
    assert asked.doc() == {"DocumentIncarnation": 0, "Events": []}
    assert (asked.took >= 0.45) == held, asked.took
    assert b"X-Localvmss-Poll-After: 1\r\n" in asked.raw


def test_a_held_request_is_answered_when_a_pass_schedules_its_event(guest_plane: tuple[Store, MetadataServer]) -> None:
    store, server = guest_plane
    mine = Asked(server.path, events_request(seen="0"))
    other = Asked(server.path, events_request("198.18.0.6", seen="0"))
    time.sleep(0.3)
    server.recheck()  # a pass that changed nothing: both stay held
    time.sleep(0.3)
    assert mine.is_alive() and other.is_alive()
    store.schedule_event(ScheduledEventRow("ev-1", "web", 0, "Terminate", "web000000", time.time(), time.time() + 60))
    server.recheck()
    doc = mine.doc()
    assert doc["DocumentIncarnation"] == 1 and [e["EventId"] for e in doc["Events"]] == ["ev-1"]
    assert mine.took < 2.0, mine.took
    assert other.is_alive(), "the other guest's document did not change"
    # The guest acknowledges: its next wait (incarnation 1) is answered at once with 2.
    ack = exchange(server.path, events_request(method="POST", body=b'{"StartRequests": [{"EventId": "ev-1"}]}'))
    assert status_and_doc(ack) == (200, {"acknowledged": ["ev-1"]})
    assert Asked(server.path, events_request(seen="1")).doc()["DocumentIncarnation"] == 2
    assert other.is_alive()


def test_a_held_request_whose_proxy_goes_away_is_dropped_and_stop_ends_the_rest(
    guest_plane: tuple[Store, MetadataServer],
) -> None:
    _store, server = guest_plane
    with socket.socket(socket.AF_UNIX) as gone:
        gone.connect(str(server.path))
        gone.sendall(events_request(seen="0"))
    waiting = Asked(server.path, events_request(seen="0"))
    time.sleep(0.3)
    assert status_and_doc(exchange(server.path, events_request()))[0] == 200  # others are served meanwhile
    server.stop()
    waiting.join(5)
    assert not waiting.is_alive() and waiting.raw == b""  # closed without an answer: the agent retries
