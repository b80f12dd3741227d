"""Fault domains, update domains and zones across hosts (and NUMA cells), end to end.

Real VMs on the two lab hosts of the session testbed (h1 in zone "1", h2 in zone "2"), real
HAProxy on loopback. Placement is checked against what libvirt on each lab host reports, not
only against the daemon's records. The host-loss test kills a lab host's libvirtd and guests,
then restarts that libvirtd exactly as the lab starts it, so the testbed stays usable; it is
the last test of this file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import libvirt
import pytest
from lxml import etree

from localvmss.cli.client import ApiClient
from localvmss.lab.hosts import LabHost, start_libvirtd, wait_libvirtd
from localvmss.lab.testbed import DaemonProcess, Testbed, free_port
from localvmss.virt.host import Host
from tests.conftest import Cli
from tests.e2e.helpers import (
    POOL,
    create_set,
    http_get,
    instances,
    libvirt_view,
    process_gone,
    settled_sets,
    uniform_body,
    wait_until,
)
from tests.e2e.load import Load


# -- helpers -------------------------------------------------------------------------------------
def _raw(daemon: DaemonProcess, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, Any]:
    """One API request; returns the HTTP status itself (the client only keeps the error kind)."""
    transport = httpx.HTTPTransport(uds=str(daemon.socket_path))
    with httpx.Client(transport=transport, base_url="http://localvmss", timeout=timeout) as client:
        resp = client.request(method, path, json=body)
    return resp.status_code, resp.json()


def _placement(api: ApiClient, name: str) -> dict[str, dict[str, Any]]:
    """instance id -> the instance view's placement fields (and what the health monitor says)."""
    out = {}
    for inst in instances(api, name):
        view = inst["properties"]["instanceView"]
        out[inst["instanceId"]] = {
            "host": view["host"],
            "zone": view["zone"],
            "fd": view["platformFaultDomain"],
            "ud": view["platformUpdateDomain"],
            "domain": view["domainName"],
            "computerName": view["computerName"],
            "ip": inst["properties"]["networkProfile"]["privateIpAddress"],
            "mac": inst["properties"]["networkProfile"]["macAddress"].lower(),
            "health": view["vmHealth"]["status"]["code"],
            "state": inst["properties"]["provisioningState"],
        }
    return out


def _hosts(api: ApiClient) -> dict[str, dict[str, Any]]:
    return {h["name"]: h for h in api.get("/hosts")["value"]}


def _backend_names(port: int, tries: int = 24) -> set[str]:
    seen = set()
    for _ in range(tries):
        status, body = http_get(f"http://127.0.0.1:{port}/", timeout=3)
        if status == 200:
            seen.add(body)
    return seen


def _cpus(cpuset: str) -> set[int]:
    """libvirt's cpuset syntax ("0-1,4", "^2") as a set of CPU numbers."""
    out: set[int] = set()
    for part in cpuset.split(","):
        part = part.strip()
        if part.startswith("^"):
            out.discard(int(part[1:]))
        elif "-" in part:
            lo, hi = part.split("-")
            out |= set(range(int(lo), int(hi) + 1))
        elif part:
            out.add(int(part))
    return out


def _set_converged(api: ApiClient, name: str, count: int) -> bool:
    s = api.get(f"/scaleSets/{name}")["properties"]
    return s["provisioningState"] == "Succeeded" and s["readyCount"] == count


def _delete_and_wait(api: ApiClient, testbed: Testbed, name: str, timeout: float = 120) -> None:
    try:
        api.delete(f"/scaleSets/{name}")
    except Exception:
        return
    wait_until(lambda: libvirt_view(testbed, name)["domains"] == {}, timeout, f"{name} deleted")


def _domains_on(lab_host: LabHost, set_name: str) -> dict[str, str]:
    """domain -> power state of a set's domains on one lab host, as its libvirt reports them."""
    host = Host(lab_host.name, lab_host.socket_uri)
    try:
        return {d.name: d.power_state.value for d in host.owned_domains(f"lvmss-{set_name}-")}
    finally:
        host.close()


def _lab_host(testbed: Testbed, name: str) -> LabHost:
    assert testbed.lab is not None
    return next(h for h in testbed.lab.hosts if h.name == name)


# -- bad input -----------------------------------------------------------------------------------
def _with(body: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {**body, **top}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (uniform_body(2, platformFaultDomainCount=0), "platformFaultDomainCount 0 must be from 1 to 5"),
        (uniform_body(2, platformFaultDomainCount=6), "platformFaultDomainCount 6 must be from 1 to 5"),
        (_with(uniform_body(2), zones=["7"]), "zones ['7'] have no hosts"),
        (_with(uniform_body(2), zones=["1", "7"]), "zones ['7'] have no hosts"),
        (uniform_body(2, faultDomainMapping="rack"), "faultDomainMapping"),
    ],
)
def test_bad_placement_input_changes_nothing(
    daemon: DaemonProcess, api: ApiClient, name: str, body: dict[str, Any], expected: str
) -> None:
    before = settled_sets(api)
    status, answer = _raw(daemon, "PUT", f"/scaleSets/{name}", body)
    assert status == 400, (status, answer)
    assert answer["error"]["code"] == "InvalidParameter" and expected in answer["error"]["message"], answer
    assert settled_sets(api) == before
    assert _raw(daemon, "GET", f"/scaleSets/{name}")[0] == 404


def test_host_that_does_not_answer_is_not_added(daemon: DaemonProcess, api: ApiClient, testbed: Testbed) -> None:
    assert testbed.lab is not None
    # An address of the lab's own rack subnet that no lab host holds: the connection attempt
    # stays on the rack bridge (ARP gets no answer), it never leaves this machine.
    silent = f"198.19.{testbed.lab.slot}.250"
    route = subprocess.run(["ip", "route", "get", silent], capture_output=True, text=True, check=True).stdout
    assert f"dev {testbed.lab.rack_bridge}" in route, f"{silent} must stay on the lab's rack bridge: {route}"

    def summary() -> list[tuple[str, str, str | None, bool]]:
        return sorted((h["name"], h["uri"], h["zone"], h["available"]) for h in api.get("/hosts")["value"])

    before = summary()
    started = time.monotonic()
    status, answer = _raw(daemon, "PUT", "/hosts/h9", {"uri": f"qemu+tcp://{silent}/system", "zone": "9"})
    took = time.monotonic() - started
    print(f"\nPUT /hosts/h9 at a silent address refused after {took:.1f} s: {answer['error']['message']}")
    message = answer["error"]["message"]
    assert status == 400 and "does not answer" in message and "nothing was added" in message, (status, answer)
    assert message.count("does not answer") == 1 and message.count(f"qemu+tcp://{silent}/system") == 1, message
    assert took < 20, f"refusing a silent host took {took:.0f} s"
    assert summary() == before
    assert "h9" not in _hosts(api)

    # The name decides (the lab hosts' own socket URIs are config-file only: the API refuses ?socket=).
    status, answer = _raw(daemon, "PUT", "/hosts/h1", {"uri": f"qemu+tcp://{silent}/system"})
    assert status == 409 and "already in the inventory" in answer["error"]["message"], (status, answer)
    status, answer = _raw(daemon, "PUT", "/hosts/h9", {"uri": f"qemu+tcp://{silent}/system", "zone": ""})
    assert status == 400 and "zone" in answer["error"]["message"], (status, answer)
    assert summary() == before


# -- zones ---------------------------------------------------------------------------------------
def test_zones_put_one_instance_on_each_zone_host(cli: Cli, api: ApiClient, testbed: Testbed, name: str) -> None:
    hosts = _hosts(api)
    assert hosts["h1"]["zone"] == "1" and hosts["h2"]["zone"] == "2", hosts
    try:
        cli.ok("create", name, "--image", "base", "--instance-count", "2", "--zones", "1", "--zones", "2", "--no-wait")
        shown = api.get(f"/scaleSets/{name}")
        assert shown["zones"] == ["1", "2"]
        # Placement is decided when the records are made; libvirt must then hold one domain per zone host.
        wait_until(
            lambda: (
                sorted(h for h, state in libvirt_view(testbed, name)["domains"].values() if state == "running")
                == ["h1", "h2"]
            ),
            120,
            "one running domain on each zone's host",
        )
        placement = _placement(api, name)
        assert sorted((p["zone"], p["host"]) for p in placement.values()) == [("1", "h1"), ("2", "h2")], placement
        domains = libvirt_view(testbed, name)["domains"]
        for p in placement.values():
            assert domains[p["domain"]][0] == p["host"], (p, domains)
        for inst in instances(api, name):
            assert inst["zones"] == [inst["properties"]["instanceView"]["zone"]]
    finally:
        _delete_and_wait(api, testbed, name)


# -- NUMA ----------------------------------------------------------------------------------------
def test_numa_mapping_pins_vcpus_and_memory_to_a_cell(api: ApiClient, testbed: Testbed, name: str) -> None:
    """faultDomainMapping "numa": fault domains are NUMA cells of one host.

    This machine's libvirt reports ONE NUMA cell, so here both fault domains land on cell 0:
    what is checked for real is that the domain XML libvirt holds pins vCPUs to cell 0's CPUs
    with strict memory placement on node 0, and that libvirt accepts and runs such a domain
    (the instances answer HTTP). Behaviour with several cells (fault domain 1 -> cell 1) is
    checked only through the generated XML, in tests/unit/test_domainxml.py.
    """
    body = uniform_body(2, platformFaultDomainCount=2, faultDomainMapping="numa")
    try:
        api.put(f"/scaleSets/{name}", body)
        wait_until(lambda: _set_converged(api, name, 2), 240, "2 NUMA-pinned instances ready")
        shown = api.get(f"/scaleSets/{name}")["properties"]
        assert shown["faultDomainMapping"] == "numa" and shown["platformFaultDomainCount"] == 2
        placement = _placement(api, name)
        assert sorted(p["fd"] for p in placement.values()) == [0, 1]
        assert all(p["ud"] == p["fd"] for p in placement.values()), "each fault domain is its own update domain"
        assert len({p["host"] for p in placement.values()}) == 1, f"numa mapping keeps the set on one host: {placement}"
        host_name = next(iter(placement.values()))["host"]
        lab_host = _lab_host(testbed, host_name)
        host = Host(lab_host.name, lab_host.socket_uri)
        conn = libvirt.open(lab_host.socket_uri)
        try:
            cells = host.capacity().cells
            print(f"\nlibvirt on {host_name} reports {len(cells)} NUMA cell(s): {cells}")
            cell0 = set(cells[0].cpus)
            for p in placement.values():
                root = etree.fromstring(host.domain_xml(p["domain"]).encode())
                memory = root.find("numatune/memory")
                assert memory is not None, f"{p['domain']} has no <numatune><memory>"
                assert (memory.get("mode"), memory.get("nodeset")) == ("strict", "0")
                pins = root.findall("cputune/vcpupin")
                assert pins and all(_cpus(pin.get("cpuset", "")) == cell0 for pin in pins), etree.tostring(root)
                assert _cpus(root.find("vcpu").get("cpuset", "")) == cell0
                # And what the running domain really got from libvirt:
                dom = conn.lookupByName(p["domain"])
                assert dom.isActive()
                numa = dom.numaParameters(libvirt.VIR_DOMAIN_AFFECT_LIVE)
                assert numa["numa_mode"] == libvirt.VIR_DOMAIN_NUMATUNE_MEM_STRICT and numa["numa_nodeset"] == "0"
                for cpumap in dom.vcpuPinInfo(libvirt.VIR_DOMAIN_AFFECT_LIVE):
                    assert {i for i, on in enumerate(cpumap) if on} == cell0
                status, body_text = http_get(f"http://{p['ip']}/")
                assert status == 200 and body_text == p["computerName"], (status, body_text)
        finally:
            conn.close()
            host.close()
        numa_cells = {h["name"]: h.get("numaCells") for h in api.get("/hosts")["value"]}
        print(f"NUMA cells per host (GET /hosts): {numa_cells}")
    finally:
        _delete_and_wait(api, testbed, name)


# -- fault domains across hosts, and losing a host (LAST: it stops and restarts h2) -------------
def _qemu_pids(lab_host: LabHost) -> dict[int, str]:
    """pid -> domain of every guest of a lab host, from libvirt's pid files, checked in /proc."""
    out = {}
    for pidfile in sorted(Path(lab_host.state_dir, "run", "qemu").glob("*.pid")):
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            continue
        domain = pidfile.name[: -len(".pid")]
        if "qemu-system" in cmdline and f"guest={domain}," in cmdline:
            out[pid] = domain
    return out


def _kill_host(lab_host: LabHost) -> list[str]:
    """A host failure: SIGKILL its libvirtd and its guests' qemu processes (only those pids)."""
    pid = lab_host.libvirtd_pid
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    assert cmdline.endswith("libvirtd"), f"pid {pid} of {lab_host.name} is {cmdline!r}, not libvirtd"
    guests = _qemu_pids(lab_host)
    os.kill(pid, signal.SIGKILL)
    for qpid in guests:
        os.kill(qpid, signal.SIGKILL)
    try:
        os.waitpid(pid, 0)  # the lab started it from this process: reap it
    except ChildProcessError:
        pass
    wait_until(lambda: all(process_gone(p) for p in [pid, *guests]), 15, "the killed processes to end", 0.1)
    return sorted(guests.values())


def _restart_libvirtd(testbed: Testbed, lab_host: LabHost) -> float:
    """Start the host's libvirtd again exactly as localvmss.lab does (teardown then stops the new
    one); returns when it was started (monotonic)."""
    assert testbed.lab is not None
    state = Path(lab_host.state_dir)
    started = time.monotonic()
    pid = start_libvirtd(lab_host)
    testbed.lab.save()
    wait_libvirtd(lab_host, timeout=60)
    tail = (state / "libvirtd.stderr").read_text(errors="replace").strip().splitlines()[-3:]
    print(f"{lab_host.name}: libvirtd restarted as pid {pid}; its log ends: {tail}")
    return started


def test_host_fault_domains_spread_serve_and_survive_losing_a_host(
    cli: Cli, api: ApiClient, testbed: Testbed, name: str
) -> None:
    assert testbed.lab is not None
    h2 = _lab_host(testbed, "h2")
    port = free_port()
    killed = restored = False
    check_name = f"{name}b"
    try:
        create_set(
            cli,
            name,
            4,
            "--platform-fault-domain-count",
            "2",
            "--fault-domain-mapping",
            "host",
            "--lb-rule",
            f"{port}:80",
            "--computer-name-prefix",
            "fd",
            timeout=300,
        )
        # 1. Fault domain n -> n-th host: two instances on each host, update domain = fault domain.
        placement = _placement(api, name)
        assert len(placement) == 4
        assert Counter(p["host"] for p in placement.values()) == {"h1": 2, "h2": 2}, placement
        for p in placement.values():
            assert p["host"] == {0: "h1", 1: "h2"}[p["fd"]], p
            assert p["ud"] == p["fd"], p
        domains = libvirt_view(testbed, name)["domains"]
        assert {d: h for d, (h, _) in domains.items()} == {p["domain"]: p["host"] for p in placement.values()}
        assert all(state == "running" for _, state in domains.values()), domains
        host_of = {p["computerName"]: p["host"] for p in placement.values()}
        wait_until(lambda: _backend_names(port) == set(host_of), 60, "HAProxy to answer from all 4 instances")
        print(f"\nserved through HAProxy from: {sorted((n, host_of[n]) for n in host_of)}")

        # 2. Lose h2: its libvirtd and its guests die.
        lost = {iid for iid, p in placement.items() if p["host"] == "h2"}
        lost_macs = {placement[i]["mac"] for i in lost}
        with Load(port, threads=1, max_seconds=240) as load:
            time.sleep(1)
            t_kill = time.monotonic()
            killed_domains = _kill_host(h2)
            killed = True
            assert {placement[i]["domain"] for i in lost} <= set(killed_domains), killed_domains

            def reported_lost() -> bool:
                now = _placement(api, name)
                assert lost <= set(now), "the lost instances were forgotten before they were reported unhealthy"
                # A guest that died with its host answers nothing: unknown (or unhealthy, if
                # something on the way refused the probe), never healthy.
                failing = {"HealthState/unhealthy", "HealthState/unknown"}
                unhealthy = all(now[i]["health"] in failing for i in lost)
                return unhealthy and not _hosts(api)["h2"]["available"]

            wait_until(reported_lost, 30, "h2 unavailable and its instances unhealthy", 0.5)
            t_reported = time.monotonic() - t_kill
            host_list = {h["name"]: h for h in json.loads(cli.ok("-o", "json", "host", "list"))}
            assert host_list["h2"]["available"] is False and "does not answer" in host_list["h2"]["message"]

            def capacity_held_on_h1() -> bool:
                now = _placement(api, name)
                on_h1 = {i: p for i, p in now.items() if p["host"] == "h1"}
                return (
                    lost <= set(now)  # unreachable is not gone: their records are kept
                    and len(on_h1) == 4
                    and all(p["state"] == "Succeeded" for p in on_h1.values())
                    and _backend_names(port, 12) == {p["computerName"] for p in on_h1.values()}
                )

            wait_until(capacity_held_on_h1, 150, "4 instances answering on h1, h2's records kept", 1.0)
            t_restored = time.monotonic() - t_kill
        after = _placement(api, name)
        answered = sum(load.result.answers.values())
        print(
            f"h2 lost: reported after {t_reported:.1f} s, capacity held on h1 after {t_restored:.1f} s; "
            f"load meanwhile: sent {load.result.sent}, answered {answered}, failed {load.result.failed} "
            f"({dict(load.result.errors)}), per backend {dict(load.result.answers)}"
        )
        assert answered > 0 and load.result.answers, "the frontend kept answering while h2 was lost"
        assert set(load.result.answers) <= set(host_of) | {p["computerName"] for p in after.values()}
        assert sorted(int(i) for i in after) == [0, 1, 2, 3, 4, 5], "replacements in addition, nothing forgotten"
        on_h1 = _domains_on(_lab_host(testbed, "h1"), name)  # libvirt_view would ask the dead h2 too
        assert on_h1 == {p["domain"]: "running" for p in after.values() if p["host"] == "h1"}, on_h1

        # 3. h2 comes back: its guests died with it; after a grace the surplus is scaled in by
        #    policy (failing instances first), and nothing on h2 is left without a record.
        t_back = _restart_libvirtd(testbed, h2)
        restored = True
        wait_until(lambda: _hosts(api)["h2"]["available"], 60, "the daemon to see h2 available again", 0.5)
        print(f"h2 available again {time.monotonic() - t_back:.1f} s after its libvirtd restarted")

        def back_to_four() -> bool:
            now = _placement(api, name)
            return (
                len(now) == 4
                and all(p["state"] == "Succeeded" for p in now.values())
                and _backend_names(port, 12) == {p["computerName"] for p in now.values()}
            )

        wait_until(back_to_four, 150, "the set back at 4 instances, all answering through HAProxy")
        print(f"surplus scaled in {time.monotonic() - t_back:.1f} s after h2's libvirtd restarted")
        final = _placement(api, name)

        def h2_has_only_recorded_objects() -> bool:
            host = Host(h2.name, h2.socket_uri)
            try:
                prefix = f"lvmss-{name}-"
                recorded = {p["domain"] for p in final.values() if p["host"] == "h2"}
                macs = {p["mac"].lower() for p in final.values() if p["host"] == "h2"}
                reserved = {mac.lower() for mac, _ in host.network_layout(h2.network_name)[4]}
                return (
                    {d.name for d in host.owned_domains(prefix)} == recorded
                    and {v.rsplit("-", 1)[0] for v in host.volume_names(POOL, prefix)} <= recorded
                    and not ((reserved & lost_macs) - macs)
                )
            finally:
                host.close()

        wait_until(h2_has_only_recorded_objects, 90, "h2 holding only objects of recorded instances")
        log = " | ".join(a["message"] for a in api.get(f"/scaleSets/{name}/activityLog")["value"])
        assert "host h2 does not answer" in log and "answers again" in log, log[-800:]

        # h2 is usable again: an instance placed on it (zone 2) boots and serves.
        check = uniform_body(1)
        check["zones"] = ["2"]
        api.put(f"/scaleSets/{check_name}", check)
        wait_until(lambda: _set_converged(api, check_name, 1), 180, "an instance on the restarted h2")
        only = next(iter(_placement(api, check_name).values()))
        assert only["host"] == "h2" and http_get(f"http://{only['ip']}/") == (200, only["computerName"])
    finally:
        if killed and not restored:
            _restart_libvirtd(testbed, h2)
            wait_until(lambda: _hosts(api)["h2"]["available"], 60, "h2 available again")
        _delete_and_wait(api, testbed, check_name)
        _delete_and_wait(api, testbed, name)
