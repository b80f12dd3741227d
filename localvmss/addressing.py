"""How a host's instances get their addresses: one rule, used by the allocator, the provisioner
and the warm clones.

By default an instance's address comes from the host network's DHCP range and is pinned with a
DHCP host entry (``virNetworkUpdate``). libvirt rewrites the network's whole definition (and
dnsmasq's hosts file) for every such entry, so at hundreds of instances a host spends more time
on reservations than on anything else. A host configured with ``static_addresses`` instead hands
out addresses from a range of the network's subnet outside its DHCP range: the guest is told
its address in the NoCloud seed, and the network is not touched at all. Nothing but localvmss
hands out addresses there, so no reservation is needed to keep dnsmasq away from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address, IPv4Interface, IPv4Network

from localvmss.errors import InvalidSpec

MAX_STATIC_ADDRESSES = 65536


@dataclass(frozen=True)
class AddressPlan:
    """Where a host's instances get their addresses: ``first``-``last`` of the network whose
    gateway and netmask these are; ``static``: told in the seed, no DHCP entry."""

    gateway: str
    netmask: str
    first: str
    last: str
    static: bool

    @property
    def prefix(self) -> int:
        return IPv4Network(f"0.0.0.0/{self.netmask}").prefixlen

    def is_static(self, ip: str) -> bool:
        """True if ``ip`` is one this host hands out statically: told in the seed, no DHCP
        entry. An instance made before the host had static addresses keeps its reservation."""
        return self.static and IPv4Address(self.first) <= IPv4Address(ip) <= IPv4Address(self.last)

    def interface_address(self, ip: str) -> str:
        """``ip`` with the network's prefix, as a guest configures it: ``198.18.0.12/24``."""
        return f"{ip}/{self.prefix}"


def is_gateway_of(iface: IPv4Interface, gateway: IPv4Address) -> bool:
    """True if ``gateway`` can route for an interface with address ``iface``: another address
    of its network (a seed's static address, a warm clone's identity)."""
    return gateway in iface.network and gateway != iface.ip


def parse_static_range(text: str) -> tuple[IPv4Address, IPv4Address]:
    """``"198.18.0.2-198.18.0.9"`` -> its first and last address; InvalidSpec with one line."""
    first_text, sep, last_text = text.partition("-")
    if not sep:
        raise InvalidSpec(f"static_addresses {text!r} must be FIRST-LAST, e.g. 198.18.0.2-198.18.0.9")
    try:
        first, last = IPv4Address(first_text.strip()), IPv4Address(last_text.strip())
    except AddressValueError as exc:
        raise InvalidSpec(f"static_addresses {text!r}: {exc}") from None
    if first > last:
        raise InvalidSpec(f"static_addresses {text!r}: the first address is above the last")
    if int(last) - int(first) + 1 > MAX_STATIC_ADDRESSES:
        raise InvalidSpec(f"static_addresses {text!r}: more than {MAX_STATIC_ADDRESSES} addresses")
    return first, last


def address_plan(
    network: str, gateway: str, netmask: str, dhcp_start: str, dhcp_end: str, static_addresses: str | None
) -> AddressPlan:
    """The plan of a host whose libvirt network ``network`` has this layout. A static range must
    lie inside the network's subnet, hold neither its gateway, its network address nor its
    broadcast address, and share no address with the DHCP range (InvalidSpec otherwise)."""
    if static_addresses is None:
        return AddressPlan(gateway, netmask, dhcp_start, dhcp_end, static=False)
    first, last = parse_static_range(static_addresses)
    subnet = IPv4Network(f"{gateway}/{netmask}", strict=False)
    where = f"static_addresses {static_addresses} of network {network}"
    if first not in subnet or last not in subnet:
        raise InvalidSpec(f"{where} are not all inside its subnet {subnet}")
    if first == subnet.network_address or last == subnet.broadcast_address:
        raise InvalidSpec(f"{where} include the subnet's network or broadcast address")
    if first <= IPv4Address(gateway) <= last:
        raise InvalidSpec(f"{where} include its gateway {gateway}")
    if first <= IPv4Address(dhcp_end) and IPv4Address(dhcp_start) <= last:
        raise InvalidSpec(f"{where} overlap its DHCP range {dhcp_start}-{dhcp_end}")
    return AddressPlan(gateway, netmask, str(first), str(last), static=True)
