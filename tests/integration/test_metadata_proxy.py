"""The metadata proxy (``python -m localvmss.metadata_proxy``, a real process) in front of the
daemon's metadata socket (``localvmss.metadata.MetadataServer``, real unix socket, real store),
on loopback: guests are 127.0.0.1 and 127.0.0.2 (every 127/8 address is loopback), so the proxy
sees two source addresses exactly as it sees two guests on a gateway. No VM needed."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localvmss import children
from localvmss.addressing import AddressPlan
from localvmss.config import DaemonConfig, HostConfig
from localvmss.lab.testbed import free_port
from localvmss.metadata import MetadataServer, MetadataService
from localvmss.metadata_proxies import MetadataProxies, Placement, child_name, placement, stop_all
from localvmss.model import OrchestrationMode
from localvmss.spec import parse_scale_set_body
from localvmss.store import InstanceRow, ScheduledEventRow, Store


class Guest(http.client.HTTPConnection):
    """An HTTP connection from a chosen loopback source address (one "guest")."""

    def __init__(self, source: str, port: int) -> None:
        super().__init__("127.0.0.1", port, timeout=5, source_address=(source, 0))


def ask(source: str, port: int, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
    conn = Guest(source, port)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Metadata": "true", **headers})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[tuple[Store, MetadataServer, int, list[int]]]:
    store = Store(tmp_path / "state.db")
    spec, _ = parse_scale_set_body(
        "web",
        {
            "sku": {"capacity": 2},
            "properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": {"id": "base"}}}},
        },
        {"base"},
    )
    store.insert_scale_set("web", OrchestrationMode.UNIFORM.value, spec.model_dump(mode="json"), 2, "Succeeded")
    with store.transaction() as db:
        for iid, ip in ((0, "127.0.0.1"), (1, "127.0.0.2")):
            store.insert_instance(
                db,
                InstanceRow(
                    "web", iid, "h1", 0, iid, f"52:54:00:00:00:0{iid}", ip, 1, "running", "Succeeded", time.time()
                ),  # type: ignore[arg-type]
            )
    woken: list[int] = []
    server = MetadataServer(tmp_path / "metadata.sock", MetadataService(store, lambda: woken.append(1), time.time))
    server.start()
    port = free_port()
    proxy = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "localvmss.metadata_proxy",
            "--listen",
            f"127.0.0.1:{port}",
            "--upstream",
            str(tmp_path / "metadata.sock"),
            "--host",
            "h1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proxy.poll() is None, proxy.stdout.read().decode() if proxy.stdout else ""
                assert time.monotonic() < deadline, "the metadata proxy did not listen"
                time.sleep(0.05)
        yield store, server, port, woken
    finally:
        proxy.terminate()
        proxy.wait(10)
        server.stop()
        store.close()


def test_each_guest_reads_its_own_identity_and_events_and_acknowledges_only_its_own(
    plane: tuple[Store, MetadataServer, int, list[int]],
) -> None:
    store, _server, port, woken = plane
    status, doc = ask("127.0.0.1", port, "GET", "/metadata/instance?api-version=2021-02-01")
    assert status == 200 and doc["compute"]["instanceId"] == "0" and doc["compute"]["vmScaleSetName"] == "web"
    # What the guest claims about itself is replaced by what the proxy sees.
    status, doc = ask("127.0.0.2", port, "GET", "/metadata/instance", **{"X-Forwarded-For": "127.0.0.1"})
    assert status == 200 and doc["compute"]["osProfile"]["computerName"] == "web000001"
    status, doc = ask("127.0.0.3", port, "GET", "/metadata/instance")
    assert status == 404
    conn = Guest("127.0.0.1", port)
    conn.request("GET", "/metadata/scheduledevents")  # no Metadata: true
    resp = conn.getresponse()
    assert resp.status == 400 and "metadata header" in json.loads(resp.read())["error"]
    conn.close()

    store.schedule_event(ScheduledEventRow("ev-1", "web", 1, "Terminate", "web000001", time.time(), time.time() + 60))
    assert ask("127.0.0.1", port, "GET", "/metadata/scheduledevents") == (200, {"DocumentIncarnation": 0, "Events": []})
    status, doc = ask("127.0.0.2", port, "GET", "/metadata/scheduledevents")
    assert status == 200 and doc["DocumentIncarnation"] == 1
    assert [(e["EventId"], e["EventType"], e["Resources"]) for e in doc["Events"]] == [
        ("ev-1", "Terminate", ["web000001"])
    ]
    start = {"StartRequests": [{"EventId": "ev-1"}]}
    assert ask("127.0.0.1", port, "POST", "/metadata/scheduledevents", start) == (200, {"acknowledged": []})
    assert store.scheduled_events("web", 1)[0].acknowledged_at is None and woken == []
    assert ask("127.0.0.2", port, "POST", "/metadata/scheduledevents", start) == (200, {"acknowledged": ["ev-1"]})
    assert store.scheduled_events("web", 1)[0].acknowledged_at is not None and woken == [1]
    status, doc = ask("127.0.0.2", port, "GET", "/metadata/scheduledevents")
    assert doc["DocumentIncarnation"] == 2 and doc["Events"][0]["EventStatus"] == "Started"


def test_the_proxy_answers_503_at_once_while_the_daemon_is_down(
    plane: tuple[Store, MetadataServer, int, list[int]],
) -> None:
    _store, server, port, _woken = plane
    server.stop()
    started = time.monotonic()
    status, doc = ask("127.0.0.1", port, "GET", "/metadata/scheduledevents")
    took = time.monotonic() - started
    assert status == 503 and "does not answer" in doc["error"]
    print(f"\n503 from the proxy with the daemon down in {took * 1000:.0f} ms")
    server.start()  # a new daemon: the same proxy serves again
    assert ask("127.0.0.1", port, "GET", "/metadata/scheduledevents")[0] == 200


class _Inventory:
    """What MetadataProxies reads of the inventory: host entries and each network's gateway."""

    def __init__(self, hosts: list[HostConfig]) -> None:
        self.configs = {h.name: h for h in hosts}

    def address_plan(self, name: str) -> AddressPlan:
        return AddressPlan("127.0.0.1", "255.0.0.0", "127.0.0.10", "127.0.0.250", static=False)


def test_proxies_are_started_adopted_by_the_next_daemon_replaced_on_a_new_port_and_stopped(tmp_path: Path) -> None:
    hosts = [
        HostConfig(name="local", uri="qemu:///system"),
        HostConfig(name="far", uri="qemu+ssh://root@rack2/system"),
    ]
    cfg = DaemonConfig(state_dir=tmp_path, hosts=hosts, metadata_port=free_port())
    assert placement(hosts[0]) == Placement(True, None)
    assert not placement(hosts[1]).runs and "no instance metadata service" in placement(hosts[1]).reason
    assert placement(HostConfig(name="lab", uri="qemu:///system", metadata_netns="ns1")) == Placement(True, "ns1")
    upstream = tmp_path / "metadata.sock"
    first = MetadataProxies(cfg, _Inventory(hosts), upstream)  # type: ignore[arg-type]
    second = first
    try:
        first.ensure_running()
        pid = children.recorded(tmp_path, child_name("local"))
        assert pid is not None and children.recorded(tmp_path, child_name("far")) is None
        assert f"--listen 127.0.0.1:{cfg.metadata_port} " in children.cmdline(pid)
        # The next daemon (a new supervisor, nothing in memory) adopts the running proxy.
        second = MetadataProxies(cfg, _Inventory(hosts), upstream)  # type: ignore[arg-type]
        second.ensure_running()
        assert children.recorded(tmp_path, child_name("local")) == pid
        # Another port in the configuration: the proxy is replaced.
        cfg.metadata_port = free_port()
        second.ensure_running()
        replaced = children.recorded(tmp_path, child_name("local"))
        assert replaced is not None and replaced != pid
        assert children.cmdline(pid) == "" or "metadata_proxy" not in children.cmdline(pid)
    finally:
        stopped = stop_all(tmp_path)
        for proc in [*first._procs.values(), *second._procs.values()]:  # whatever a failed assertion left
            proc.kill()
            proc.wait(10)
    assert stopped == ["local"]
    assert children.recorded(tmp_path, child_name("local")) is None
