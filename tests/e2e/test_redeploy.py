"""redeploy on two lab hosts under load: the instance is drained, shut down, and started again on
the other host with its disk, keeping its id, name and NAT port; the set's other instance serves
every request meanwhile (0 failed)."""

from __future__ import annotations

import time

from localvmss.cli.client import ApiClient
from localvmss.lab.testbed import Testbed, free_port
from tests.conftest import Cli
from tests.e2e.helpers import backend_names, create_set, instances, libvirt_view, wait_until
from tests.e2e.load import Load


def _placement(api: ApiClient, name: str) -> dict[str, dict[str, object]]:
    out = {}
    for inst in instances(api, name):
        props = inst["properties"]
        out[inst["instanceId"]] = {
            "host": props["instanceView"]["host"],
            "computerName": props["instanceView"]["computerName"],
            "nat": props["networkProfile"]["natPort"],
            "ip": props["networkProfile"]["privateIpAddress"],
            "state": props["provisioningState"],
        }
    return out


def test_redeploy_moves_an_instance_to_the_other_host_under_load(
    cli: Cli, api: ApiClient, testbed: Testbed, name: str
) -> None:
    port, nat = free_port(), free_port(span=4)
    try:
        create_set(
            cli,
            name,
            2,
            "--platform-fault-domain-count",
            "2",
            "--nat-pool",
            f"{nat}-{nat + 3}:22",
            port=port,
            timeout=300,
        )
        before = _placement(api, name)
        assert sorted(p["host"] for p in before.values()) == ["h1", "h2"], before
        moved_id = next(i for i, p in before.items() if p["host"] == "h1")
        other_id = next(i for i in before if i != moved_id)
        wait_until(
            lambda: backend_names(port, 20) == {p["computerName"] for p in before.values()},
            60,
            "both instances answering through HAProxy",
        )
        wrote = api.post(f"/scaleSets/{name}/virtualMachines/{moved_id}/runCommand", {"script": "echo moved > /root/m"})
        assert wrote["exitCode"] == 0, wrote

        with Load(port, threads=2, max_seconds=400) as load:
            time.sleep(2)
            t0 = time.monotonic()
            cli.ok("redeploy", name, "--instance-ids", moved_id, timeout=400)
            took = time.monotonic() - t0
            wait_until(
                lambda: backend_names(port, 20) == {p["computerName"] for p in before.values()},
                90,
                "both instances answering through HAProxy again",
            )
            time.sleep(2)
        after = _placement(api, name)
        result = load.result
        print(
            f"\nredeploy of instance {moved_id}: h1 -> {after[moved_id]['host']} in {took:.1f} s "
            f"(address {before[moved_id]['ip']} -> {after[moved_id]['ip']}); load: sent {result.sent}, "
            f"failed {result.failed} ({dict(result.errors)}), per backend {dict(result.answers)}"
        )
        assert after[moved_id]["host"] == "h2", "moved to the other host"
        for key in ("computerName", "nat"):
            assert after[moved_id][key] == before[moved_id][key], f"{key} is kept"
        assert after[other_id] == before[other_id], "the other instance is untouched"
        assert after[moved_id]["state"] == "Succeeded"
        assert result.failed == 0, f"failed requests: {result.failures[:10]}"
        assert result.answers[str(before[other_id]["computerName"])] > 0
        read = api.post(f"/scaleSets/{name}/virtualMachines/{moved_id}/runCommand", {"script": "cat /root/m"})
        assert read["stdout"].strip() == "moved", "the disk moved with the instance"
        domains = libvirt_view(testbed, name)["domains"]
        assert domains[f"lvmss-{name}-{moved_id}"] == ("h2", "running"), domains
        log = " | ".join(a["message"] for a in api.get(f"/scaleSets/{name}/activityLog")["value"])
        assert f"instance {moved_id} redeployed from h1 to h2" in log, log[-600:]
    finally:
        try:
            api.delete(f"/scaleSets/{name}")
            wait_until(lambda: libvirt_view(testbed, name)["domains"] == {}, 120, f"{name} deleted")
        except Exception as exc:  # noqa: BLE001 - clean-up must not hide the test's own failure
            print(f"clean-up of {name}: {exc}")
