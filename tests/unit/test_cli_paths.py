"""The CLI puts every name into the URL as one quoted path segment: unquoted, 'web#x' became
/scaleSets/web (the rest a fragment) and 'delete web#x' deleted web. Checked at the HTTP layer,
with what httpx actually sends."""

from __future__ import annotations

import json
import sys
from typing import Any

import httpx
import pytest

from localvmss import errors
from localvmss.cli import client as client_module
from localvmss.cli.client import api_path
from localvmss.cli.main import main
from localvmss.errors import InvalidSpec


@pytest.mark.parametrize(
    ("segments", "path"),
    [
        (("scaleSets", "web"), "/scaleSets/web"),
        (("scaleSets", "web#x"), "/scaleSets/web%23x"),
        (("scaleSets", "web?x=1"), "/scaleSets/web%3Fx%3D1"),
        (("scaleSets", "web/virtualMachines/0"), "/scaleSets/web%2FvirtualMachines%2F0"),
        (("scaleSets", "a b"), "/scaleSets/a%20b"),
        (("scaleSets", "web%2F"), "/scaleSets/web%252F"),
        (("scaleSets", "wéb"), "/scaleSets/w%C3%A9b"),
        (("scaleSets", "web", "virtualMachines", 3, "instanceView"), "/scaleSets/web/virtualMachines/3/instanceView"),
    ],
)
def test_api_path_quotes_each_segment(segments: tuple[Any, ...], path: str) -> None:
    assert api_path(*segments) == path


@pytest.mark.parametrize("name", ["", ".", ".."])
def test_segments_an_http_client_would_drop_are_refused(name: str) -> None:
    with pytest.raises(InvalidSpec, match="cannot be used as a name"):
        api_path("scaleSets", name)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Requests as httpx sends them (method, raw path), answered with an Azure-shaped 404."""
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.raw_path.decode()))
        body = {"error": {"code": "NotFound", "message": "scale set does not exist"}}
        return httpx.Response(404, content=json.dumps(body).encode())

    monkeypatch.setattr(client_module.httpx, "HTTPTransport", lambda **_kw: httpx.MockTransport(handler))
    return seen


@pytest.mark.parametrize(
    ("args", "request_line"),
    [
        (["delete", "web#x", "--no-wait"], ("DELETE", "/scaleSets/web%23x")),
        (["show", "web?x"], ("GET", "/scaleSets/web%3Fx")),
        (["list-instances", "web/../other"], ("GET", "/scaleSets/web%2F..%2Fother/virtualMachines")),
        (
            ["get-instance-view", "web", "--instance-id", "0#"],
            ("GET", "/scaleSets/web/virtualMachines/0%23/instanceView"),
        ),
        (["delete-instances", "web#", "--instance-ids", "1", "--no-wait"], ("POST", "/scaleSets/web%23/delete")),
        (["stop", "web#", "--no-wait"], ("POST", "/scaleSets/web%23/powerOff")),
        (["host", "remove", "h1#"], ("DELETE", "/hosts/h1%23")),
        (["vm", "show", "vm1?"], ("GET", "/virtualMachines/vm1%3F")),
        (["autoscale", "show", "--resource", "web#x"], ("GET", "/scaleSets/web%23x/autoscale")),
    ],
)
def test_the_cli_sends_names_as_one_segment(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    sent: list[tuple[str, str]],
    args: list[str],
    request_line: tuple[str, str],
) -> None:
    monkeypatch.setattr(sys, "argv", ["localvmss", "--socket", "/nonexistent.sock", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 3, capsys.readouterr().err
    assert sent[0] == request_line


@pytest.mark.parametrize("kind", [errors.StoreError, errors.HostBusy, errors.ResourceGroupNotFound, errors.InvalidSpec])
def test_the_daemons_error_comes_back_as_its_kind(
    monkeypatch: pytest.MonkeyPatch, kind: type[errors.LocalVMSSError]
) -> None:
    """A full disk answers StateStoreUnavailable: the CLI must exit with the store's code (11),
    not the generic one (found by the fault-injection suite)."""
    body = kind("it says why").to_json()
    transport = httpx.MockTransport(lambda _r: httpx.Response(kind.http_status, content=json.dumps(body).encode()))
    monkeypatch.setattr(client_module.httpx, "HTTPTransport", lambda **_kw: transport)
    with pytest.raises(kind) as raised:
        client_module.ApiClient("/nowhere.sock").get("/scaleSets")
    assert type(raised.value) is kind and raised.value.exit_code == kind.exit_code
