"""Day-2 commands against the real daemon: ``watch`` shows a running instance with its CPU and
HAProxy sessions, ``boot-diagnostics get-boot-log`` prints the guest's serial console, the
activity log's filters return the expected entries, and the daemon logs accepted and refused
requests once each."""

from __future__ import annotations

import json
import re

from localvmss.cli.client import ApiClient
from localvmss.lab.testbed import DaemonProcess, Testbed, free_port
from tests.conftest import Cli
from tests.e2e.helpers import wait_until

READY_LINE = "localvmss-guest: ready hostname="
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def _kinds(cli: Cli, name: str, *filters: str) -> list[str]:
    return [e["kind"] for e in json.loads(cli.ok("-o", "json", "activity-log", name, *filters))]


def test_watch_boot_log_and_activity_filters(
    cli: Cli, api: ApiClient, daemon: DaemonProcess, testbed: Testbed, name: str
) -> None:
    port = free_port()
    cli.ok("create", name, "--image", "base", "--instance-count", "1", "--lb-rule", f"{port}:80")
    metrics = f"/scaleSets/{name}/instanceMetrics"
    wait_until(lambda: api.get(metrics)["value"][0]["lbStatus"] == "UP", 60, "the instance UP in HAProxy")

    # watch: two plain snapshots (stdout is a pipe), the second with a CPU figure.
    out = cli.ok("watch", name, "--count", "2", "--interval", "1")
    snapshots = out.split(f"{name} at ")[1:]
    assert len(snapshots) == 2, out
    row = next(line.split() for line in snapshots[1].splitlines() if line.split()[:1] == ["0"])
    assert row[2:5] == ["running", "Succeeded", "healthy"], row
    assert row[5].endswith("%") and "(UP)" in snapshots[1], snapshots[1]
    first = json.loads(cli.ok("-o", "json", "watch", name, "--count", "1"))
    assert first["value"][0]["cpuSeconds"] > 0 and first["value"][0]["lbSessions"] == 0

    # boot-diagnostics: the serial console as libvirt logged it on the instance's host.
    view = api.get(f"/scaleSets/{name}/virtualMachines/0/instanceView")
    console = cli.ok("boot-diagnostics", "get-boot-log", name, "--instance-id", "0")
    assert READY_LINE in console, console[-2000:]
    assert READY_LINE in testbed.serial_log(view["host"], view["domainName"])
    missing = cli("boot-diagnostics", "get-boot-log", name, "--instance-id", "9")
    assert missing.returncode == 3 and "instance 9" in missing.stderr and missing.stderr.count("\n") == 1

    # activity log: real timestamps and filters done by the daemon.
    cli.ok("set-protection", name, "--instance-id", "0", "--protect-from-scale-in", "true")
    everything = json.loads(cli.ok("-o", "json", "activity-log", name))
    # "ready": the instance's cold boot and how long it took to become healthy.
    assert [e["kind"] for e in everything] == ["create", "scale-out", "ready", "protection"], everything
    table = cli.ok("activity-log", name)
    assert len(ISO_UTC.findall(table)) == 4, table
    assert _kinds(cli, name, "--kind", "protection") == ["protection"]
    assert _kinds(cli, name, "--instance-id", "0") == ["scale-out", "ready", "protection"]
    assert _kinds(cli, name, "--max-events", "1") == ["protection"]
    assert _kinds(cli, name, "--start-time", everything[3]["eventTimestamp"]) == ["protection"]
    assert _kinds(cli, name, "--offset", "1h") == ["create", "scale-out", "ready", "protection"]
    assert _kinds(cli, name, "--end-time", "1h") == []
    bad = cli("activity-log", name, "--start-time", "soon")
    assert bad.returncode == 2 and "--start-time 'soon'" in bad.stderr

    # The daemon's log: the accepted request once at INFO with its reason, the refusal once.
    log = daemon.log_path.read_text(errors="replace")
    assert log.count(f"{name}: protection: instance 0 protection scale_in=True") == 1
    assert log.count(f"refused GET /scaleSets/{name}/virtualMachines/9/bootLog: 404") == 1
    cli.ok("delete", name)
