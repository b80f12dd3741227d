"""How a host uses its connections, on libvirt's in-process test driver (real libvirt, no guests).

The rules come from a daemon crash: libvirtd SIGSTOPped for 30 s, every exporter scrape meanwhile
blocked a thread of its own on ``getAllDomainStats`` over the one shared connection, and when
keepalive gave up on it libvirt 9.0's client used a freed mutex and the process died of a
segfault. So: one call in flight per connection (a small pool per host), a dead connection is
disposed of by the caller that was using it, and callers share one statistics read instead of
piling up behind a slow host (tests/faults/test_slow_host.py is the real case).
"""

from __future__ import annotations

import threading
import time

import libvirt
import pytest

from localvmss.errors import HostBusy
from localvmss.virt.host import Host, start_event_loop


def _closed(conn: libvirt.virConnect) -> bool:
    try:
        conn.getHostname()
        return False
    except libvirt.libvirtError:
        return True


def test_concurrent_calls_never_share_a_connection() -> None:
    host = Host("t", "test:///default")
    lock = threading.Lock()
    using: set[int] = set()
    shared: list[int] = []
    seen: set[int] = set()

    def call(conn: libvirt.virConnect) -> None:
        with lock:
            if id(conn) in using:
                shared.append(id(conn))
            using.add(id(conn))
            seen.add(id(conn))
        time.sleep(0.05)
        conn.getHostname()
        with lock:
            using.discard(id(conn))

    threads = [threading.Thread(target=host._call, args=("asking", call)) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    host.close()
    assert not shared, "two calls were in flight on one connection at once"
    assert 1 < len(seen) <= 4, f"{len(seen)} connections for 12 calls (4 at most in flight)"


class _LongCall:
    """A call on ``host`` in a thread of its own that holds its connection until ``finish``."""

    def __init__(self, host: Host) -> None:
        self.conn: libvirt.virConnect | None = None
        self._in_call = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=host._call, args=("a long call", self._run))
        self._thread.start()
        assert self._in_call.wait(10)

    def _run(self, conn: libvirt.virConnect) -> None:
        self.conn = conn
        self._in_call.set()
        self._release.wait(10)

    def finish(self) -> None:
        self._release.set()
        self._thread.join(10)


def test_a_dead_connection_is_disposed_of_by_its_caller_and_others_go_on() -> None:
    host = Host("t", "test:///default")
    long_call = _LongCall(host)
    other = [long_call.conn]
    dying: list[libvirt.virConnect] = []

    def dies(conn: libvirt.virConnect) -> str:
        if not dying:
            dying.append(conn)
            conn.close()  # the connection dies under this call
        return str(conn.getHostname())

    answer = host._call("a call whose connection dies", dies)  # retried on a new connection
    assert answer and len(dying) == 1, answer
    assert _closed(dying[0]), "the dead connection is closed"
    assert dying[0] is not other[0]
    assert not _closed(other[0]), "a call in flight on another connection was disturbed"
    long_call.finish()
    assert host.connect() is not dying[0]
    host.close()
    assert _closed(other[0]), "close() disposes of the idle connections"


def test_close_while_a_call_is_in_flight_disposes_of_its_connection_when_it_returns() -> None:
    host = Host("t", "test:///default")
    long_call = _LongCall(host)
    used = [long_call.conn]
    host.close()
    assert not _closed(used[0]), "closed under a call in flight"
    long_call.finish()
    assert _closed(used[0])


def test_events_move_to_another_connection_when_theirs_is_gone() -> None:
    start_event_loop()  # domain events need it (a daemon thread, as in the daemon)
    host = Host("t", "test:///default")
    host.register_lifecycle_events(lambda _name, _event: None)
    first = host._events_conn
    assert first is not None and host._events_id is not None
    first.close()  # gone behind our back
    host.ping()  # the next caller finds it dead, disposes of it, and registers anew
    assert host._events_conn is not None and host._events_conn is not first
    host.close()
    assert host._events_conn is None


@pytest.mark.parametrize(
    ("first_finishes_in_s", "wait_s", "second_gets"),
    [
        (0.2, 5.0, "the same read"),  # a caller arriving meanwhile shares the read in flight
        (3.0, 0.2, "HostBusy"),  # a slow host: the second caller does not pile up behind it
    ],
)
def test_callers_share_one_statistics_read_and_do_not_pile_up_on_a_slow_host(
    first_finishes_in_s: float, wait_s: float, second_gets: str
) -> None:
    host = Host("t", "test:///default")
    calls = 0
    started = threading.Event()
    real_call = host._call

    def counting_call(doing: str, fn, idempotent: bool = True):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        started.set()
        time.sleep(first_finishes_in_s)
        return real_call(doing, fn, idempotent)

    host._call = counting_call  # type: ignore[method-assign]
    results: dict[str, object] = {}

    def first() -> None:
        results["first"] = host.all_domain_stats()

    leader = threading.Thread(target=first)
    leader.start()
    assert started.wait(10)
    try:
        results["second"] = host.all_domain_stats(wait_s=wait_s)
    except HostBusy as exc:
        results["second"] = exc
    leader.join(10)
    assert calls == 1, f"{calls} reads of libvirt for two callers"
    if second_gets == "HostBusy":
        assert isinstance(results["second"], HostBusy), results["second"]
        assert "a read has waited" in results["second"].message
    else:
        assert results["second"] is results["first"]
    assert [name for name, _ in host.all_domain_stats()] == ["test"], "the next caller reads afresh"
    assert calls == 2
    host.close()


def test_an_open_that_hangs_on_one_host_holds_up_no_other_host() -> None:
    """Opening and disposing of connections is serialized per host only: a ``libvirt.open`` that
    hangs on a host gone dark (a qemu+ssh host waits out the TCP timeout) must not stop the
    reconciler from reconnecting to, or disposing of dead connections of, every other host."""
    dark, other = Host("dark", "test:///default"), Host("other", "test:///default")
    done = threading.Event()

    def use_other() -> None:
        first = other.connect()
        first.close()  # dies: the next caller disposes of it and opens another
        other.ping()
        other.close()
        done.set()

    with dark._open_lock:  # as if dark's libvirt.open hung
        threading.Thread(target=use_other, daemon=True).start()
        assert done.wait(10), "another host's connections waited for the dark host's open"


def test_a_failed_shared_read_fails_its_waiters_too_never_an_empty_list() -> None:
    host = Host("t", "test:///default")
    started = threading.Event()
    release = threading.Event()

    def failing_call(doing: str, fn, idempotent: bool = True):  # type: ignore[no-untyped-def]
        started.set()
        release.wait(10)
        raise RuntimeError("libvirt-python raised something unexpected")

    host._call = failing_call  # type: ignore[method-assign]
    errors: list[BaseException] = []

    def read() -> None:
        try:
            host.all_domain_stats()
        except BaseException as exc:  # noqa: BLE001 (what it raised is the point)
            errors.append(exc)

    leader = threading.Thread(target=read)
    leader.start()
    assert started.wait(10)
    waiter = threading.Thread(target=read)
    waiter.start()
    time.sleep(0.2)  # the waiter is now waiting on the leader's read
    release.set()
    leader.join(10)
    waiter.join(10)
    assert [type(e) for e in errors] == [RuntimeError, RuntimeError], errors
    host.close()
