"""HAProxy in front of a scale set, changed live: real HAProxy, real VMs, traffic on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import paramiko
import pytest

from localvmss.cli.client import ApiClient
from localvmss.errors import LocalVMSSError
from localvmss.lab.testbed import DaemonProcess, free_port
from tests.conftest import Cli
from tests.e2e.helpers import backend_names, create_set, instances, settled_sets, uniform_body, wait_until
from tests.e2e.load import Load


def _haproxy_master(daemon: DaemonProcess) -> int:
    pidfile = daemon.config_path.parent / "children" / "haproxy.pid"
    return int(pidfile.read_text())


@pytest.fixture(scope="module")
def lb_set(daemon: DaemonProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One set of 2 behind HAProxy shared by this module's tests (each leaves it at 2 healthy
    instances; the scaling test runs last)."""
    cli = Cli(daemon.socket_path)
    name = f"lb{uuid.uuid4().hex[:6]}"
    tmp_path = tmp_path_factory.mktemp("lbkeys")
    port = free_port()
    nat_start = free_port(span=10)
    keyfile = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keyfile)], check=True)
    create_set(
        cli,
        name,
        2,
        "--nat-pool",
        f"{nat_start}-{nat_start + 9}:22",
        "--ssh-key-value",
        f"{keyfile}.pub",
        "--computer-name-prefix",
        "lb",
        port=port,
    )
    yield {"name": name, "port": port, "nat_start": nat_start, "key": str(keyfile)}
    cli("delete", name)


def test_haproxy_reloaded_and_killed_keeps_servers(
    daemon: DaemonProcess, cli: Cli, api: ApiClient, lb_set: dict[str, Any]
) -> None:
    port = lb_set["port"]
    wait_until(lambda: backend_names(port, 10) == {"lb000000", "lb000001"}, 60, "both instances in rotation")
    # Reloads under load through the daemon (`localvmss lb reload`, the path every config change
    # takes) lose no request and keep every server.
    with Load(port) as load:
        for _ in range(2):
            time.sleep(1.5)
            cli.ok("lb", "reload")
        time.sleep(2)
    print(f"\nHAProxy reload under load: sent {load.result.sent}, failed {load.result.failed}")
    assert load.result.failed == 0 and load.result.sent > 20, load.result.failures
    assert set(load.result.answers) == {"lb000000", "lb000001"}

    master = _haproxy_master(daemon)
    workers = _children_of(master)  # before the kill: orphans are re-parented at once
    assert workers, "the master has a worker"
    for pid in [master, *workers]:
        os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    wait_until(lambda: backend_names(port, 10) == {"lb000000", "lb000001"}, 60, "haproxy restored", 0.2)
    print(f"HAProxy restored with both servers {time.monotonic() - started:.1f} s after kill -9")
    wait_until(lambda: _haproxy_master(daemon) != master, 10, "the daemon to record the new master")


def _children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return out


def test_unhealthy_instance_leaves_rotation_and_returns(api: ApiClient, lb_set) -> None:
    name, port = lb_set["name"], lb_set["port"]
    wait_until(lambda: backend_names(port, 10) == {"lb000000", "lb000001"}, 60, "both instances in rotation")
    api.post(f"/scaleSets/{name}/virtualMachines/1/runCommand", {"script": "rm -f /run/localvmss/healthz"})
    wait_until(lambda: backend_names(port, 20) == {"lb000000"}, 60, "instance 1 out of rotation")
    health = api.get(f"/scaleSets/{name}/virtualMachines/1/instanceView")["vmHealth"]["status"]["code"]
    assert health == "HealthState/unhealthy"
    api.post(f"/scaleSets/{name}/virtualMachines/1/runCommand", {"script": "echo ok > /run/localvmss/healthz"})
    wait_until(lambda: backend_names(port, 20) == {"lb000000", "lb000001"}, 60, "instance 1 back in rotation")


def test_ssh_through_nat_pool_reaches_the_right_instance(cli: Cli, api: ApiClient, lb_set) -> None:
    info = json.loads(cli.ok("-o", "json", "list-instance-connection-info", lb_set["name"]))
    assert len(info) == 2
    for inst in instances(api, lb_set["name"]):
        port = inst["properties"]["networkProfile"]["natPort"]
        assert info[f"instance {inst['instanceId']}"] == f"127.0.0.1:{port}"
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        client.connect(
            "127.0.0.1",
            port=port,
            username="root",
            key_filename=lb_set["key"],
            look_for_keys=False,
            allow_agent=False,
            timeout=15,
        )
        _, out, _ = client.exec_command("hostname")
        assert out.read().decode().strip() == inst["properties"]["osProfile"]["computerName"]
        client.close()


def test_traffic_reaches_every_instance_and_scaling_drops_nothing(cli: Cli, api: ApiClient, lb_set) -> None:
    name, port = lb_set["name"], lb_set["port"]
    wait_until(lambda: backend_names(port, 10) == {"lb000000", "lb000001"}, 60, "both instances in rotation")
    with Load(port) as load:
        time.sleep(2)
        cli.ok("scale", name, "--new-capacity", "4")
        wait_until(lambda: len(backend_names(port, 20)) == 4, 60, "4 instances in rotation")
        cli.ok("scale", name, "--new-capacity", "1")
        time.sleep(2)
    result = load.result
    print(
        f"\nLB scale 2->4->1 under load: sent {result.sent}, failed {result.failed}, per backend {dict(result.answers)}"
    )
    assert result.sent > 100
    assert result.failed == 0, f"failed requests: {result.failures}"
    assert set(result.answers) >= {"lb000000", "lb000001", "lb000002", "lb000003"}
    assert backend_names(port) == {"lb000000"}


@pytest.mark.parametrize(
    ("lb", "expected"),
    [
        ({"loadBalancingRules": [{"frontendPort": 70000, "backendPort": 80}]}, "65535"),
        (
            {
                "loadBalancingRules": [
                    {"frontendPort": 18081, "backendPort": 80},
                    {"frontendPort": 18081, "backendPort": 81},
                ]
            },
            "18081",
        ),
        (
            {
                "loadBalancingRules": [{"frontendPort": 18082, "backendPort": 80}],
                "probes": [{"protocol": "Http", "requestPath": "healthz"}],
            },
            "/",
        ),
        (
            {
                "loadBalancingRules": [{"frontendPort": 18083, "backendPort": 80}],
                "inboundNatPools": [
                    {"frontendPortRangeStart": 18090, "frontendPortRangeEnd": 18091, "backendPort": 22}
                ],
            },
            "NAT",
        ),
        (
            {
                "loadBalancingRules": [{"frontendPort": 18095, "backendPort": 80}],
                "inboundNatPools": [
                    {"frontendPortRangeStart": 18090, "frontendPortRangeEnd": 18099, "backendPort": 22}
                ],
            },
            "18095",
        ),
    ],
)
def test_bad_lb_input_changes_nothing(api: ApiClient, name: str, lb: dict, expected: str) -> None:
    body = uniform_body(3)
    body["properties"]["virtualMachineProfile"]["networkProfile"] = {"loadBalancer": lb}
    before = settled_sets(api)
    with pytest.raises(LocalVMSSError) as err:
        api.put(f"/scaleSets/{name}", body)
    assert err.value.code == "InvalidParameter" and expected in err.value.message, err.value.message
    assert settled_sets(api) == before
