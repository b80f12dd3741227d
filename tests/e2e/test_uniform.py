"""Uniform scale sets end to end: the daemon as users run it, driven through the CLI and API,
checked against what libvirt itself reports (never only the daemon's database)."""

from __future__ import annotations

import json
import re
import time

import pytest

from localvmss.cli.client import ApiClient
from localvmss.errors import LocalVMSSError
from localvmss.lab.testbed import Testbed
from tests.conftest import Cli
from tests.e2e.helpers import http_get, instances, ips, libvirt_view, settled_sets, uniform_body, wait_until


def _hostnames(api: ApiClient, name: str) -> dict[str, str]:
    out = {}
    for iid, ip in ips(api, name).items():
        status, body = http_get(f"http://{ip}/")
        assert status == 200, f"instance {iid} at {ip} answered {status}"
        out[iid] = body
    return out


def test_create_scale_inspect_delete(cli: Cli, api: ApiClient, testbed: Testbed, name: str) -> None:
    cli.ok("create", name, "--image", "base", "--instance-count", "2", "--computer-name-prefix", "web")
    names = _hostnames(api, name)
    assert names == {"0": "web000000", "1": "web000001"}

    cli.ok("scale", name, "--new-capacity", "3")
    names = _hostnames(api, name)
    assert sorted(names) == ["0", "1", "2"] and names["2"] == "web000002"
    view = libvirt_view(testbed, name)
    assert sorted(view["domains"]) == [f"lvmss-{name}-{i}" for i in range(3)]
    macs = {i["properties"]["networkProfile"]["macAddress"] for i in instances(api, name)}

    cli.ok("scale", name, "--new-capacity", "1")
    view = libvirt_view(testbed, name)
    assert list(view["domains"]) == [f"lvmss-{name}-0"], "Default scale-in removes the highest ids"
    assert sorted(view["volumes"]) == [f"lvmss-{name}-0-os.qcow2", f"lvmss-{name}-0-seed.iso"]
    remaining_macs = {m for m, _ in view["reservations"]} & macs
    assert len(remaining_macs) == 1, "the removed instances' DHCP reservations are released"

    table = cli.ok("list-instances", name)
    assert "web000000" in table and "web000001" not in table
    shown = json.loads(cli.ok("-o", "json", "show", name))
    assert shown["sku"]["capacity"] == 1 and shown["properties"]["orchestrationMode"] == "Uniform"

    cli.ok("delete", name)
    view = libvirt_view(testbed, name)
    assert view["domains"] == {} and view["volumes"] == []
    assert not ({m for m, _ in view["reservations"]} & macs)


CLEAN_SHUTDOWN = "localvmss-guest: shut down cleanly"


def _serial_log(testbed: Testbed, api: ApiClient, name: str, iid: int = 0) -> str:
    view = api.get(f"/scaleSets/{name}/virtualMachines/{iid}/instanceView")
    return testbed.serial_log(view["host"], view["domainName"])


def test_instance_actions_change_libvirt(cli: Cli, api: ApiClient, testbed: Testbed, name: str) -> None:
    cli.ok("create", name, "--image", "base", "--instance-count", "1")
    dom = f"lvmss-{name}-0"

    def state() -> str | None:
        found = libvirt_view(testbed, name)["domains"].get(dom)
        return found[1] if found else None

    assert state() == "running"
    # A file written without sync: a graceful stop keeps it (the guest syncs as it shuts down).
    wrote = api.post(f"/scaleSets/{name}/virtualMachines/0/runCommand", {"script": "echo kept > /root/unsynced"})
    assert wrote["exitCode"] == 0, wrote
    stopped = cli("stop", name, "--instance-ids", "0")
    assert stopped.returncode == 0 and "1 instance(s) stopped" in stopped.stderr, stopped.stderr
    assert state() == "stopped", "the CLI waits until the guest is off"
    row = next(line for line in stopped.stdout.splitlines() if f"{name}_0" in line)
    assert " stopped " in row and " unknown " in row, f"the CLI shows the instance as it left it: {row!r}"
    print(f"\ngraceful stop: {stopped.stderr.strip().splitlines()[-1]}")
    assert CLEAN_SHUTDOWN in _serial_log(testbed, api, name), "stop shuts the guest down, not only off"
    view = api.get(f"/scaleSets/{name}/virtualMachines/0/instanceView")
    assert {"code": "PowerState/stopped", "displayStatus": "VM stopped"} in view["statuses"]
    assert view["vmHealth"]["status"]["code"].endswith("/unknown"), "a guest that is off has no health"

    cli.ok("start", name, "--instance-ids", "0")
    assert state() == "running"
    kept = api.post(f"/scaleSets/{name}/virtualMachines/0/runCommand", {"script": "cat /root/unsynced"})
    assert kept["stdout"].strip() == "kept", kept

    cli.ok("stop", name, "--instance-ids", "0", "--skip-shutdown")
    assert state() == "stopped"
    said = [e["message"] for e in api.get(f"/scaleSets/{name}/activityLog")["value"]]
    assert any(re.fullmatch(r"instance 0 stopped: the guest shut down in [\d.]+ s", m) for m in said), said
    assert "instance 0 stopped: powered off without a guest shutdown" in said, said
    log = _serial_log(testbed, api, name)
    assert "localvmss-guest: ready" in log and CLEAN_SHUTDOWN not in log, "--skip-shutdown powers off at once"
    cli.ok("start", name, "--instance-ids", "0")
    assert state() == "running"

    cli.ok("deallocate", name, "--instance-ids", "0")
    wait_until(lambda: state() is None, 60, "deallocate to remove the domain")
    assert f"{dom}-os.qcow2" in libvirt_view(testbed, name)["volumes"], "deallocate keeps the disk"
    marker = "reimage-marker"
    cli.ok("start", name, "--instance-ids", "0")
    ip = ips(api, name)["0"]
    out = api.post(f"/scaleSets/{name}/virtualMachines/0/runCommand", {"script": f"touch /root/{marker}; hostname"})
    assert (
        out["exitCode"] == 0
        and out["stdout"].strip()
        == api.get(f"/scaleSets/{name}/virtualMachines/0")["properties"]["osProfile"]["computerName"]
    )

    # The kernel's boot id changes with every boot (comparing uptimes is wrong when the guest has
    # been up for less time than the restart takes).
    boot_id = "cat /proc/sys/kernel/random/boot_id"
    boot_before = api.post(f"/scaleSets/{name}/virtualMachines/0/runCommand", {"script": boot_id})["stdout"].strip()
    cli.ok("restart", name, "--instance-ids", "0")
    boot_after = api.post(f"/scaleSets/{name}/virtualMachines/0/runCommand", {"script": boot_id})["stdout"].strip()
    assert len(boot_before) == 36 and boot_after != boot_before, "restart rebooted the guest"

    cli.ok("reimage", name, "--instance-ids", "0")
    out = api.post(f"/scaleSets/{name}/virtualMachines/0/runCommand", {"script": f"ls /root/{marker}"})
    assert out["exitCode"] != 0, "reimage gives a fresh disk from the base image"
    assert ips(api, name)["0"] == ip, "reimage keeps the address"

    cli.ok("delete-instances", name, "--instance-ids", "0")
    assert api.get(f"/scaleSets/{name}")["sku"]["capacity"] == 0
    assert libvirt_view(testbed, name)["domains"] == {}
    cli.ok("delete", name)


def _exists(api: ApiClient, name: str) -> bool:
    try:
        api.get(f"/scaleSets/{name}")
        return True
    except LocalVMSSError:
        return False


@pytest.mark.parametrize(
    ("set_name", "body", "expected"),
    [
        ("Bad_Name", uniform_body(1), "is invalid"),
        ("x" * 40, uniform_body(1), "is invalid"),
        ("a;rm", uniform_body(1), "is invalid"),
        ("ok-name", uniform_body(1001), "from 0 to 1000"),
        ("ok-name", uniform_body(-1), "from 0 to 1000"),
        ("ok-name", uniform_body(1, image="nope"), "image 'nope' is unknown"),
        ("ok-name", {**uniform_body(1), "sku": {"name": "Standard_Z9", "capacity": 1}}, "vmSize 'Standard_Z9'"),
        ("ok-name", {"sku": {"capacity": 1}, "properties": {"orchestrationMode": "Uniform"}}, "required"),
        ("ok-name", {**uniform_body(1), "bogus": 1}, "bogus"),
        ("ok-name", ["not", "an", "object"], "JSON object"),
        ("ok-name", uniform_body(1, platformFaultDomainCount=6), "from 1 to 5"),
        ("ok-name", uniform_body(1, orchestrationMode="Sideways"), "orchestrationMode"),
    ],
)
def test_bad_input_changes_nothing(api: ApiClient, set_name: str, body: object, expected: str) -> None:
    before = settled_sets(api)
    with pytest.raises(LocalVMSSError) as err:
        api.put(f"/scaleSets/{set_name}", body)
    assert expected in err.value.message
    assert settled_sets(api) == before
    assert not _exists(api, set_name) or set_name in before


def test_bad_capacity_and_duplicates_change_nothing(cli: Cli, api: ApiClient, name: str) -> None:
    cli.ok("create", name, "--image", "base", "--instance-count", "0")
    dup = cli("create", name, "--image", "base", "--instance-count", "1")
    assert dup.returncode == 4 and "already exists" in dup.stderr
    for bad in ("1001", "-3"):
        result = cli("scale", name, "--new-capacity", bad)
        assert result.returncode == 2 and "from 0 to 1000" in result.stderr
    huge = cli("scale", name, "--new-capacity", "1000")
    assert huge.returncode == 6 and "not enough memory" in huge.stderr
    assert api.get(f"/scaleSets/{name}")["sku"]["capacity"] == 0
    missing = cli("show", "does-not-exist")
    assert missing.returncode == 3 and missing.stderr.count("\n") == 1
    time.sleep(0.1)
    cli.ok("delete", name)
