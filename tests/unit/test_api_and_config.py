"""The API's transport rules and error shape, and the configuration file's checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from localvmss.api.app import create_app
from localvmss.config import config_from_dict, load_config
from localvmss.errors import InvalidSpec


def test_tcp_requests_need_the_bearer_token() -> None:
    client = TestClient(create_app(None, token="s3cret"))  # type: ignore[arg-type]
    assert client.get("/healthz").status_code == 401
    assert client.get("/healthz", headers={"Authorization": "Bearer nope"}).status_code == 401
    ok = client.get("/healthz", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.json()["status"] == "ok"


def test_tcp_is_closed_without_a_configured_token() -> None:
    client = TestClient(create_app(None, token=None))  # type: ignore[arg-type]
    assert client.get("/healthz", headers={"Authorization": "Bearer "}).status_code == 401


def test_openapi_document_lists_the_azure_shaped_routes() -> None:
    client = TestClient(create_app(None, token="t"))  # type: ignore[arg-type]
    doc = client.get("/openapi.json", headers={"Authorization": "Bearer t"}).json()
    for path in (
        "/scaleSets/{name}",
        "/scaleSets/{name}/virtualMachines/{instance_id}/instanceView",
        "/virtualMachines/{vm_name}",
        "/scaleSets/{name}/autoscale",
        "/hosts/{name}",
    ):
        assert path in doc["paths"], path


def test_unknown_action_is_a_clear_404() -> None:
    client = TestClient(create_app(None, token="t"))  # type: ignore[arg-type]
    resp = client.post("/scaleSets/web/explode", headers={"Authorization": "Bearer t"}, json={})
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "ResourceNotFound" and "explode" in resp.json()["error"]["message"]


@pytest.mark.parametrize("value", ["yes", "1", "", "TRUE!"])
@pytest.mark.parametrize(
    "path", ["/scaleSets/web/powerOff", "/scaleSets/web/virtualMachines/0/powerOff", "/virtualMachines/vm1/powerOff"]
)
def test_skip_shutdown_takes_only_true_or_false(path: str, value: str) -> None:
    """Refused before the service is reached (there is none here): nothing can change."""
    client = TestClient(create_app(None, token="t"))  # type: ignore[arg-type]
    resp = client.post(path, params={"skipShutdown": value}, headers={"Authorization": "Bearer t"}, json={})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "InvalidParameter" and "skipShutdown must be true or false" in resp.text


def test_whole_numbers_are_fine_durations() -> None:
    cfg = config_from_dict({"shutdown_timeout_s": 5, "drain_timeout_s": 0})
    assert cfg.shutdown_timeout_s == 5 and cfg.drain_timeout_s == 0


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"bogus": 1}, "unknown configuration key"),
        ({"hosts": []}, "at least one"),
        ({"hosts": [{"name": "a", "uri": "qemu:///system"}, {"name": "a", "uri": "qemu:///system"}]}, "unique"),
        ({"hosts": [{"name": "Bad Name"}]}, "host name"),
        ({"hosts": [{"name": "a", "color": "red"}]}, "bad [[hosts]] entry"),
        ({"shutdown_timeout_s": "soon"}, "wrong type"),
        ({"shutdown_timeout_s": -1}, "must not be negative"),
        ({"max_parallel_boots": 2.5}, "wrong type"),
        ({"haproxy_enabled": "yes"}, "wrong type"),
        ({"kvm_probe": 1}, "wrong type"),
        ({"api_socket": 7}, "wrong type"),
        ({"api_tcp": "127.0.0.1:http", "api_token": "t"}, "HOST:PORT"),
        ({"api_tcp": "8470", "api_token": "t"}, "HOST:PORT"),
        ({"api_tcp": "127.0.0.1:70000", "api_token": "t"}, "HOST:PORT"),
        ({"hosts": [{"name": "a", "uri": "xen:///system"}]}, "not a libvirt QEMU URI"),
        ({"hosts": [{"name": "a", "uri": "qemu:///system\n"}]}, "printable ASCII"),
    ],
)
def test_bad_configuration_is_refused(data: dict, expected: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        config_from_dict(data)
    assert expected in err.value.message


def test_configuration_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('state_dir = "/tmp/x"\n[[hosts]]\nname = "h1"\nuri = "qemu+tcp://198.19.0.11/system"\nzone = "1"\n')
    cfg = load_config(path)
    assert str(cfg.state_dir) == "/tmp/x" and cfg.hosts[0].zone == "1"
    path.write_text("state_dir = [")
    with pytest.raises(InvalidSpec, match="not valid TOML"):
        load_config(path)
    with pytest.raises(InvalidSpec, match="does not exist"):
        load_config(tmp_path / "missing.toml")
