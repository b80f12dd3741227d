"""A slow host is not a dead one: h2's libvirtd stopped with SIGSTOP for 30 s (it holds its
connections open and answers nothing), then continued.

Meanwhile the daemon must stay up and keep answering its API, keep h2 in service (shown slow,
never lost: no replacement is made for its instance), and the data plane must serve every request.
Afterwards libvirt and HAProxy must hold exactly what the records say. This once crashed the
daemon: see tests/unit/test_host_reconnect_rules.py.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from localvmss.errors import LocalVMSSError
from localvmss.lab.testbed import DaemonProcess, Testbed
from tests.e2e.helpers import wait_until
from tests.e2e.load import Load
from tests.faults.conftest import client, converged_world, settled, wait_settled
from tests.faults.procs import lab_host, libvirtd_pid

STOPPED_S = 30.0


def test_a_host_stopped_30s_is_slow_not_lost(daemon: DaemonProcess, testbed: Testbed, shared: dict[str, Any]) -> None:
    name, port = shared["name"], shared["port"]
    wait_settled(daemon, shared)
    api = client(daemon)
    before = {
        i["instanceId"]: i["properties"]["instanceView"]["host"]
        for i in api.get(f"/scaleSets/{name}/virtualMachines")["value"]
    }
    api.close()
    assert sorted(before.values()) == ["h1", "h2"], before
    h2 = lab_host(testbed, "h2")
    pid = libvirtd_pid(h2)
    daemon_pid = daemon.pid
    samples: list[str] = []
    slowest_answer = 0.0
    unavailable: list[str] = []
    seen_slow = False
    ids_seen: set[str] = set(before)
    api = client(daemon, 20)
    try:
        with Load(port, threads=4, max_seconds=300) as load:
            os.kill(pid, signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                while time.monotonic() - t0 < STOPPED_S:
                    asked = time.monotonic()
                    try:
                        hosts = {h["name"]: h for h in api.get("/hosts")["value"]}
                        insts = api.get(f"/scaleSets/{name}/virtualMachines")["value"]
                    except LocalVMSSError as exc:
                        samples.append(f"{asked - t0:.0f}s API error: {exc}")
                        time.sleep(1)
                        continue
                    slowest_answer = max(slowest_answer, time.monotonic() - asked)
                    seen_slow |= bool(hosts["h2"].get("slow"))
                    if not hosts["h2"]["available"]:
                        unavailable.append(f"{asked - t0:.0f}s: {hosts['h2'].get('message')}")
                    ids_seen |= {i["instanceId"] for i in insts}
                    samples.append(
                        f"{asked - t0:.0f}s h2 available={hosts['h2']['available']} slow={hosts['h2'].get('slow')} "
                        f"unanswered={hosts['h2'].get('unansweredSeconds')} "
                        f"instances={sorted(i['instanceId'] for i in insts)}"
                    )
                    time.sleep(1)
            finally:
                os.kill(pid, signal.SIGCONT)
            continued = time.monotonic()
            wait_until(
                lambda: daemon.proc is not None and daemon.proc.poll() is None and settled(daemon, shared),
                180,
                "the set to settle",
            )
            settled_after = time.monotonic() - continued
            time.sleep(2)
    finally:
        api.close()
    result = load.result
    alive = daemon.proc is not None and daemon.proc.poll() is None
    problems = (
        converged_world(testbed, daemon, 90, "libvirt and HAProxy to match the records")
        if alive
        else ["the daemon died"]
    )
    api = client(daemon)
    after = {
        i["instanceId"]: i["properties"]["instanceView"]["host"]
        for i in api.get(f"/scaleSets/{name}/virtualMachines")["value"]
    }
    api.close()
    print(
        f"\nh2's libvirtd stopped {STOPPED_S:.0f} s; the API's slowest answer meanwhile {slowest_answer:.2f} s; "
        f"h2 shown slow: {seen_slow}; unavailable samples: {unavailable}; settled {settled_after:.1f} s after "
        f"SIGCONT; load: sent "
        f"{result.sent}, failed {result.failed} {dict(result.errors)}\n" + "\n".join(samples[::3])
    )
    assert alive and daemon.pid == daemon_pid, f"the daemon died (exit {daemon.proc.poll() if daemon.proc else None})"
    assert not unavailable, f"h2 was declared unavailable while it was only stopped: {unavailable}"
    assert seen_slow, "h2 was never shown slow while its libvirtd answered nothing"
    assert ids_seen == set(before) and after == before, f"instances {before} -> seen {sorted(ids_seen)}, after {after}"
    assert not problems, "\n".join(problems)
    assert result.failed == 0, f"{result.failed} of {result.sent} requests failed: {result.failures[:20]}"
