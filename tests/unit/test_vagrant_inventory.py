"""The Vagrant lab's shipped inventory (vagrant/inventory.json), read by Python on its own: the
same rules the Vagrantfile's Ruby loader enforces, checked independently, plus what the README's
"set spread over zones" needs (one zone per host, no two hosts in one). What the Ruby makes of
the file is compared with this reading in tests/integration/test_vagrant.py."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from localvmss.lab import hosts as lab
from localvmss.model import validate_name

INVENTORY = Path(__file__).resolve().parents[2] / "vagrant" / "inventory.json"
ALLOWED = ipaddress.ip_network("198.18.0.0/15")


@pytest.fixture(scope="module")
def inventory() -> dict[str, Any]:
    data = json.loads(INVENTORY.read_text())
    assert isinstance(data, dict)
    return data


def _machines(inv: dict[str, Any]) -> list[dict[str, Any]]:
    return [inv["controller"], *inv["hosts"]]


def _subnets(inv: dict[str, Any]) -> dict[str, ipaddress.IPv4Network]:
    nets = {"rack": ipaddress.IPv4Network(inv["rack"]["subnet"])}
    nets.update({h["name"]: ipaddress.IPv4Network(h["guest_subnet"]) for h in inv["hosts"]})
    return nets


def test_the_inventory_has_exactly_the_keys_the_loader_knows(inventory: dict[str, Any]) -> None:
    assert set(inventory) <= {"comment", "box", "rack", "guest_network", "controller", "hosts"}
    assert set(inventory["rack"]) == {"libvirt_network", "subnet"}
    assert set(inventory["controller"]) == {"name", "address", "memory", "cpus"}
    assert inventory["hosts"], "a lab needs at least one KVM host"
    for host in inventory["hosts"]:
        assert set(host) == {"name", "address", "zone", "guest_subnet", "memory", "cpus"}, host


def test_every_host_has_one_zone_and_no_two_hosts_share_one(inventory: dict[str, Any]) -> None:
    zones = [h["zone"] for h in inventory["hosts"]]
    assert all(isinstance(z, str) and z for z in zones), zones
    assert len(set(zones)) == len(zones), f"zones {zones}: the README's zonal set needs one host per zone"
    assert len(zones) >= 2, "a set spread over zones needs at least two"


def test_names_are_localvmss_host_names_and_unique(inventory: dict[str, Any]) -> None:
    names = [m["name"] for m in _machines(inventory)]
    for name in names:
        validate_name(name, "host name")  # they become [[hosts]] names in localvmssd.toml
    assert len(set(names)) == len(names), names


def test_subnets_lie_in_the_test_space_and_do_not_overlap(inventory: dict[str, Any]) -> None:
    nets = _subnets(inventory)
    for name, net in nets.items():
        assert net.subnet_of(ALLOWED), f"{name} {net} is outside {ALLOWED}"
    for name, net in nets.items():
        if name != "rack":
            assert net.prefixlen == 24, f"{name} {net}: guest networks are /24 (DHCP .10-.250)"
    items = list(nets.items())
    for i, (name_a, a) in enumerate(items):
        for name_b, b in items[i + 1 :]:
            assert not a.overlaps(b), f"{name_a} {a} overlaps {name_b} {b}"


def test_addresses_are_distinct_usable_rack_addresses(inventory: dict[str, Any]) -> None:
    rack = ipaddress.IPv4Network(inventory["rack"]["subnet"])
    reserved = {rack.network_address, rack.network_address + 1, rack.broadcast_address}
    addresses = [ipaddress.IPv4Address(m["address"]) for m in _machines(inventory)]
    for addr in addresses:
        assert addr in rack and addr not in reserved, f"{addr} in {rack}"
    assert len(set(addresses)) == len(addresses)


def test_the_rack_never_meets_a_test_lab_on_the_same_machine(inventory: dict[str, Any]) -> None:
    """vagrant-libvirt puts the rack network on the machine running Vagrant; the single-machine
    test labs route 198.18.(16*slot+k).0/24 and 198.19.slot.0/24 there, so the rack avoids them."""
    rack = ipaddress.IPv4Network(inventory["rack"]["subnet"])
    for slot in range(lab.MAX_SLOTS):
        assert not rack.overlaps(ipaddress.IPv4Network(f"198.19.{slot}.0/24"))
        for k in range(1, lab.HOSTS_PER_LAB + 1):
            assert not rack.overlaps(ipaddress.IPv4Network(f"198.18.{16 * slot + k}.0/24")), (slot, k)


def test_machines_have_room_for_what_they_run(inventory: dict[str, Any]) -> None:
    for machine in _machines(inventory):
        assert isinstance(machine["memory"], int) and machine["memory"] >= 1024, machine
        assert isinstance(machine["cpus"], int) and machine["cpus"] >= 1, machine
