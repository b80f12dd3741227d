"""One libvirt connection per host, shared by the reconciler, its workers, the exporter and the
API: never more calls in flight on it than libvirtd serves per client (its max_client_requests,
5 by default), and volume streams on a connection of their own. Uses libvirt's in-process test
driver (real libvirt, no guests)."""

from __future__ import annotations

import threading
import time

import libvirt

from localvmss.virt.host import MAX_CALLS_IN_FLIGHT, Host


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
