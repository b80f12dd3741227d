"""Warm template clones on a real lab host: two instances restored at once from one template.

A guest is booted cold and, once serving, saved as a template (``make_template``). Two clones
are then restored from it side by side (``restore_clone``), each with its own name, disk copy,
seed, MAC and address reservation, and re-identified over the command channel
(``reidentify``, with the address of its reservation). Each must serve /healthz, its OWN
hostname at /, on its OWN reserved address, with SSH host keys of its own; the template must
stay restorable for later clones. A third clone is restored while DHCP cannot reach it: it
must serve on its address without a lease, and keep serving there once its lease comes. The
restore-to-serving seconds are printed next to a cold boot of the same image (not asserted).
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import paramiko

from localvmss.lab import testbed as lab_testbed  # a module alias: pytest would try to collect 'Testbed'
from localvmss.virt import template
from tests.integration.test_guest_channel import LabGuests, guest_time, http_get

BOOT_JOIN_S = 120.0
LEASE_TIMEOUT_S = 60.0


def ssh_host_key(ip: str) -> str:
    """The SSH host key the guest offers (no login needed: the key exchange shows it)."""
    sock = socket.create_connection((ip, 22), timeout=30)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=60)
        return transport.get_remote_server_key().get_base64()
    finally:
        transport.close()


def dhcp_leases(guests: LabGuests, mac: str) -> list[str]:
    """The addresses the lab host's DHCP server has leased to ``mac``."""
    conn = libvirt.open(guests.lab_host.socket_uri)
    try:
        leases = conn.networkLookupByName(guests.lab_host.network_name).DHCPLeases(mac)
        return [str(lease["ipaddr"]) for lease in leases]
    finally:
        conn.close()


def block_dhcp(guests: LabGuests, mac: str, on: bool) -> None:
    """Drop (or stop dropping) DHCP requests from ``mac`` at the lab host's DHCP server."""
    rule = ["INPUT", "-i", guests.lab_host.bridge, "-p", "udp", "--dport", "67",
            "-m", "mac", "--mac-source", mac, "-j", "DROP"]  # fmt: skip
    subprocess.run(
        ["ip", "netns", "exec", guests.lab_host.netns, "iptables", "-I" if on else "-D", *rule],
        check=True, capture_output=True,
    )  # fmt: skip


def test_two_clones_from_one_template(testbed: lab_testbed.Testbed, image_dir: Path) -> None:
    assert testbed.lab is not None
    guests = LabGuests(testbed.lab.hosts[1 % len(testbed.lab.hosts)], image_dir, first_address=210)
    errors: list[str] = []
    try:
        guests.prepare()
        cold_s = guests.boot(0)
        template_ip = guests.address(0)[0]
        template_key = ssh_host_key(template_ip)
        tpl_name = f"tpl-{guests.uid}"
        saved = time.monotonic()
        tpl = template.make_template(guests.host, guests.pool, guests.name(0), tpl_name)
        save_s = time.monotonic() - saved
        state_path = Path(guests.lab_host.state_dir) / "lib" / guests.pool / tpl.state_volume
        print(f"cold boot to serving: {cold_s:.1f} s; template saved in {save_s:.1f} s, "
              f"state {state_path.stat().st_size / 1e6:.0f} MB")  # fmt: skip
        guests.host.undefine(guests.name(0))  # clones must not need the template's domain

        results: dict[int, tuple[float, float, float]] = {}
        failures: list[str] = []
        draws: dict[int, str] = {}
        genids: dict[int, str | None] = {}
        saved_genid = ET.fromstring(tpl.saved_xml).findtext("genid")

        prefix = ipaddress.ip_network(guests.lab_host.guest_network).prefixlen

        def clone(k: int, static: bool = False) -> None:
            try:
                started = time.monotonic()
                restore_s = template.restore_clone(guests.host, tpl, guests.domain_xml(k))
                running_s = time.monotonic() - started
                name = guests.name(k)
                # The first random bytes of its new life, before anything else happens in it.
                draws[k] = guests.host.guest_command(name, "random")
                genids[k] = ET.fromstring(guests.host.domain_xml(name)).findtext("genid")
                ip, mac = guests.address(k)
                template.reidentify(
                    guests.host,
                    name,
                    name,
                    name,
                    mac,
                    address=f"{ip}/{prefix}",
                    gateway=guests.lab_host.gateway,
                    static=static,
                )
                results[k] = (restore_s, running_s, guests.wait_serving(k, started))
            except Exception as exc:  # reported below, with the clone it belongs to
                failures.append(f"clone {k}: {exc}")

        for k in (1, 2):
            guests.seed_and_reserve(k)
        threads = [threading.Thread(target=clone, args=(k,)) for k in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(BOOT_JOIN_S)
        assert not failures, failures
        # Each clone has a VM generation ID of its own, so each kernel reseeded its RNG from it:
        # two clones of one saved memory state do not draw the same random bytes.
        print(f"genid: template {saved_genid}, clones {genids}; first draws {draws}")
        assert saved_genid and None not in genids.values(), (saved_genid, genids)
        assert len({saved_genid, *genids.values()}) == 3, (saved_genid, genids)
        assert all(d.startswith("random ") and len(d) == len("random ") + 32 for d in draws.values()), draws
        assert draws[1] != draws[2], f"two clones drew the same random bytes: {draws}"

        keys = {template_key}
        for k in (1, 2):
            ip = guests.address(k)[0]
            name = guests.name(k)
            assert http_get(f"http://{ip}/healthz")[0] == 200
            assert http_get(f"http://{ip}/") == (200, f"{name}\n"), "each clone serves its own hostname"
            key = ssh_host_key(ip)
            assert key not in keys, "each clone makes SSH host keys of its own"
            keys.add(key)
            assert abs(guest_time(guests.host, name)) < 1.0, "reidentify set the clock"
            restore_s, running_s, serving_s = results[k]
            print(f"clone {k}: libvirt restore {restore_s:.2f} s, running {running_s:.2f} s, "
                  f"serving at its own address {serving_s:.2f} s (cold boot {cold_s:.1f} s)")  # fmt: skip
        assert http_get(f"http://{template_ip}/healthz")[0] != 200, "nothing answers on the template's address"

        for k in (1, 2):
            assert guests.address(k)[0] in dhcp_leases(guests, guests.address(k)[1]), "DHCP confirmed it"

        # The template stays restorable: a third clone, later, which serves on the address it
        # was given while DHCP cannot answer it, and keeps it when the lease comes.
        guests.seed_and_reserve(3)
        ip3, mac3 = guests.address(3)
        block_dhcp(guests, mac3, True)
        try:
            clone(3)
            assert not failures, failures
            assert http_get(f"http://{ip3}/") == (200, f"{guests.name(3)}\n")
            assert dhcp_leases(guests, mac3) == [], "it serves before (without) a lease"
        finally:
            block_dhcp(guests, mac3, False)
        deadline = time.monotonic() + LEASE_TIMEOUT_S
        while ip3 not in dhcp_leases(guests, mac3) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert dhcp_leases(guests, mac3) == [ip3], "the reservation's lease came for the same address"
        time.sleep(1.0)  # dhcp-event has run by now; it must have kept the address
        assert http_get(f"http://{ip3}/healthz")[0] == 200
        assert http_get(f"http://{ip3}/") == (200, f"{guests.name(3)}\n")
        print(f"clone 3 (no DHCP until it served): serving at its own address {results[3][2]:.2f} s")

        # A clone on a host with static addresses (``identity ... static``): no reservation,
        # and it asks DHCP for nothing, then or later; it keeps its address.
        guests.seed_and_reserve(4, reserve=False)
        ip4, mac4 = guests.address(4)
        clone(4, static=True)
        assert not failures, failures
        time.sleep(5.0)  # udhcpc, were it running, would have asked at its start (then every 2 s)
        assert dhcp_leases(guests, mac4) == [], "a static clone asks DHCP for nothing"
        assert http_get(f"http://{ip4}/") == (200, f"{guests.name(4)}\n")
        print(f"clone 4 (static address): serving at its own address {results[4][2]:.2f} s")
        template.delete_template(guests.host, tpl)
    finally:
        errors = guests.clean_up()
    assert not errors, f"clean-up failed: {errors}"
