"""What-if and overprovisioning, as users run them, under steady load through HAProxy.

* ``scale --what-if`` names the instances a scale-in removes, for each scale-in policy (one set
  of 4, its policy changed with ``update --scale-in-policy`` between scale-ins 4 -> 3 -> 2 -> 1);
  the real scale then removes exactly those, each guest logs its terminate notice (and its
  acknowledgement) before it goes, what-if itself changes nothing, and no request fails.
* With ``--overprovision`` a scale-out 1 -> 2 boots an extra, keeps the first to become healthy,
  and ends with exactly 2 instances; the extra that went never answered a request.
"""

from __future__ import annotations

import json
import re
import time

from localvmss.cli.client import ApiClient
from localvmss.lab.testbed import Testbed, free_port
from tests.conftest import Cli
from tests.e2e.helpers import backend_names, create_set, instances, libvirt_view, wait_until
from tests.e2e.load import Load


def _names(api: ApiClient, name: str) -> dict[str, str]:
    """instance id -> computer name, of the instances the set holds now."""
    return {i["instanceId"]: i["properties"]["instanceView"]["computerName"] for i in instances(api, name)}


def _create(cli: Cli, name: str, count: int, port: int, *flags: str) -> None:
    create_set(
        cli,
        name,
        count,
        "--platform-fault-domain-count",
        "2",
        *flags,
        port=port,
        timeout=600,
    )


def _delete(api: ApiClient, testbed: Testbed, name: str) -> None:
    try:
        api.delete(f"/scaleSets/{name}")
        wait_until(lambda: libvirt_view(testbed, name)["domains"] == {}, 120, f"{name} deleted")
    except Exception as exc:  # noqa: BLE001 - clean-up must not hide the test's own failure
        print(f"clean-up of {name}: {exc}")


def test_scale_in_removes_exactly_what_what_if_named_for_each_policy(
    cli: Cli, api: ApiClient, testbed: Testbed, name: str
) -> None:
    port = free_port()
    try:
        # With terminate notices: each instance a scale-in removes is told first and says so.
        _create(cli, name, 4, port, "--enable-terminate-notification", "true", "--terminate-notification-time", "PT60S")
        wait_until(lambda: backend_names(port, 40) == set(_names(api, name).values()), 90, "all 4 answering")
        with Load(port, threads=2, max_seconds=900) as load:
            time.sleep(2)
            for policy, capacity in (("Default", 3), ("NewestVM", 2), ("OldestVM", 1)):
                cli.ok("update", name, "--scale-in-policy", policy, timeout=120)
                before = _names(api, name)
                hosts = {i["instanceId"]: i["properties"]["instanceView"]["host"] for i in instances(api, name)}
                shown = api.get(f"/scaleSets/{name}")
                plan = json.loads(cli.ok("-o", "json", "scale", name, "--new-capacity", str(capacity), "--what-if"))
                table = cli.ok("scale", name, "--new-capacity", str(capacity), "--what-if")
                named = [c["instanceId"] for c in plan["changes"] if c["change"] == "remove"]
                assert len(named) == 1, plan
                assert "remove" in table and named[0] in table, table
                assert api.get(f"/scaleSets/{name}")["sku"] == shown["sku"], "what-if changed nothing"
                assert _names(api, name) == before, "what-if changed nothing"

                cli.ok("scale", name, "--new-capacity", str(capacity), timeout=300)
                after = _names(api, name)
                removed = sorted(set(before) - set(after))
                print(f"\n{policy}: {len(before)} -> {capacity}: what-if named {named}, removed {removed}: {plan}")
                assert removed == named, f"{policy}: what-if named {named}, the scale removed {removed}"
                serial = testbed.serial_log(hosts[removed[0]], f"lvmss-{name}-{removed[0]}")
                told = rf"localvmss-agent: terminate notice (\S+) for {before[removed[0]]}; acknowledging"
                seen = re.search(told, serial)
                assert seen and f"acknowledged terminate notice {seen[1]}" in serial, serial[-1500:]
                assert set(after) <= set(before), "a scale-in creates nothing"
            time.sleep(2)
        result = load.result
        print(
            f"load: sent {result.sent}, failed {result.failed} ({dict(result.errors)}), "
            f"per backend {dict(result.answers)}"
        )
        assert result.failed == 0, f"failed requests: {result.failures[:10]}"
        assert len(_names(api, name)) == 1
    finally:
        _delete(api, testbed, name)


def test_overprovisioned_scale_out_ends_with_exactly_the_capacity_and_extras_never_serve(
    cli: Cli, api: ApiClient, testbed: Testbed, name: str
) -> None:
    port = free_port()
    try:
        _create(cli, name, 1, port)
        (first,) = _names(api, name)
        cli.ok("update", name, "--overprovision", timeout=120)
        assert api.get(f"/scaleSets/{name}")["properties"]["overprovision"] is True
        wait_until(lambda: len(backend_names(port, 10)) == 1, 60, "the first instance answering")
        seen: dict[str, str] = {}
        with Load(port, threads=2, max_seconds=600) as load:
            time.sleep(2)
            plan = json.loads(cli.ok("-o", "json", "scale", name, "--new-capacity", "2", "--what-if"))
            creates = [c for c in plan["changes"] if c["change"] == "create"]
            assert len(creates) == 2 and all(c["overprovisioned"] for c in creates), plan
            cli.ok("scale", name, "--new-capacity", "2", "--no-wait")

            def all_three_seen() -> bool:
                seen.update(_names(api, name))
                return len(seen) >= 3

            wait_until(all_three_seen, 120, "the extra's record (1 + 1 asked + 1 extra)")
            wait_until(
                lambda: (
                    api.get(f"/scaleSets/{name}")["properties"]["provisioningState"] == "Succeeded"
                    and len(_names(api, name)) == 2
                ),
                600,
                "the set settled at 2",
            )
            kept = _names(api, name)
            wait_until(lambda: backend_names(port, 40) == set(kept.values()), 90, "both kept instances answering")
            time.sleep(2)
        result = load.result
        gone = {iid: cname for iid, cname in seen.items() if iid not in kept}
        log = [a["message"] for a in api.get(f"/scaleSets/{name}/activityLog")["value"]]
        print(
            f"\noverprovisioned scale-out 1 -> 2: seen {seen}, kept {kept}, removed {gone}; load: sent "
            f"{result.sent}, failed {result.failed}, per backend {dict(result.answers)}; "
            f"log: {[m for m in log if 'overprovision' in m]}"
        )
        assert len(kept) == 2 and first in kept
        assert len(gone) == 1, gone
        assert not set(gone.values()) & set(result.answers), "an extra that was removed answered requests"
        assert result.failed == 0, f"failed requests: {result.failures[:10]}"
        assert len(libvirt_view(testbed, name)["domains"]) == 2
        assert any(m.startswith("overprovisioning: kept instances") for m in log), log
    finally:
        _delete(api, testbed, name)
