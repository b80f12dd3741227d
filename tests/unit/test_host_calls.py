"""One libvirt connection per host, shared by the reconciler, its workers, the exporter and the
API: never more calls in flight on it than libvirtd serves per client (its max_client_requests,
5 by default), and volume streams on a connection of their own. Uses libvirt's in-process test
driver (real libvirt, no guests)."""

from __future__ import annotations

import threading
import time

import libvirt
import pytest

from localvmss.virt.host import MAX_CALLS_IN_FLIGHT, Host, _unless_already


def test_calls_in_flight_on_one_connection_are_bounded() -> None:
    host = Host("t", "test:///default")
    lock = threading.Lock()
    now = peak = 0

    def slow(conn: libvirt.virConnect) -> str:
        nonlocal now, peak
        with lock:
            now += 1
            peak = max(peak, now)
        time.sleep(0.05)
        with lock:
            now -= 1
        return str(conn.getHostname())

    threads = [threading.Thread(target=host._call, args=("asking", slow)) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    host.close()
    assert peak == MAX_CALLS_IN_FLIGHT < 5, f"{peak} calls in flight at once"


def test_a_volume_stream_uses_a_connection_of_its_own() -> None:
    host = Host("t", "test:///default")
    shared = host.connect()
    seen: list[libvirt.virConnect] = []
    host._on_own_connection(lambda conn: seen.append(conn))
    assert seen and seen[0] is not shared
    assert shared.isAlive(), "the shared connection is untouched"
    host.close()


def test_a_domain_that_gets_there_by_itself_meanwhile_counts_as_done() -> None:
    """The look-then-act race of every power verb: a guest finishing its own shutdown between
    our look (active) and our destroy makes libvirt answer "domain is not running"; that is
    the state we asked for, not a failure. Any other refusal still is one."""
    conn = libvirt.open("test:///default")
    try:
        dom = conn.lookupByName("test")
        assert dom.isActive()

        def guest_shuts_down_first() -> None:
            dom.destroy()  # the guest powering itself off, a moment before us
            dom.destroy()  # ours, which libvirt refuses

        with pytest.raises(libvirt.libvirtError) as raw:
            guest_shuts_down_first()
        assert raw.value.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID, "the race's real answer"
        dom.create()
        _unless_already(dom, guest_shuts_down_first, active=False)
        assert not dom.isActive()
        with pytest.raises(libvirt.libvirtError):
            _unless_already(dom, dom.destroy, active=True)  # refused, and still not active
    finally:
        conn.close()
