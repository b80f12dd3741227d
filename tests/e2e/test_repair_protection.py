"""Automatic instance repair and instance protection, on real VMs: an instance whose application
fails, or whose domain is destroyed from outside (virsh destroy on its lab host), is repaired with
the set's repairAction after the grace period; a protected one is not; repairs that keep failing
suspend themselves and resume through the CLI."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from localvmss.cli.client import ApiClient
from localvmss.lab.testbed import Testbed
from tests.conftest import Cli
from tests.e2e.helpers import create_set, instances, libvirt_view, wait_until


def test_unhealthy_instance_is_repaired(cli: Cli, api: ApiClient, name: str) -> None:
    create_set(
        cli,
        name,
        1,
        "--enable-automatic-repairs",
        "--automatic-repairs-grace-period",
        "PT30S",
        "--automatic-repairs-action",
        "Reimage",
    )
    run = f"/scaleSets/{name}/virtualMachines/0/runCommand"
    assert api.post(run, {"script": "touch /root/marker && rm /run/localvmss/healthz"})["exitCode"] == 0
    wait_until(
        lambda: any(a["kind"] == "repair" for a in api.get(f"/scaleSets/{name}/activityLog")["value"]),
        120,
        "an automatic repair",
    )
    repair = [a for a in api.get(f"/scaleSets/{name}/activityLog")["value"] if a["kind"] == "repair"][0]
    assert "reimaging" in repair["message"]
    wait_until(
        lambda: (
            instances(api, name)[0]["properties"]["instanceView"]["vmHealth"]["status"]["code"] == "HealthState/healthy"
            and instances(api, name)[0]["properties"]["provisioningState"] == "Succeeded"
        ),
        180,
        "the repaired instance to be healthy",
    )
    assert api.post(run, {"script": "ls /root/marker"})["exitCode"] != 0, "repair gave it a fresh disk"
    cli.ok("delete", name)


def test_protected_instance_survives_scale_in_and_actions(
    cli: Cli, api: ApiClient, testbed: Testbed, name: str
) -> None:
    cli.ok("create", name, "--image", "base", "--instance-count", "2")
    cli.ok("set-protection", name, "--instance-id", "1", "--protect-from-scale-in", "true")
    cli.ok("scale", name, "--new-capacity", "1")
    assert [i["instanceId"] for i in instances(api, name)] == ["1"], "Default would remove the highest id"
    assert list(libvirt_view(testbed, name)["domains"]) == [f"lvmss-{name}-1"]
    cli.ok("set-protection", name, "--instance-id", "1", "--protect-from-scale-set-actions", "true")
    refused = cli("reimage", name, "--instance-ids", "1")
    assert refused.returncode == 4 and "protected" in refused.stderr
    view = json.loads(cli.ok("-o", "json", "list-instances", name))[0]["properties"]["protectionPolicy"]
    assert view == {"protectFromScaleIn": True, "protectFromScaleSetActions": True}
    cli.ok(
        "set-protection",
        name,
        "--instance-id",
        "1",
        "--protect-from-scale-set-actions",
        "false",
        "--protect-from-scale-in",
        "false",
    )
    cli.ok("delete", name)


# -- repairs of a domain destroyed from outside --------------------------------------------------
GRACE = "PT45S"  # a fresh boot is healthy in 8-13 s alone, over 20 s with three sets booting under xdist


def destroy_outside(testbed: Testbed, name: str, instance_id: int) -> None:
    """``virsh destroy`` of the instance's domain on its lab host, as an operator would."""
    assert testbed.lab is not None
    domain = f"lvmss-{name}-{instance_id}"
    host_name, _state = libvirt_view(testbed, name)["domains"][domain]
    (host,) = [h for h in testbed.lab.hosts if h.name == host_name]
    subprocess.run(["virsh", "-c", host.socket_uri, "destroy", domain], check=True, capture_output=True, timeout=60)
    wait_until(lambda: libvirt_view(testbed, name)["domains"][domain][1] == "stopped", 30, f"{domain} shut off")


def activity(api: ApiClient, name: str, kind: str) -> list[dict[str, Any]]:
    return [a for a in api.get(f"/scaleSets/{name}/activityLog")["value"] if a["kind"] == kind]


def health(api: ApiClient, name: str, instance_id: str) -> str:
    view = api.get(f"/scaleSets/{name}/virtualMachines/{instance_id}/instanceView")
    return str(view["vmHealth"]["status"]["code"])


def create_repaired(cli: Cli, api: ApiClient, name: str, action: str, grace: str = GRACE, wait: bool = True) -> None:
    """A set of one with automatic repairs. It is made with GRACE, which covers a first boot on a
    loaded machine, and only once its instance is healthy is the grace set to ``grace``: a
    shorter one from the start would (rightly) repair an instance still booting after it."""
    create_set(
        cli,
        name,
        1,
        "--enable-automatic-repairs",
        "--automatic-repairs-grace-period",
        GRACE,
        "--automatic-repairs-action",
        action,
        *([] if wait else ["--no-wait"]),
    )
    if wait:
        wait_until(lambda: health(api, name, "0") == "HealthState/healthy", 180, "a healthy instance")
    if grace != GRACE:
        assert wait, "a shorter grace is set once the instance is healthy"
        cli.ok("update", name, "--automatic-repairs-grace-period", grace)
        shown = api.get(f"/scaleSets/{name}")["properties"]["automaticRepairsPolicy"]["gracePeriod"]
        assert shown == grace, shown


def test_a_domain_destroyed_outside_is_repaired_after_the_grace_period_by_each_action(
    cli: Cli, api: ApiClient, testbed: Testbed, name: str
) -> None:
    """One set per repair action, side by side (their boots and grace periods overlap)."""
    sets = {action: f"{name}{action[:3].lower()}" for action in ("Replace", "Restart", "Reimage")}
    for action, set_name in sets.items():
        create_repaired(cli, api, set_name, action, wait=False)
    for set_name in sets.values():
        wait_until(lambda n=set_name: health(api, n, "0") == "HealthState/healthy", 180, f"{set_name}: healthy")
    for set_name in sets.values():
        destroy_outside(testbed, set_name, 0)
    for action, set_name in sets.items():
        wait_until(lambda n=set_name: health(api, n, "0") == "HealthState/unhealthy", 60, f"{set_name}: unhealthy")
        noticed = [
            a for a in activity(api, set_name, "health") if "the domain stopped outside localvmss" in a["message"]
        ]
        assert noticed and f"left to the automatic repair ({action} after {GRACE})" in noticed[0]["message"]
        assert libvirt_view(testbed, set_name)["domains"][f"lvmss-{set_name}-0"][1] == "stopped", "not started again"
    for action, set_name in sets.items():
        wait_until(lambda n=set_name: bool(activity(api, n, "repair")), 120, f"{set_name}: an automatic repair")
        (repair,) = activity(api, set_name, "repair")
        assert repair["details"] == {"action": action} and repair["instanceIds"] == ["0"], repair
        assert "the domain stopped outside localvmss" in repair["message"]
    for action, set_name in sets.items():
        survivor = "1" if action == "Replace" else "0"
        wait_until(
            lambda n=set_name, s=survivor: (
                [i["instanceId"] for i in instances(api, n)] == [s] and health(api, n, s) == "HealthState/healthy"
            ),
            240,
            f"{set_name}: instance {survivor} healthy after the {action} repair",
        )
        domains = libvirt_view(testbed, set_name)["domains"]
        assert list(domains) == [f"lvmss-{set_name}-{survivor}"] and domains[f"lvmss-{set_name}-{survivor}"][1] == (
            "running"
        ), domains
        assert len(activity(api, set_name, "repair")) == 1, f"{action}: one repair, and it worked"
    for set_name in sets.values():
        cli.ok("delete", set_name)


def test_a_protected_instance_destroyed_outside_stays_off_until_started(
    cli: Cli, api: ApiClient, testbed: Testbed, name: str
) -> None:
    create_repaired(cli, api, name, "Restart", grace="PT5S")
    cli.ok("set-protection", name, "--instance-id", "0", "--protect-from-scale-set-actions", "true")
    destroy_outside(testbed, name, 0)
    wait_until(lambda: health(api, name, "0") == "HealthState/unhealthy", 60, "instance 0 recorded unhealthy")
    time.sleep(15)  # three grace periods and more than a dozen health passes: room for a repair
    assert activity(api, name, "repair") == []
    assert libvirt_view(testbed, name)["domains"][f"lvmss-{name}-0"][1] == "stopped"
    cli.ok("start", name, "--instance-ids", "0")
    wait_until(lambda: health(api, name, "0") == "HealthState/healthy", 120, "instance 0 healthy once started")
    assert libvirt_view(testbed, name)["domains"][f"lvmss-{name}-0"][1] == "running"
    cli.ok("set-protection", name, "--instance-id", "0", "--protect-from-scale-set-actions", "false")
    cli.ok("delete", name)


def test_repairs_that_keep_failing_suspend_themselves_and_resume(cli: Cli, api: ApiClient, name: str) -> None:
    create_repaired(cli, api, name, "Restart", grace="PT5S")
    # /healthz answers from a link on the guest's disk: without it every boot is unhealthy (404),
    # and a restart keeps the disk.
    run = f"/scaleSets/{name}/virtualMachines/0/runCommand"
    assert api.post(run, {"script": "rm /srv/www/healthz && sync"})["exitCode"] == 0

    def service() -> dict[str, Any]:
        return dict(api.get(f"/scaleSets/{name}/instanceView")["orchestrationServices"][0])

    wait_until(lambda: service()["serviceState"] == "Suspended", 400, "automatic repairs suspended")
    restarts = [a for a in activity(api, name, "repair") if a["details"].get("action") == "Restart"]
    assert len(restarts) == 3, [a["message"] for a in activity(api, name, "repair")]
    (suspended,) = [a for a in activity(api, name, "repair") if "suspended" in a["message"]]
    assert "3 repairs in a row did not yield a healthy instance" in suspended["message"]
    assert "3 repairs in a row" in service()["reason"]
    shown = cli.ok("get-instance-view", name)
    assert "orchestration service AutomaticRepairs: Suspended (3 repairs in a row" in shown
    assert json.loads(cli.ok("-o", "json", "get-instance-view", name))["orchestrationServices"][0]["serviceState"] == (
        "Suspended"
    )
    refused = cli("set-orchestration-service-state", name, "--service-name", "AutomaticRepairs", "--action", "Pause")
    assert refused.returncode != 0 and "action 'Pause' is not known" in refused.stderr
    assert service()["serviceState"] == "Suspended", "a refused request changes nothing"
    out = cli.ok("set-orchestration-service-state", name, "--service-name", "AutomaticRepairs", "--action", "Resume")
    assert "AutomaticRepairs: Running" in out
    wait_until(
        lambda: len([a for a in activity(api, name, "repair") if a["details"].get("action") == "Restart"]) == 4,
        120,
        "repairs running again: a fourth restart",
    )
    assert any("resumed by request" in a["message"] for a in activity(api, name, "repair"))
    cli.ok("delete", name)
