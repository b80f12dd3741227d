"""Model updates and upgrade policies on real VMs: a rolling upgrade goes one update domain at a
time and every instance ends on the new model (checked inside the guests)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from localvmss.cli.client import ApiClient
from tests.conftest import Cli
from tests.e2e.helpers import create_set, instances, wait_until


def test_rolling_upgrade_goes_batch_by_batch(cli: Cli, api: ApiClient, name: str, tmp_path: Path) -> None:
    create_set(
        cli,
        name,
        3,
        "--platform-fault-domain-count",
        "3",
        "--upgrade-policy-mode",
        "Rolling",
        "--max-batch-instance-percent",
        "34",
    )
    script = tmp_path / "v2.sh"
    script.write_text("#!/bin/sh\necho model-v2 > /root/model\n")
    cli.ok("update", name, "--custom-data", str(script), "--no-wait")
    assert api.get(f"/scaleSets/{name}")["properties"]["modelVersion"] == 2

    most_in_flight = 0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        current = instances(api, name)
        in_flight = [i for i in current if i["properties"]["provisioningState"] != "Succeeded"]
        most_in_flight = max(most_in_flight, len(in_flight))
        if all(i["properties"]["latestModelApplied"] for i in current) and not in_flight:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the rolling upgrade did not finish within 600 s")
    assert most_in_flight == 1, "a batch is one update domain (34% of 3 instances)"
    batches = [a["message"] for a in api.get(f"/scaleSets/{name}/activityLog")["value"] if a["kind"] == "upgrade"]
    assert len(batches) == 3 and all(m.startswith("rolling upgrade of instances [") for m in batches), batches
    for inst in instances(api, name):
        out = api.post(
            f"/scaleSets/{name}/virtualMachines/{inst['instanceId']}/runCommand", {"script": "cat /root/model"}
        )
        assert out["stdout"].strip() == "model-v2", f"instance {inst['instanceId']} runs the new model"
    cli.ok("delete", name)


def test_manual_policy_waits_for_update_instances(cli: Cli, api: ApiClient, name: str, tmp_path: Path) -> None:
    cli.ok("create", name, "--image", "base", "--instance-count", "1")
    script = tmp_path / "v2.sh"
    script.write_text("#!/bin/sh\necho manual-v2 > /root/model\n")
    cli.ok("update", name, "--custom-data", str(script))
    time.sleep(3)
    view = json.loads(cli.ok("-o", "json", "list-instances", name))
    assert view[0]["properties"]["latestModelApplied"] is False, "Manual: nothing changes by itself"
    cli.ok("update-instances", name, "--instance-ids", "0")
    wait_until(lambda: instances(api, name)[0]["properties"]["latestModelApplied"], 60, "latest model")
    out = api.post(f"/scaleSets/{name}/virtualMachines/0/runCommand", {"script": "cat /root/model"})
    assert out["stdout"].strip() == "manual-v2"
    cli.ok("delete", name)
