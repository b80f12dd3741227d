"""Rolling upgrades on real VMs behind HAProxy under steady load: a surge upgrade to a new image
loses no request and never serves with fewer healthy instances than its capacity; a set of 3
with default limits waits out one slow instance; a version whose guest never serves is stopped
after its first batch and rolled back, and get-latest and the activity log say why."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from localvmss.cli.client import ApiClient
from localvmss.lab.testbed import free_port
from tests.conftest import Cli
from tests.e2e.helpers import backend_names, instances, wait_until
from tests.e2e.load import Load


class UpCounter:
    """Samples HAProxy's view of the set (through the daemon's instanceMetrics) twice a second:
    how many of its servers are UP, at the least."""

    def __init__(self, api: ApiClient, name: str) -> None:
        self.api, self.name = api, name
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self.api.get(f"/scaleSets/{self.name}/instanceMetrics")["value"]
            self.samples.append(sum(1 for i in value if i["lbStatus"] == "UP"))
            self._stop.wait(0.5)

    def __enter__(self) -> UpCounter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _latest(api: ApiClient, name: str) -> dict[str, Any]:
    return dict(api.get(f"/scaleSets/{name}/rollingUpgrades/latest")["properties"])


def _script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    return str(path)


def test_a_surge_upgrade_to_a_new_image_keeps_capacity_and_loses_no_request(
    cli: Cli, api: ApiClient, name: str, image_dir: Path
) -> None:
    image = f"{name}-v2"
    cli.ok("image", "import", image, str(image_dir))
    port = free_port()
    cli.ok(
        "create", name, "--image", "base", "--instance-count", "4", "--platform-fault-domain-count", "2",
        "--lb-rule", f"{port}:80", "--health-probe", "http:/healthz",
        "--upgrade-policy-mode", "Rolling", "--max-surge", "true", "--max-batch-instance-percent", "50",
        "--pause-time-between-batches", "PT3S",
        timeout=400,
    )  # fmt: skip
    before = {i["instanceId"] for i in instances(api, name)}
    wait_until(lambda: len(backend_names(port, 30)) == 4, 90, "all four instances answering through HAProxy")
    with Load(port, threads=2, max_seconds=900) as load, UpCounter(api, name) as up:
        time.sleep(2)
        cli.ok("update", name, "--image", image, "--no-wait")
        wait_until(lambda: _latest_or_none(api, name) not in (None, "RollingForward"), 900, "the rollout to end", 2)
        time.sleep(2)
    latest = _latest(api, name)
    result = load.result
    print(
        f"\nsurge upgrade of 4: {latest['runningStatus']} progress {latest['progress']}; load sent {result.sent}, "
        f"failed {result.failed} ({dict(result.errors)}); fewest UP servers {min(up.samples)} over {len(up.samples)} "
        f"samples, most {max(up.samples)}"
    )
    assert latest["runningStatus"]["code"] == "Completed", latest
    assert latest["progress"]["successfulInstanceCount"] == 4
    after = instances(api, name)
    assert len(after) == 4 and all(i["properties"]["latestModelApplied"] for i in after)
    assert not before & {i["instanceId"] for i in after}, "surge: four new instances replaced the old ones"
    model = api.get(f"/scaleSets/{name}")["properties"]["virtualMachineProfile"]["storageProfile"]
    assert model["imageReference"]["id"] == image
    assert result.failed == 0, f"failed requests: {result.failures[:10]}"
    assert min(up.samples) >= 4, f"fewer than 4 servers UP during the rollout: {up.samples}"
    assert max(up.samples) > 4, "new instances served alongside the old ones before those left"
    batches = [a["message"] for a in api.get(f"/scaleSets/{name}/activityLog")["value"] if a["kind"] == "upgrade"]
    surges = [m for m in batches if "surge: new instances" in m]
    assert len(surges) == 2, batches  # 50 % of 4, one update domain each
    history = json.loads(cli.ok("-o", "json", "get-os-upgrade-history", name))
    assert history[0]["properties"]["changes"] == [f"image base -> {image}"], history[0]
    cli.ok("delete", name)


def _latest_or_none(api: ApiClient, name: str) -> str | None:
    try:
        return str(_latest(api, name)["runningStatus"]["code"])
    except Exception:  # noqa: BLE001 - no rollout yet: it starts with the next pass
        return None


def test_a_slow_instance_is_waited_for_and_a_version_that_never_serves_is_rolled_back(
    cli: Cli, api: ApiClient, name: str, tmp_path: Path
) -> None:
    port = free_port()
    cli.ok(
        "create", name, "--image", "base", "--instance-count", "3", "--lb-rule", f"{port}:80",
        "--health-probe", "http:/healthz", "--upgrade-policy-mode", "Rolling",
        "--rollback-failed-instances-on-policy-breach", "true",
        # The health grace (Azure's: Initializing until it ends) bounds how long an upgraded
        # instance may take to serve; repairs themselves stay off.
        "--automatic-repairs-grace-period", "PT90S",
        timeout=400,
    )  # fmt: skip
    wait_until(lambda: len(backend_names(port, 30)) == 3, 90, "all three instances answering")
    # Version 2: instance 1 takes far longer than the others to serve (its user-data sleeps).
    slow = _script(tmp_path, "slow.sh", 'case "$(hostname)" in *1) sleep 30;; esac\necho v2 > /root/model\n')
    with Load(port, threads=2, max_seconds=900) as load:
        cli.ok("update", name, "--custom-data", slow, "--no-wait")
        wait_until(lambda: _latest_or_none(api, name) not in (None, "RollingForward"), 900, "the rollout to end", 2)
    first = _latest(api, name)
    print(f"\nslow-instance rollout: {first['runningStatus']} {first['progress']}; load failed {load.result.failed}")
    assert first["runningStatus"]["code"] == "Completed", first
    assert first["progress"]["successfulInstanceCount"] == 3 and first["progress"]["failedInstanceCount"] == 0
    assert load.result.failed == 0, f"failed requests: {load.result.failures[:10]}"

    # Version 3: the guest never serves (its user-data never ends, so /healthz never answers).
    stuck = _script(tmp_path, "stuck.sh", "sleep 100000\n")
    preview = json.loads(cli.ok("-o", "json", "rolling-upgrade", "start", name, "--what-if"))
    assert preview["changes"] == [] or all(c["change"] == "keep" for c in preview["changes"]), "nothing outdated yet"
    with Load(port, threads=2, max_seconds=900) as load:
        cli.ok("update", name, "--custom-data", stuck, "--no-wait")
        wait_until(lambda: _latest_or_none(api, name) == "RolledBack", 900, "the rollback to end", 2)
        wait_until(
            lambda: all(
                i["properties"]["modelVersion"] == 2 and i["properties"]["provisioningState"] == "Succeeded"
                for i in instances(api, name)
            ),
            300,
            "every instance healthy on version 2",
        )
    latest = _latest(api, name)
    print(f"never-serving rollout: {latest['runningStatus']} {latest['progress']} {latest.get('rollbackInfo')}")
    assert latest["toModelVersion"] == 3 and latest["progress"]["failedInstanceCount"] == 1, "stopped after batch 1"
    assert latest["rollbackInfo"] == {"successfullyRolledbackInstanceCount": 1, "failedRolledbackInstanceCount": 0}
    assert "maxUnhealthyUpgradedInstancePercent" in latest["reason"]
    assert load.result.failed == 0, f"failed requests: {load.result.failures[:10]}"
    for inst in instances(api, name):
        run = api.post(
            f"/scaleSets/{name}/virtualMachines/{inst['instanceId']}/runCommand", {"script": "cat /root/model"}
        )
        assert run["stdout"].strip() == "v2", f"instance {inst['instanceId']} runs version 2 again"
    log = " | ".join(a["message"] for a in api.get(f"/scaleSets/{name}/activityLog")["value"])
    assert "RolledBack" in log and "maxUnhealthyUpgradedInstancePercent" in log, log[-1500:]
    time.sleep(6)
    assert len(api.get(f"/scaleSets/{name}/osUpgradeHistory")["value"][0]["properties"]["rollingUpgrades"]) == 1, (
        "a rolled-back version is not rolled out again by itself"
    )
    cli.ok("delete", name)
