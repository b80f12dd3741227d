"""Static addresses end to end (``static_addresses`` of a host, ``localvmss.addressing``): the
daemon hands out addresses outside the network's DHCP range, each guest sets its own from the
NoCloud seed, and the network is never touched: no DHCP host entry is made, and no guest asks
dnsmasq for a lease. Checked against libvirt, dnsmasq's leases, the guests and HAProxy.

Its own one-host lab: a second daemon on the shared lab would take the first's domains for
orphans (a domain's ownership names its set, not its daemon)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import libvirt
import pytest

from localvmss.cli.client import ApiClient
from localvmss.lab.testbed import DaemonProcess, Testbed, free_port
from tests.conftest import IMAGE_NAME, Cli, end_daemon_session
from tests.e2e.helpers import backend_names, create_set, http_get, instances, ips, libvirt_view


@pytest.fixture(scope="module")
def static_lab(image_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Testbed, DaemonProcess]]:
    if os.geteuid() != 0:
        pytest.fail("VM tests need root (network namespaces, libvirtd): run 'sudo make test'")
    tb = Testbed(tag=f"sa{os.getpid() % 100000}", host_count=1)
    tb.up()
    try:
        assert tb.lab is not None
        static = {h.name: {"static_addresses": tb.static_addresses(h)} for h in tb.lab.hosts}
        proc = tb.daemon(tmp_path_factory.mktemp("static-localvmssd"), static)
        proc.start()
        try:
            client = ApiClient(str(proc.socket_path))
            client.put(f"/images/{IMAGE_NAME}", {"sourceDirectory": str(image_dir)})
            client.close()
            yield tb, proc
        finally:
            end_daemon_session(proc)
    finally:
        tb.down()


def dhcp_leases(tb: Testbed) -> list[tuple[str, str]]:
    """Every (MAC, address) the lab host's dnsmasq has leased."""
    assert tb.lab is not None
    host = tb.lab.hosts[0]
    conn = libvirt.open(host.socket_uri)
    try:
        return [(str(x["mac"]), str(x["ipaddr"])) for x in conn.networkLookupByName(host.network_name).DHCPLeases()]
    finally:
        conn.close()


def test_instances_get_static_addresses_serve_through_haproxy_and_leave_the_network_alone(
    static_lab: tuple[Testbed, DaemonProcess],
) -> None:
    tb, proc = static_lab
    assert tb.lab is not None
    first, last = (IPv4Address(a) for a in tb.static_addresses(tb.lab.hosts[0]).split("-"))
    cli, api = Cli(proc.socket_path), ApiClient(str(proc.socket_path))
    port = free_port()
    create_set(cli, "st", 2, "--computer-name-prefix", "st", port=port)

    addresses = ips(api, "st")
    assert sorted(addresses) == ["0", "1"]
    assert all(first <= IPv4Address(ip) <= last for ip in addresses.values()), addresses
    for iid, ip in addresses.items():
        status, body = http_get(f"http://{ip}/")
        assert (status, body) == (200, f"st00000{iid}"), f"instance {iid} on its static address {ip}"
    assert backend_names(port) == {"st000000", "st000001"}, "both serve through HAProxy"

    view = libvirt_view(tb, "st")
    assert len(view["domains"]) == 2
    assert view["reservations"] == [], "no DHCP host entry is made for a static address"
    macs = {i["properties"]["networkProfile"]["macAddress"].lower() for i in instances(api, "st")}
    assert not [lease for lease in dhcp_leases(tb) if lease[0].lower() in macs], "the guests asked DHCP for nothing"

    cli.ok("scale", "st", "--new-capacity", "1")
    assert list(ips(api, "st")) == ["0"]
    assert backend_names(port) == {"st000000"}
    assert list(libvirt_view(tb, "st")["domains"]) == ["lvmss-st-0"]
    cli.ok("delete", "st")
    view = libvirt_view(tb, "st")
    assert view["domains"] == {} and view["volumes"] == [] and view["reservations"] == []
    api.close()
