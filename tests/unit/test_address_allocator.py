"""Address and NAT-port allocation kept in memory (``allocation.LowestFree`` and the
Allocator's use of it) gives the addresses the scan from the start of the range gave
(``free_address``/``free_nat_port``), on tables of cases and on random sequences of
allocations and releases against a real store."""

from __future__ import annotations

import random
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from localvmss.addressing import AddressPlan
from localvmss.allocation import Allocator, LowestFree, free_address, free_nat_port
from localvmss.store import InstanceRow, Store


@pytest.mark.parametrize(
    ("first", "last", "taken", "takes", "expected"),
    [
        (1, 3, set(), 4, [1, 2, 3, None]),
        (1, 5, {1, 3}, 4, [2, 4, 5, None]),
        (10, 12, {9, 13}, 3, [10, 11, 12]),  # taken numbers outside the range change nothing
        (1, 1, {1}, 1, [None]),
        (5, 4, set(), 1, [None]),  # an empty range
    ],
)
def test_lowest_free_takes_lowest_first(
    first: int, last: int, taken: set[int], takes: int, expected: list[int | None]
) -> None:
    free = LowestFree.of(first, last, taken)
    assert [free.take() for _ in range(takes)] == expected


@pytest.mark.parametrize("seed", range(20))
def test_lowest_free_matches_the_scan_on_random_takes_and_give_backs(seed: int) -> None:
    rnd = random.Random(seed)
    first, last = 50100, 50100 + rnd.randint(0, 40)
    taken = {rnd.randint(first - 3, last + 3) for _ in range(rnd.randint(0, 30))}
    free = LowestFree.of(first, last, taken)
    held = set(taken)
    for _ in range(200):
        if held and rnd.random() < 0.4:
            n = rnd.choice(sorted(held))
            held.discard(n)
            free.give_back(n)
        else:
            expected = free_nat_port(first, last, held)
            assert free.take() == expected
            if expected is not None:
                held.add(expected)


class _Inventory:
    """What the Allocator reads of the inventory: the network's range and its reservations."""

    def __init__(self, store: Store, start: str, end: str, reservations: list[tuple[str, str]]) -> None:
        self.store = store
        self.start, self.end = start, end
        self._reservations = reservations
        self.changed = 0
        self.hosts: dict[str, Any] = {"h1": None}

    def address_plan(self, host: str) -> AddressPlan:
        return AddressPlan("198.18.0.1", "255.255.255.0", self.start, self.end, static=False)

    def reservations(self, host: str) -> list[tuple[str, str]]:
        return list(self._reservations)

    def reservations_changed(self, host: str) -> int:
        return self.changed


def _row(iid: int, mac: str, ip: str, nat_port: int | None) -> InstanceRow:
    return InstanceRow(
        scale_set="web",
        instance_id=iid,
        host="h1",
        fault_domain=0,
        update_domain=0,
        mac=mac,
        ip=ip,
        model_version=1,
        desired_power="running",  # type: ignore[arg-type]
        provisioning_state="Creating",  # type: ignore[arg-type]
        created_at=0.0,
        nat_port=nat_port,
    )


@pytest.mark.parametrize("seed", range(8))
def test_the_allocator_gives_what_the_scan_gave_on_random_creates_and_deletes(tmp_path: Path, seed: int) -> None:
    """Creates (several in one transaction, some rolled back), deletes, and DHCP entries made
    behind localvmss's back: every address and port is the one the old per-allocation scan of
    the store and the range picks."""
    rnd = random.Random(seed)
    store = Store(tmp_path / "state.db")
    store.insert_scale_set("web", "Uniform", {"mode": "Uniform"}, 0, "Creating")
    foreign = [("52:54:00:aa:00:01", "198.18.0.12")]  # no instance holds this MAC
    inv = _Inventory(store, "198.18.0.10", "198.18.0.60", foreign)
    alloc = Allocator(inv)  # type: ignore[arg-type]
    nat_pool = {"frontendPortRangeStart": 50000, "frontendPortRangeEnd": 50040}
    spec: Any = type("Spec", (), {"load_balancer": {"inboundNatPool": nat_pool}})
    next_id = 0
    for _ in range(120):
        live = store.instances()
        roll = rnd.random()
        if live and roll < 0.35:
            victim = rnd.choice(live)
            store.delete_instance_row(victim.scale_set, victim.instance_id)
            continue
        if roll < 0.4:
            foreign.append((f"52:54:00:bb:00:{len(foreign):02x}", f"198.18.0.{rnd.randint(10, 60)}"))
            inv.changed += 1
            continue
        batch = rnd.randint(1, 3)
        rollback = rnd.random() < 0.15
        try:
            with store.transaction() as db:
                for _ in range(batch):
                    held_ips, held_macs = Store.addresses_held(db, "h1")
                    held_ips |= {ip for mac, ip in foreign if mac not in held_macs}
                    expected_ip = free_address(inv.start, inv.end, held_ips)
                    expected_port = free_nat_port(50000, 50040, Store.nat_ports_held(db, "web"))
                    if expected_ip is None or expected_port is None:
                        break
                    mac, ip = alloc.address(db, "h1")
                    port = alloc.nat_port(db, "web", spec)
                    assert (ip, port) == (expected_ip, expected_port)
                    assert int(IPv4Address(ip)) >= int(IPv4Address(inv.start))
                    Store.insert_instance(db, _row(next_id, mac, ip, port))
                    next_id += 1
                if rollback:
                    raise RuntimeError("rolled back")
        except RuntimeError:
            pass
    store.close()
