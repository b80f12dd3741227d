"""What a converged deployment must look like, checked against libvirt and HAProxy themselves.

``observe`` reads every lab host's libvirtd (domains, volumes, DHCP host entries), HAProxy's own
runtime API (``show servers state``) and what the daemon says it holds (its API). ``problems``
compares them: an object in libvirt or HAProxy that no record accounts for is an orphan, a record
without its objects is missing, and an instance id, address, MAC or domain seen twice is a
duplicate. The database is never read directly: records come through the API, objects from the
components that hold them.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from localvmss.cli.client import ApiClient
from localvmss.lab.testbed import DaemonProcess, Testbed
from localvmss.lb.config import ADMIN_SOCKET
from localvmss.lb.runtime import RuntimeClient
from localvmss.virt.host import Host

POOL = "lvmss-pool"
# Volumes that belong to no instance: imported images and the accelerator probe's kernel.
SHARED_VOLUME = re.compile(r"^lvmss-(img|probe-kernel)-")
INSTANCE_VOLUME = re.compile(r"^(?P<domain>lvmss-.+-\d+)-(os\.qcow2|seed\.iso)$")
SERVER = re.compile(r"^i(?P<id>\d+)$")


@dataclass(frozen=True)
class Record:
    """One instance as the daemon reports it."""

    scale_set: str
    instance_id: int
    domain: str
    host: str
    ip: str
    mac: str
    computer_name: str
    state: str
    in_rotation: bool


@dataclass
class World:
    records: list[Record] = field(default_factory=list)
    lb_sets: set[str] = field(default_factory=set)  # sets with a load-balancing rule
    domains: list[tuple[str, str, str]] = field(default_factory=list)  # (host, domain, power state)
    volumes: list[tuple[str, str]] = field(default_factory=list)  # (host, volume)
    reservations: list[tuple[str, str, str]] = field(default_factory=list)  # (host, mac, ip)
    servers: list[tuple[str, str, str]] = field(default_factory=list)  # (backend, server, address)

    def summary(self) -> str:
        return (
            f"{len(self.records)} records, {len(self.domains)} domains, {len(self.volumes)} volumes, "
            f"{len(self.reservations)} DHCP reservations, {len(self.servers)} HAProxy servers"
        )


def records(api: ApiClient) -> tuple[list[Record], set[str]]:
    out: list[Record] = []
    lb_sets: set[str] = set()
    for s in api.get("/scaleSets")["value"]:
        name = s["name"]
        network = (s["properties"].get("virtualMachineProfile") or {}).get("networkProfile") or {}
        if (network.get("loadBalancer") or {}).get("loadBalancingRules"):
            lb_sets.add(name)
        for inst in api.get(f"/scaleSets/{name}/virtualMachines")["value"]:
            props = inst["properties"]
            view = props["instanceView"]
            health = view["vmHealth"]["status"]["code"]
            out.append(
                Record(
                    scale_set=name,
                    instance_id=int(inst["instanceId"]),
                    domain=view["domainName"],
                    host=view["host"],
                    ip=props["networkProfile"]["privateIpAddress"],
                    mac=props["networkProfile"]["macAddress"],
                    computer_name=props["osProfile"]["computerName"],
                    state=props["provisioningState"],
                    in_rotation=props["provisioningState"] == "Succeeded" and health == "HealthState/healthy",
                )
            )
    return out, lb_sets


def observe(testbed: Testbed, daemon: DaemonProcess, api: ApiClient) -> World:
    assert testbed.lab is not None
    world = World()
    world.records, world.lb_sets = records(api)
    for lab_host in testbed.lab.hosts:
        host = Host(lab_host.name, lab_host.socket_uri)
        try:
            world.domains += [(lab_host.name, d.name, d.power_state.value) for d in host.owned_domains("lvmss-")]
            world.volumes += [(lab_host.name, v) for v in host.volume_names(POOL, "lvmss-")]
            world.reservations += [
                (lab_host.name, mac.lower(), ip) for mac, ip in host.network_layout(lab_host.network_name)[4]
            ]
        finally:
            host.close()
    runtime = RuntimeClient(daemon.state_dir / "haproxy" / ADMIN_SOCKET)
    world.servers = [
        (row["be_name"], row["srv_name"], row["srv_addr"])
        for row in runtime.show_servers_state()
        if row["be_name"].startswith("lvmss-") and row["be_name"] != "lvmss-stats"
    ]
    return world


def _duplicates(values: list[Any]) -> list[Any]:
    return sorted(v for v, n in Counter(values).items() if n > 1)


def problems(world: World) -> list[str]:
    """Every orphan, missing object and duplicate, one line each; empty when converged."""
    out: list[str] = []
    recs = world.records
    for what, values in (
        ("instance id", [(r.scale_set, r.instance_id) for r in recs]),
        ("domain", [r.domain for r in recs]),
        ("address", [(r.host, r.ip) for r in recs]),
        ("MAC", [r.mac.lower() for r in recs]),
        ("computer name", [r.computer_name for r in recs]),
        ("libvirt domain", [d for _, d, _ in world.domains]),
        ("DHCP address", [(h, ip) for h, _, ip in world.reservations]),
        ("DHCP MAC", [(h, mac) for h, mac, _ in world.reservations]),
        ("HAProxy server", [(b, s) for b, s, _ in world.servers]),
    ):
        for dup in _duplicates(values):
            out.append(f"duplicate {what}: {dup}")
    unsettled = [f"{r.scale_set}/{r.instance_id}: {r.state}" for r in recs if r.state != "Succeeded"]
    if unsettled:
        out.append(f"instances not Succeeded: {unsettled}")

    # libvirt domains: exactly one per record, on the record's host, running.
    want_domains = {(r.host, r.domain) for r in recs}
    have_domains = {(h, d) for h, d, _ in world.domains}
    out += [f"orphan domain {d} on {h}" for h, d in sorted(have_domains - want_domains)]
    out += [f"missing domain {d} on {h}" for h, d in sorted(want_domains - have_domains)]
    out += [f"domain {d} on {h} is {state}, not running" for h, d, state in world.domains if state != "running"]

    # Volumes: each instance's disk and seed on its host; besides those only images.
    want_volumes = {(r.host, f"{r.domain}-{kind}") for r in recs for kind in ("os.qcow2", "seed.iso")}
    have_volumes = {(h, v) for h, v in world.volumes if not SHARED_VOLUME.match(v)}
    out += [f"orphan volume {v} on {h}" for h, v in sorted(have_volumes - want_volumes)]
    out += [f"missing volume {v} on {h}" for h, v in sorted(want_volumes - have_volumes)]

    # DHCP reservations: exactly the records' (MAC, address) pairs on their hosts' networks.
    want_res = {(r.host, r.mac.lower(), r.ip) for r in recs}
    have_res = set(world.reservations)
    out += [f"orphan DHCP reservation {m} {ip} on {h}" for h, m, ip in sorted(have_res - want_res)]
    out += [f"missing DHCP reservation {m} {ip} on {h}" for h, m, ip in sorted(want_res - have_res)]

    # HAProxy: a set's backends hold exactly its instances in rotation, at their addresses.
    by_set: dict[str, dict[int, Record]] = {}
    for r in recs:
        by_set.setdefault(r.scale_set, {})[r.instance_id] = r
    backends: dict[str, set[tuple[int, str]]] = {}
    for backend, server, addr in world.servers:
        m = SERVER.match(server)
        owner = next((s for s in by_set if backend.startswith(f"lvmss-{s}-")), None)
        if owner is None or m is None:
            out.append(f"orphan HAProxy server {backend}/{server} ({addr}): no such set or instance")
            continue
        rec = by_set[owner].get(int(m["id"]))
        if rec is None:
            out.append(f"orphan HAProxy server {backend}/{server} ({addr}): no instance {m['id']} in {owner}")
        elif rec.ip != addr:
            out.append(f"HAProxy server {backend}/{server} points at {addr}, instance {m['id']} is at {rec.ip}")
        backends.setdefault(backend, set()).add((int(m["id"]), addr))
    for set_name in sorted(world.lb_sets):
        rotation = {r.instance_id for r in by_set.get(set_name, {}).values() if r.in_rotation}
        mine = [b for b in backends if b.startswith(f"lvmss-{set_name}-")]
        if not mine and rotation:
            out.append(f"set {set_name} has a load-balancing rule but no HAProxy backend with servers")
        for backend in mine:
            ids = {i for i, _ in backends[backend]}
            if ids != rotation:
                out.append(
                    f"backend {backend} holds servers {sorted(ids)}, instances in rotation are {sorted(rotation)}"
                )
    return out
