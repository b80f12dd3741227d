"""Automatic instance repair and instance protection, on real VMs."""

from __future__ import annotations

import json

from localvmss.cli.client import ApiClient
from localvmss.lab.testbed import Testbed
from tests.conftest import Cli
from tests.e2e.helpers import instances, libvirt_view, wait_until


def test_unhealthy_instance_is_repaired(cli: Cli, api: ApiClient, name: str) -> None:
    cli.ok(
        "create",
        name,
        "--image",
        "base",
        "--instance-count",
        "1",
        "--enable-automatic-repairs",
        "--automatic-repairs-grace-period",
        "PT10S",
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
