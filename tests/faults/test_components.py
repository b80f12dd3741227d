"""The parts the daemon relies on fail under it: a libvirtd restarted in the middle of a scale-out,
HAProxy and Prometheus killed with SIGKILL. Each ends with the shared set converged and libvirt
and HAProxy holding exactly what the records say (tests/faults/world.py)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import httpx

from localvmss.config import load_config
from localvmss.lab.testbed import DaemonProcess, Testbed
from tests.e2e.helpers import http_get, wait_until
from tests.faults.conftest import client, converged_world, settled, wait_settled
from tests.faults.procs import haproxy_pids, lab_host, prometheus_pid, restart_libvirtd, wait_gone


def _scale(daemon: DaemonProcess, name: str, capacity: int) -> None:
    api = client(daemon)
    try:
        api.patch(f"/scaleSets/{name}", {"sku": {"capacity": capacity}})
    finally:
        api.close()


def _new_instance_host(daemon: DaemonProcess, name: str, known: set[str]) -> str | None:
    api = client(daemon, 15)
    try:
        for inst in api.get(f"/scaleSets/{name}/virtualMachines")["value"]:
            if inst["instanceId"] not in known:
                return str(inst["properties"]["instanceView"]["host"])
    finally:
        api.close()
    return None


def test_libvirtd_restarted_in_the_middle_of_a_scale_out(
    daemon: DaemonProcess, testbed: Testbed, shared: dict[str, Any]
) -> None:
    name = shared["name"]
    wait_settled(daemon, shared)
    api = client(daemon)
    known = {i["instanceId"] for i in api.get(f"/scaleSets/{name}/virtualMachines")["value"]}
    api.close()
    _scale(daemon, name, 3)
    deadline = time.monotonic() + 60
    where = None
    while where is None and time.monotonic() < deadline:
        where = _new_instance_host(daemon, name, known)
        time.sleep(0.1)
    assert where, "no record of the new instance 60 s after the scale-out was acknowledged"
    host = lab_host(testbed, where)
    t0 = time.monotonic()
    restart_libvirtd(testbed, host)  # while the new instance's volumes and domain are being made
    restarted_after = time.monotonic() - t0
    wait_until(lambda: settled(daemon, shared, 3), 300, f"{name} at 3 after {host.name}'s libvirtd restarted")
    problems = converged_world(testbed, daemon, 90, "libvirt and HAProxy to match the records")
    print(f"{host.name}'s libvirtd restarted ({restarted_after:.1f} s) during the scale-out; problems: {problems}")
    assert not problems, "\n".join(problems)
    _scale(daemon, name, 2)
    wait_until(lambda: settled(daemon, shared), 300, f"{name} back at 2")
    problems = converged_world(testbed, daemon, 90, "libvirt and HAProxy to match the records")
    assert not problems, "\n".join(problems)


def test_haproxy_killed_is_started_again_with_every_server(
    daemon: DaemonProcess, testbed: Testbed, shared: dict[str, Any]
) -> None:
    name, port = shared["name"], shared["port"]
    wait_settled(daemon, shared)
    pids = haproxy_pids(daemon)
    assert pids, "no HAProxy runs for the daemon"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    for pid in pids:
        wait_gone(pid)
    wait_until(lambda: http_get(f"http://127.0.0.1:{port}/", timeout=2)[0] == 200, 60, "the frontend to answer again")
    serving_after = time.monotonic() - t0
    wait_until(lambda: settled(daemon, shared), 120, f"{name} serving from both instances again")
    problems = converged_world(testbed, daemon, 60, "HAProxy's servers to match the records")
    new_master = daemon.haproxy_master_pid()
    print(f"HAProxy (pids {pids}) killed; serving again after {serving_after:.1f} s as pid {new_master}")
    assert new_master and new_master not in pids
    assert not problems, "\n".join(problems)


def _fresh_series(daemon: DaemonProcess, name: str, after: float) -> int:
    """How many of the set's instances have a CPU sample in Prometheus newer than ``after``."""
    url = f"http://127.0.0.1:{load_config(daemon.config_path).prometheus_port}/api/v1/query"
    try:
        body = httpx.post(
            url, data={"query": f'timestamp(localvmss_instance_cpu_seconds_total{{scale_set="{name}"}})'}, timeout=5
        ).json()
    except (httpx.HTTPError, ValueError):
        return 0
    if body.get("status") != "success":
        return 0
    return sum(1 for r in body["data"]["result"] if float(r["value"][1]) > after)


def test_prometheus_killed_is_started_again_and_scrapes(
    daemon: DaemonProcess, testbed: Testbed, shared: dict[str, Any]
) -> None:
    name = shared["name"]
    wait_settled(daemon, shared)
    pid = prometheus_pid(daemon)
    assert pid, "no Prometheus runs for the daemon"
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)
    t0 = time.monotonic()
    wait_until(lambda: _fresh_series(daemon, name, killed_at) == 2, 120, "fresh samples of both instances")
    new = prometheus_pid(daemon)
    print(
        f"Prometheus pid {pid} killed; pid {new} had fresh samples of both instances "
        f"{time.monotonic() - t0:.1f} s later"
    )
    assert new and new != pid
    problems = converged_world(testbed, daemon, 60, "libvirt and HAProxy to match the records")
    assert not problems, "\n".join(problems)
