"""Terminate notification end to end: a set behind HAProxy under steady load, with
``terminateNotificationProfile`` enabled (notBeforeTimeout PT60S). A scale-in drains the chosen
instance, its guest reads the Terminate event from the metadata service on its gateway (the
proxy in the lab host's namespace), says so on its serial console and acknowledges it, and the
instance is deleted at once, long before NotBefore; not one request fails. With
``scaleInPolicy.forceDeletion`` the next scale-in sends no notice at all."""

from __future__ import annotations

import re
import time

from localvmss.cli.client import ApiClient
from localvmss.lab.testbed import Testbed, free_port
from tests.conftest import Cli
from tests.e2e.helpers import backend_names, create_set, instances, libvirt_view, wait_until
from tests.e2e.load import Load


def _placement(api: ApiClient, name: str) -> dict[str, tuple[str, str]]:
    """instance id -> (host, computer name)."""
    return {
        i["instanceId"]: (i["properties"]["instanceView"]["host"], i["properties"]["instanceView"]["computerName"])
        for i in instances(api, name)
    }


def _notices(api: ApiClient, name: str) -> list[str]:
    return [a["message"] for a in api.get(f"/scaleSets/{name}/activityLog")["value"] if a["kind"] == "terminate-notice"]


def test_scale_in_tells_the_guest_which_acknowledges_and_force_deletion_does_not(
    cli: Cli, api: ApiClient, testbed: Testbed, name: str
) -> None:
    port = free_port()
    try:
        create_set(
            cli,
            name,
            3,
            "--terminate-notification-time",
            "PT60S",
            port=port,
            timeout=400,
        )
        shown = api.get(f"/scaleSets/{name}")["properties"]
        assert shown["virtualMachineProfile"]["scheduledEventsProfile"]["terminateNotificationProfile"] == {
            "enable": True,
            "notBeforeTimeout": "PT60S",
        }
        before = _placement(api, name)
        wait_until(
            lambda: backend_names(port, 30) == {c for _h, c in before.values()}, 90, "all three answering via HAProxy"
        )

        # 1. Scale-in with the notice: the guest acknowledges, the deletion follows at once.
        with Load(port, threads=2, max_seconds=300) as load:
            time.sleep(2)
            t0 = time.monotonic()
            cli.ok("scale", name, "--new-capacity", "2", timeout=300)
            took = time.monotonic() - t0
            time.sleep(2)
        middle = _placement(api, name)
        (gone,) = set(before) - set(middle)
        host, computer = before[gone]
        serial = testbed.serial_log(host, f"lvmss-{name}-{gone}")
        notices = _notices(api, name)
        result = load.result
        print(
            f"\nscale-in 3 -> 2 with a terminate notice (PT60S) took {took:.1f} s; {notices}; load: sent "
            f"{result.sent}, failed {result.failed} ({dict(result.errors)}), per backend {dict(result.answers)}"
        )
        seen = re.search(rf"localvmss-agent: terminate notice (\S+) for {computer}; acknowledging", serial)
        assert seen, serial[-1500:]
        event_id = seen.group(1)
        assert f"localvmss-agent: acknowledged terminate notice {event_id}" in serial, serial[-1500:]
        sent = [m for m in notices if f"EventId {event_id}" in m]
        assert sent and f"terminate notice sent to {computer}" in sent[0], notices
        done = [m for m in notices if m.startswith(f"instance {gone}: terminate notice {event_id}")]
        assert done and "acknowledged after" in done[0] and "not acknowledged" not in done[0], notices
        waited = float(re.search(r"acknowledged after ([0-9.]+) s", done[0]).group(1))  # type: ignore[union-attr]
        assert waited < 60, f"deleted on the acknowledgement, not at NotBefore: {done[0]}"
        assert f"lvmss-{name}-{gone}" not in libvirt_view(testbed, name)["domains"]
        assert result.failed == 0, f"failed requests: {result.failures[:10]}"

        # 2. forceDeletion: the next scale-in sends no notice.
        cli.ok("update", name, "--force-deletion", "true", timeout=120)
        assert api.get(f"/scaleSets/{name}")["properties"]["scaleInPolicy"]["forceDeletion"] is True
        with Load(port, threads=2, max_seconds=300) as load:
            time.sleep(2)
            cli.ok("scale", name, "--new-capacity", "1", timeout=300)
            time.sleep(2)
        after = _placement(api, name)
        (forced,) = set(middle) - set(after)
        host, computer = middle[forced]
        serial = testbed.serial_log(host, f"lvmss-{name}-{forced}")
        notices = _notices(api, name)
        result = load.result
        print(f"scale-in 2 -> 1 with forceDeletion: {notices[-1]}; load: sent {result.sent}, failed {result.failed}")
        assert "localvmss-agent: terminate notice" not in serial, serial[-1500:]
        assert notices[-1] == f"instance {forced}: forceDeletion: deleted without a terminate notice", notices
        assert not any(f"sent to {computer}" in m for m in notices), notices
        assert result.failed == 0, f"failed requests: {result.failures[:10]}"
    finally:
        try:
            api.delete(f"/scaleSets/{name}")
            wait_until(lambda: libvirt_view(testbed, name)["domains"] == {}, 180, f"{name} deleted")
        except Exception as exc:  # noqa: BLE001 - clean-up must not hide the test's own failure
            print(f"clean-up of {name}: {exc}")
