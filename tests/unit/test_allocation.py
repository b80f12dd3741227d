"""Addresses, MACs, NAT ports and fault-domain hosts: one implementation each, as tables."""

from __future__ import annotations

import pytest

from localvmss.allocation import free_address, free_nat_port, mac_for, pick_host
from localvmss.model import FaultDomainMapping


@pytest.mark.parametrize(
    ("taken", "expected"),
    [
        (set(), "198.18.1.10"),
        ({"198.18.1.10"}, "198.18.1.11"),
        ({"198.18.1.10", "198.18.1.12"}, "198.18.1.11"),
        ({"198.18.1.10", "198.18.1.11", "198.18.1.12"}, None),
    ],
)
def test_free_address(taken: set[str], expected: str | None) -> None:
    assert free_address("198.18.1.10", "198.18.1.12", taken) == expected


def test_the_mac_follows_the_address() -> None:
    assert mac_for("198.18.1.11") == "52:54:00:12:01:0b"
    assert mac_for("198.19.255.250") == "52:54:00:13:ff:fa"


@pytest.mark.parametrize(("taken", "expected"), [(set(), 50100), ({50100}, 50101), ({50100, 50101}, None)])
def test_free_nat_port(taken: set[int], expected: int | None) -> None:
    assert free_nat_port(50100, 50101, taken) == expected


@pytest.mark.parametrize(
    ("hosts", "mapping", "fd", "expected"),
    [
        (["h2", "h1"], FaultDomainMapping.HOST, 0, "h1"),
        (["h2", "h1"], FaultDomainMapping.HOST, 1, "h2"),
        (["h2", "h1"], FaultDomainMapping.HOST, 2, "h1"),
        (["h1"], FaultDomainMapping.HOST, 1, "h1"),  # one host answers: every fault domain on it
        (["h2", "h1"], FaultDomainMapping.NUMA, 1, "h1"),
        ([], FaultDomainMapping.HOST, 0, None),
    ],
)
def test_pick_host(hosts: list[str], mapping: FaultDomainMapping, fd: int, expected: str | None) -> None:
    assert pick_host(hosts, mapping, fd) == expected
