"""Where a new instance goes and what it holds for its life: its host (fault domain -> host),
its IP and MAC on that host's network, and its NAT port. One implementation each, used by the
reconciler (Uniform scale-out) and the service (Flexible VMs).

``new_instance_row`` runs inside the store's transaction, so nothing here calls libvirt: the
network's DHCP reservations come from the inventory's copy (refreshed every pass, and after
every change localvmss makes). The free addresses and NAT ports are kept in memory
(``LowestFree``), built from the store and those reservations, and built again only after
something may have given one back (``Store.releases``) or the reservations changed, so a new
instance's address costs O(log n), not a read of the whole table and a scan of the range.
"""

from __future__ import annotations

import heapq
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from localvmss import planner
from localvmss.errors import CapacityError, HostUnavailable
from localvmss.model import FaultDomainMapping, PowerState, ProvisioningState, update_domain_for
from localvmss.spec import ScaleSetSpec
from localvmss.store import InstanceRow, ScaleSetRow, Store

if TYPE_CHECKING:
    from localvmss.inventory import Inventory


def mac_for(ip: str) -> str:
    """The MAC is derived from the address: an address reused later comes with the same MAC, so a
    DHCP lease its previous holder left in dnsmasq matches instead of blocking it."""
    return "52:54:00:" + ":".join(f"{b:02x}" for b in IPv4Address(ip).packed[1:])


def free_address(start: str, end: str, taken: set[str]) -> str | None:
    """The lowest address of ``start``-``end`` not in ``taken``."""
    first, last = int(IPv4Address(start)), int(IPv4Address(end))
    for n in range(first, last + 1):
        ip = str(IPv4Address(n))
        if ip not in taken:
            return ip
    return None


def free_nat_port(first: int, last: int, taken: set[int]) -> int | None:
    for port in range(first, last + 1):
        if port not in taken:
            return port
    return None


@dataclass
class LowestFree:
    """The numbers of ``first``-``last`` not in ``taken``, handed out lowest first: the same
    answers as ``free_address``/``free_nat_port`` scanning from the start each time, at O(log n)
    a take. Numbers below ``_next`` are all taken or in the heap ``_freed``."""

    first: int
    last: int
    taken: set[int] = field(default_factory=set)
    _next: int = 0
    _freed: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, first: int, last: int, taken: Iterable[int]) -> LowestFree:
        return cls(first, last, {n for n in taken if first <= n <= last}, first)

    def take(self) -> int | None:
        """The lowest free number, now taken; None when none is left."""
        while self._freed:
            n = heapq.heappop(self._freed)
            if n not in self.taken:
                self.taken.add(n)
                return n
        while self._next <= self.last:
            n = self._next
            self._next += 1
            if n not in self.taken:
                self.taken.add(n)
                return n
        return None

    def give_back(self, n: int) -> None:
        """``n`` is free again (one not taken, or out of range, changes nothing)."""
        if n in self.taken:
            self.taken.discard(n)
            if n < self._next:
                heapq.heappush(self._freed, n)


@dataclass
class _Kept:
    """A ``LowestFree`` and what it was built from: built again when that changed."""

    basis: tuple[object, ...]
    free: LowestFree


def pick_host(candidates: list[str], mapping: FaultDomainMapping, fault_domain: int) -> str | None:
    """Fault domain -> host: in 'host' mapping the n-th host (sorted), in 'numa' the first
    (its NUMA cells are the fault domains)."""
    ordered = sorted(candidates)
    if not ordered:
        return None
    if mapping is FaultDomainMapping.NUMA:
        return ordered[0]
    return ordered[fault_domain % len(ordered)]


class Allocator:
    def __init__(self, inventory: Inventory, clock: Callable[[], float] = time.time) -> None:
        self.inv = inventory
        self.clock = clock
        # Only used inside the store's transactions, which run one at a time.
        self._addresses: dict[str, _Kept] = {}  # host -> its network's free addresses
        self._nat_ports: dict[str, _Kept] = {}  # scale set -> its NAT pool's free ports

    def host_for(self, spec: ScaleSetSpec, zone: str | None, fault_domain: int, alive: dict[str, bool]) -> str | None:
        """The host of ``fault_domain`` among the available hosts of ``zone`` (any zone: None)."""
        candidates = [h for h in self.inv.hosts if alive.get(h) and (zone is None or self.inv.zone_of(h) == zone)]
        return pick_host(candidates, spec.fault_domain_mapping, fault_domain)

    def new_instance_row(
        self,
        db: sqlite3.Connection,
        row: ScaleSetRow,
        spec: ScaleSetSpec,
        iid: int,
        host: str,
        zone: str | None,
        fault_domain: int,
        index: int,
        vm_name: str | None = None,
        overrides: dict[str, object] | None = None,
    ) -> InstanceRow:
        """A new instance's record with its address and NAT port (inside the caller's transaction)."""
        mac, ip = self.address(db, host)
        return InstanceRow(
            scale_set=row.name,
            instance_id=iid,
            vm_name=vm_name,
            host=host,
            zone=zone,
            fault_domain=fault_domain,
            update_domain=update_domain_for(fault_domain, index, spec.platform_fault_domain_count),
            mac=mac,
            ip=ip,
            nat_port=self.nat_port(db, row.name, spec),
            model_version=row.model_version,
            desired_power=PowerState.RUNNING,
            provisioning_state=ProvisioningState.CREATING,
            created_at=self.clock(),
            overrides=dict(overrides or {}),
        )

    def address(self, db: sqlite3.Connection, host: str) -> tuple[str, str]:
        """A MAC and an IP from the host's address range (its network's DHCP range, or its static
        addresses: ``localvmss.addressing``) that nobody else holds: not an instance on that
        host, and not a DHCP entry of the network that no instance owns."""
        plan = self.inv.address_plan(host)
        start, end = plan.first, plan.last
        basis = (self.inv.store.releases, self.inv.reservations_changed(host), start, end)
        kept = self._addresses.get(host)
        if kept is None or kept.basis != basis:
            taken_ips, taken_macs = Store.addresses_held(db, host)
            taken_ips |= {ip for mac, ip in self.inv.reservations(host) if mac not in taken_macs}
            first, last = int(IPv4Address(start)), int(IPv4Address(end))
            kept = _Kept(basis, LowestFree.of(first, last, (int(IPv4Address(ip)) for ip in taken_ips)))
            self._addresses[host] = kept
        while (n := kept.free.take()) is not None:
            ip = str(IPv4Address(n))
            if not Store.address_held(db, host, ip):  # one made by another allocator meanwhile
                return mac_for(ip), ip
        raise HostUnavailable(f"network of host {host} has no free address in {start}-{end}")

    def nat_port(self, db: sqlite3.Connection, scale_set: str, spec: ScaleSetSpec) -> int | None:
        pool = (spec.load_balancer or {}).get("inboundNatPool")
        if not pool:
            return None
        first, last = int(pool["frontendPortRangeStart"]), int(pool["frontendPortRangeEnd"])
        basis = (self.inv.store.releases, first, last)
        kept = self._nat_ports.get(scale_set)
        if kept is None or kept.basis != basis:
            kept = _Kept(basis, LowestFree.of(first, last, Store.nat_ports_held(db, scale_set)))
            self._nat_ports[scale_set] = kept
        while (port := kept.free.take()) is not None:
            if not Store.nat_port_held(db, scale_set, port):
                return port
        raise CapacityError(f"inbound NAT pool {first}-{last} of {scale_set} is exhausted")


def slot(
    inst: InstanceRow, *, healthy: bool | None = None, candidate: bool = False, ready_at: float | None = None
) -> planner.Slot:
    """What the planner needs to know of an instance (placement, scale-in, upgrade batches);
    ``healthy`` (default: not unhealthy), ``candidate`` and ``ready_at`` as the caller judges
    them (a scale plan: see ``reconciler.scale_slot``), made in one go: a pass makes one per
    instance."""
    return planner.Slot(
        instance_id=inst.instance_id,
        zone=inst.zone,
        fault_domain=inst.fault_domain,
        created_at=inst.created_at,
        protected_from_scale_in=inst.protect_scale_in,
        healthy=inst.health != "unhealthy" if healthy is None else healthy,
        model_version=inst.model_version,
        host=inst.host,
        candidate=candidate,
        ready_at=ready_at,
    )
