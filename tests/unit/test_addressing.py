"""Where a host's instances get their addresses (``localvmss.addressing``): static ranges are
checked against the network's layout, and only addresses inside them are static."""

from __future__ import annotations

import pytest

from localvmss.addressing import AddressPlan, address_plan, parse_static_range
from localvmss.config import HostConfig
from localvmss.errors import InvalidSpec

# The lab's layout: 198.18.0.0/24, gateway .1, DHCP .10-.250.
LAYOUT = ("net0", "198.18.0.1", "255.255.255.0", "198.18.0.10", "198.18.0.250")


def test_without_static_addresses_the_dhcp_range_is_used() -> None:
    plan = address_plan(*LAYOUT, None)
    assert plan == AddressPlan("198.18.0.1", "255.255.255.0", "198.18.0.10", "198.18.0.250", static=False)
    assert not plan.is_static("198.18.0.10")


@pytest.mark.parametrize(
    ("static", "first", "last"),
    [
        ("198.18.0.2-198.18.0.9", "198.18.0.2", "198.18.0.9"),
        ("198.18.0.251-198.18.0.254", "198.18.0.251", "198.18.0.254"),
        ("198.18.0.5-198.18.0.5", "198.18.0.5", "198.18.0.5"),
        (" 198.18.0.2 - 198.18.0.3 ", "198.18.0.2", "198.18.0.3"),
    ],
)
def test_a_static_range_outside_the_dhcp_range_is_taken(static: str, first: str, last: str) -> None:
    plan = address_plan(*LAYOUT, static)
    assert (plan.first, plan.last, plan.static) == (first, last, True)


@pytest.mark.parametrize(
    ("static", "error"),
    [
        ("198.18.0.2", "must be FIRST-LAST"),
        ("198.18.0.9-198.18.0.2", "above the last"),
        ("198.18.0.2-198.18.0.x", "198.18.0.x"),
        ("198.18.0.0-198.18.0.5", "network or broadcast"),
        ("198.18.0.251-198.18.0.255", "network or broadcast"),
        ("198.18.0.1-198.18.0.9", "gateway"),
        ("198.18.0.2-198.18.0.10", "overlap its DHCP range"),
        ("198.18.0.100-198.18.0.120", "overlap its DHCP range"),
        ("198.18.0.2-198.18.0.254", "overlap its DHCP range"),
        ("198.18.1.2-198.18.1.9", "inside its subnet"),
        ("198.18.0.200-198.18.1.9", "inside its subnet"),
        ("10.0.0.0-10.1.0.0", "more than 65536"),
    ],
)
def test_a_bad_static_range_is_refused_with_one_line(static: str, error: str) -> None:
    with pytest.raises(InvalidSpec, match=error) as caught:
        address_plan(*LAYOUT, static)
    assert "\n" not in caught.value.message


@pytest.mark.parametrize(
    ("ip", "static"),
    [
        ("198.18.0.2", True),
        ("198.18.0.9", True),
        ("198.18.0.10", False),
        ("198.18.0.1", False),
        ("198.18.0.254", False),
    ],
)
def test_only_addresses_inside_the_static_range_are_static(ip: str, static: bool) -> None:
    """An instance made before its host had static addresses keeps its DHCP reservation."""
    assert address_plan(*LAYOUT, "198.18.0.2-198.18.0.9").is_static(ip) is static


@pytest.mark.parametrize(("netmask", "address"), [("255.255.255.0", "198.18.0.3/24"), ("255.255.0.0", "198.18.0.3/16")])
def test_a_guest_gets_its_address_with_the_networks_prefix(netmask: str, address: str) -> None:
    assert (
        AddressPlan("198.18.0.1", netmask, "198.18.0.2", "198.18.0.9", static=True).interface_address("198.18.0.3")
        == address
    )


def test_the_config_refuses_a_malformed_range_at_load() -> None:
    with pytest.raises(InvalidSpec, match="FIRST-LAST"):
        HostConfig(name="h1", static_addresses="198.18.0.2/29")
    assert HostConfig(name="h1", static_addresses="198.18.0.2-198.18.0.9").static_addresses == "198.18.0.2-198.18.0.9"
    assert parse_static_range("198.18.0.2-198.18.0.9")[1].packed[-1] == 9
