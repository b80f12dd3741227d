"""A converged set costs (almost) nothing: the reconcile loop rests between passes instead of
running the next one as soon as its own workers finish (the daemon once made 51-98 passes per
second with 2-4 idle instances, taking CPU from the guests it manages)."""

from __future__ import annotations

import re
import time
import tomllib
import urllib.request

import psutil

from localvmss.cli.client import ApiClient
from localvmss.lab.testbed import DaemonProcess
from tests.e2e.helpers import instances, uniform_body, wait_until

IDLE_S = 12.0


def _passes(daemon: DaemonProcess) -> float:
    cfg = tomllib.loads(daemon.config_path.read_text())
    with urllib.request.urlopen(f"http://127.0.0.1:{cfg['exporter_port']}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    match = re.search(r"^localvmss_reconcile_duration_seconds_count (\S+)$", text, re.M)
    assert match, "the exporter reports reconcile passes"
    return float(match.group(1))


def test_a_converged_set_lets_the_loop_rest(daemon: DaemonProcess, api: ApiClient, name: str) -> None:
    interval = float(tomllib.loads(daemon.config_path.read_text())["reconcile_interval_s"])
    try:
        api.put(f"/scaleSets/{name}", uniform_body(2))

        def converged() -> bool:
            vms = instances(api, name)
            return len(vms) == 2 and all(v["properties"]["provisioningState"] == "Succeeded" for v in vms)

        wait_until(converged, 240, "2 instances Succeeded")
        time.sleep(2 * interval)  # the last boots' events and health changes settle
        assert daemon.pid is not None
        proc = psutil.Process(daemon.pid)
        cpu_before, passes_before, t0 = sum(proc.cpu_times()[:2]), _passes(daemon), time.monotonic()
        time.sleep(IDLE_S)
        cpu_after, passes_after, took = sum(proc.cpu_times()[:2]), _passes(daemon), time.monotonic() - t0
        passes = passes_after - passes_before
        print(
            f"\nidle for {took:.1f} s with 2 converged instances: {passes:.0f} reconcile passes "
            f"(interval {interval:g} s), daemon CPU {100 * (cpu_after - cpu_before) / took:.1f} % of a core"
        )
        # A resting loop makes one pass per interval (plus one per real event); never dozens a second.
        assert passes <= took / interval + 3, f"{passes:.0f} passes in {took:.1f} s: the loop does not rest"
    finally:
        try:
            api.delete(f"/scaleSets/{name}")
            wait_until(lambda: name not in {s["name"] for s in api.get("/scaleSets")["value"]}, 120, "set deleted")
        except Exception as exc:  # noqa: BLE001 - clean-up must not hide the test's own failure
            print(f"clean-up of {name}: {exc}")
