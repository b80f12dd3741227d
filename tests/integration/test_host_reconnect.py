"""A libvirt connection that dies under the daemon is replaced without the caller noticing.

CI once failed an API call with libvirt's "client socket is closed": the connection had been
closed between ``Host.connect``'s liveness check and the call. These tests kill and restart a
real libvirtd (a one-host lab of their own, so the shared testbed is never disturbed) and check
that reads succeed on a fresh connection, that a request libvirt never sent is sent again, and
that lifecycle events keep arriving after the reconnect.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from localvmss.lab import hosts as lab_module
from localvmss.lab.hosts import Lab, LabHost
from localvmss.lab.testbed import define_lab_network
from localvmss.virt.domainxml import pool_xml
from localvmss.virt.host import NEVER_SENT_MESSAGE, Host, start_event_loop

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="lab hosts need root")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    made = lab_module.create_lab(f"rc{uuid.uuid4().hex[:4]}", host_count=1)
    try:
        define_lab_network(made.hosts[0])
        yield made
    finally:
        lab_module.destroy_lab(made)


def _restart_libvirtd(lab: Lab, lab_host: LabHost) -> None:
    """SIGKILL the lab host's libvirtd (a pid this test session started) and start it again."""
    pid = lab_host.libvirtd_pid
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    assert cmdline.endswith("libvirtd"), f"pid {pid} is {cmdline!r}, not libvirtd"
    os.kill(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    lab_module.start_libvirtd(lab_host)
    lab.save()
    lab_module.wait_libvirtd(lab_host, timeout=60)


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class _StaleOnce(Host):
    """Hands out a given (dead) connection once, as if it died right after the liveness check."""

    def __init__(self, name: str, uri: str, stale: libvirt.virConnect) -> None:
        super().__init__(name, uri)
        self._stale: libvirt.virConnect | None = stale

    def _checkout(self) -> libvirt.virConnect:
        if self._stale is not None:
            stale, self._stale = self._stale, None
            return stale
        return super()._checkout()


def test_reads_survive_a_restarted_libvirtd(lab: Lab) -> None:
    start_event_loop()
    lab_host = lab.hosts[0]
    host = Host(lab_host.name, lab_host.socket_uri)
    try:
        before = host.network_layout(lab_host.network_name)
        old = host.connect()
        _restart_libvirtd(lab, lab_host)
        _wait(lambda: not Host._alive(old), 30, "the client to notice the closed connection")
        assert host.network_layout(lab_host.network_name) == before
        assert host.connect() is not old
        assert host.ping()
    finally:
        host.close()


def test_a_request_never_sent_is_sent_on_a_new_connection(lab: Lab) -> None:
    start_event_loop()
    lab_host = lab.hosts[0]
    # Two connections that die with the restart: the host disposes of (closes) a dead connection
    # it met, so each attempt below is handed one of its own.
    stale, stale_too = libvirt.open(lab_host.socket_uri), libvirt.open(lab_host.socket_uri)
    _restart_libvirtd(lab, lab_host)
    _wait(
        lambda: not Host._alive(stale) and not Host._alive(stale_too), 30, "the client to notice the closed connections"
    )
    # What the daemon saw in CI, reproduced on the real connection:
    with pytest.raises(libvirt.libvirtError, match=NEVER_SENT_MESSAGE):
        stale.getHostname()
    host = _StaleOnce(lab_host.name, lab_host.socket_uri, stale)
    try:
        gateway = host.network_layout(lab_host.network_name)[0]
        assert gateway.startswith("198.18.")
        assert not Host._alive(stale) and host.connect() is not stale, "the dead connection was disposed of"
        # A change (not repeatable in general) is retried only because it never left.
        host._stale = stale_too
        pool = f"lvmss-rc-{uuid.uuid4().hex[:6]}"
        host._call(
            "defining a pool", lambda c: c.storagePoolDefineXML(pool_xml(pool, f"/tmp/{pool}"), 0), idempotent=False
        )
        assert pool in host.connect().listDefinedStoragePools()
        host._call("undefining the pool", lambda c: c.storagePoolLookupByName(pool).undefine())
    finally:
        host.close()


def _tiny_domain_xml(name: str) -> str:
    """The least libvirt defines: it is only defined and undefined, never started."""
    domain = ET.Element("domain", type="qemu")
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "memory", unit="MiB").text = "32"
    os_el = ET.SubElement(domain, "os")
    ET.SubElement(os_el, "type", arch="x86_64").text = "hvm"
    return ET.tostring(domain, encoding="unicode")


def test_lifecycle_events_arrive_after_a_reconnect(lab: Lab) -> None:
    start_event_loop()
    lab_host = lab.hosts[0]
    host = Host(lab_host.name, lab_host.socket_uri)
    seen: list[str] = []
    got = threading.Event()

    def on_event(domain: str, _event: int) -> None:
        seen.append(domain)
        got.set()

    try:
        host.register_lifecycle_events(on_event)
        _restart_libvirtd(lab, lab_host)
        host.ping()  # the first call after the restart reconnects and registers again
        name = f"lvmss-rc-{uuid.uuid4().hex[:6]}"
        host.define_domain(_tiny_domain_xml(name))
        try:
            assert got.wait(15), "no lifecycle event after the reconnect"
            assert name in seen
        finally:
            host.undefine(name)
    finally:
        host.close()
