"""Who may call the API and how much they may send: the unix socket or the token (decided from
the listening socket, which no header can change), a constant-time token compare that survives
any header bytes, and a body limit that chunking cannot get around. Refusals change nothing."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from localvmss.api.app import MAX_BODY_BYTES, UVICORN_OPTIONS, create_app, over_tcp, token_matches
from tests.unit.servicefake import make_service, snapshot, uniform_body


def as_unix(app: Any, server: Any) -> Any:
    """The app as uvicorn calls it for a request on a unix socket (scope["server"] has no port)."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, "server": server, "client": None}
        await app(scope, receive, send)

    return wrapped


@pytest.mark.parametrize(
    ("server", "tcp"),
    [
        (None, False),  # uvicorn < 0.30 on a unix socket
        (("/run/localvmss/api.sock", None), False),  # uvicorn >= 0.30 on a unix socket
        (["/run/localvmss/api.sock", None], False),
        (("127.0.0.1", 8470), True),
        (("::1", 8470), True),
        (("testserver", 80), True),
        (("127.0.0.1", 0), True),
        ((), True),  # anything unexpected needs the token
        ("unix", True),
    ],
)
def test_transport_is_read_from_the_listening_socket(server: Any, tcp: bool) -> None:
    assert over_tcp({"type": "http", "server": server, "client": ("127.0.0.1", 1)}) is tcp
    # What the client is (forged or not) plays no part.
    assert over_tcp({"type": "http", "server": server, "client": None}) is tcp


@pytest.mark.parametrize(
    ("headers", "ok"),
    [
        ([(b"authorization", b"Bearer s3cret")], True),
        ([(b"authorization", b"Bearer s3cre")], False),
        ([(b"authorization", b"bearer s3cret")], False),
        ([(b"authorization", b"Bearer s3cret "), (b"authorization", b"Bearer s3cret")], False),
        ([(b"authorization", b"Bearer s3cret"), (b"authorization", b"Bearer s3cret")], False),
        ([(b"authorization", "Bearer \u00e9".encode("latin-1"))], False),
        ([(b"authorization", "Bearer \u00e9\u00e9".encode())], False),
        ([(b"authorization", b"\xff\xfe\x00")], False),
        ([], False),
    ],
)
def test_token_compare_takes_any_bytes(headers: list[tuple[bytes, bytes]], ok: bool) -> None:
    assert token_matches({"headers": headers}, "s3cret") is ok
    assert token_matches({"headers": headers}, None) is False
    assert token_matches({"headers": headers}, "") is False


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Forwarded-For": "127.0.0.1"},
        {"X-Forwarded-For": ""},
        {"X-Forwarded-For": "127.0.0.1", "Authorization": "Bearer nope"},
        {"Forwarded": "for=127.0.0.1"},
        {"X-Real-IP": "127.0.0.1"},
        {"Authorization": "Bearer \u00e9".encode("latin-1")},  # was a 500 (str compare_digest)
        {"Authorization": "Bearer s3cret\u00e9".encode()},
    ],
)
def test_tcp_without_the_token_is_refused_whatever_the_headers(tmp_path: Path, headers: dict[str, Any]) -> None:
    h = make_service(tmp_path)
    client = TestClient(create_app(h.service, token="s3cret"))
    before = snapshot(h.store)
    for method, path, body in [("GET", "/healthz", None), ("PUT", "/scaleSets/web", uniform_body())]:
        resp = client.request(method, path, headers=headers, json=body)
        assert resp.status_code == 401, resp.text
        assert resp.json() == {
            "error": {"code": "Unauthorized", "message": "a valid bearer token is required over TCP"}
        }
    assert snapshot(h.store) == before


@pytest.mark.parametrize("server", [None, ("/run/localvmss/api.sock", None)])
def test_the_unix_socket_needs_no_token(tmp_path: Path, server: Any) -> None:
    h = make_service(tmp_path)
    client = TestClient(as_unix(create_app(h.service, token="s3cret"), server))
    assert client.get("/healthz").status_code == 200
    assert client.put("/scaleSets/web", json=uniform_body()).status_code == 201


def _chunks(data: bytes, size: int = 65536) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize(
    ("path", "chunked"),
    [
        ("/scaleSets/web", False),
        ("/scaleSets/web", True),  # no Content-Length: counted as it arrives
        ("/hosts/rack2", True),
        ("/scaleSets/web/autoscale", False),
    ],
)
def test_a_body_over_the_limit_is_413_and_changes_nothing(tmp_path: Path, path: str, chunked: bool) -> None:
    h = make_service(tmp_path)
    client = TestClient(create_app(h.service, token="t"), headers={"Authorization": "Bearer t"})
    body = uniform_body()
    body["tags"] = {"pad": "x" * MAX_BODY_BYTES}
    data = json.dumps(body).encode()
    before = snapshot(h.store)
    content: Any = _chunks(data) if chunked else data
    resp = client.put(path, content=content, headers={"Content-Type": "application/json"})
    assert resp.status_code == 413, resp.text
    error = resp.json()["error"]
    assert error["code"] == "RequestEntityTooLarge" and str(MAX_BODY_BYTES) in error["message"]
    assert "\n" not in error["message"]
    assert snapshot(h.store) == before and h.reconciler.wakes == 0


def test_a_body_under_the_limit_passes_chunked_too(tmp_path: Path) -> None:
    h = make_service(tmp_path)
    client = TestClient(create_app(h.service, token="t"), headers={"Authorization": "Bearer t"})
    data = json.dumps(uniform_body()).encode()
    resp = client.put("/scaleSets/web", content=_chunks(data, 7), headers={"Content-Type": "application/json"})
    assert resp.status_code == 201, resp.text


@pytest.mark.parametrize("options", [UVICORN_OPTIONS, {}])  # {}: uvicorn's defaults, proxy headers on
def test_real_uvicorn_unix_socket_and_tcp(tmp_path: Path, options: dict[str, Any]) -> None:
    """What uvicorn itself puts in the scope for the daemon's two listeners: a unix socket is
    trusted, TCP needs the token even with X-Forwarded-For: 127.0.0.1 (the old bypass)."""
    h = make_service(tmp_path)
    path = tmp_path / "api.sock"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(path))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    port = tcp.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(h.service, token="t"), log_level="warning", access_log=False, **options)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [unix, tcp]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), base_url="http://x") as local:
            assert local.get("/healthz").status_code == 200
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as remote:
            assert remote.get("/healthz", headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 401
            assert remote.get("/healthz", headers={"X-Forwarded-For": ""}).status_code == 401
            assert remote.get("/healthz", headers={"Authorization": "Bearer t"}).status_code == 200
            big = b"{" + b" " * (MAX_BODY_BYTES + 1) + b"}"
            resp = remote.put("/scaleSets/web", content=_chunks(big), headers={"Authorization": "Bearer t"})
            assert resp.status_code == 413
    finally:
        server.should_exit = True
        thread.join(10)
        os.unlink(path)


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "code"),
    [
        ("PUT", "/scaleSets/web", b"[" * 100000 + b"]" * 100000, 400, "InvalidParameter"),
        ("GET", "/nowhere", None, 404, "NotFound"),
        ("DELETE", "/healthz", None, 405, "MethodNotAllowed"),
    ],
)
def test_framework_refusals_are_azure_shaped_too(
    tmp_path: Path, method: str, path: str, content: bytes | None, status: int, code: str
) -> None:
    h = make_service(tmp_path)
    client = TestClient(create_app(h.service, token="t"), headers={"Authorization": "Bearer t"})
    before = snapshot(h.store)
    resp = client.request(method, path, content=content, headers={"Content-Type": "application/json"})
    assert resp.status_code == status
    error = resp.json()["error"]
    assert error["code"] == code and error["message"] and "\n" not in error["message"]
    assert snapshot(h.store) == before
