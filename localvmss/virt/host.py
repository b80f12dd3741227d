"""One libvirt host: the only place (with the rest of ``virt/``) that touches libvirt objects.

Every call goes through ``_call``, which turns "no such domain/volume/network" into our
``NotFound`` and anything else into ``VirtError`` carrying libvirt's code and the step we were
doing, so nothing above this layer sees a ``libvirtError`` or a ``virDomain``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import libvirt

from localvmss.errors import HostBusy, HostUnavailable, NotFound, VirtError
from localvmss.model import OBJECT_PREFIX, PowerState
from localvmss.virt import domainxml, guestchannel
from localvmss.virt.domainxml import Ownership

T = TypeVar("T")
log = logging.getLogger(__name__)

_NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
    libvirt.VIR_ERR_NO_NETWORK,
}
# libvirt's answers that mean "busy, ask again later", not "broken": a pool refresh while a
# volume is being built or uploaded, a domain whose state-change lock another call holds.
_BUSY_CODES = {libvirt.VIR_ERR_OPERATION_TIMEOUT}
_BUSY_MESSAGES = ("asynchronous jobs running", "cannot acquire state change lock", "Timed out during operation")


def is_busy(code: int, message: str) -> bool:
    """True when libvirt refused because the object is busy (retry later; the host is fine)."""
    return code in _BUSY_CODES or any(m in message for m in _BUSY_MESSAGES)


# libvirt's words when a call finds its connection already closed: the request never left.
NEVER_SENT_MESSAGE = "client socket is closed"
# Calls on one host run on a small pool of connections, one call in flight on each at a time:
# - libvirtd serves at most ``max_client_requests`` (5 by default) calls of one client at a time;
#   past that it stops reading the client's socket, keepalives and stream data included (seen:
#   "Client hit max requests limit 5", then every later call on the connection blocked);
# - libvirt 9.0's client crashes the process (a freed mutex in its remote driver, a segfault in
#   libc) when a connection that several threads are waiting on is closed by keepalive: seen
#   when libvirtd was SIGSTOPped for 30 s and continued. One caller per connection never has
#   threads waiting on each other inside libvirt, and a dead connection is disposed of by the
#   one thread that was using it.
# Volume streams run on short-lived connections of their own.
MAX_CALLS_IN_FLIGHT = 4  # so at most this many connections per host, plus streams
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 5  # libvirt's own default: a host silent for ~30 s is gone
# How long a caller waits for a bulk statistics read that another caller has in flight.
STATS_WAIT_S = 5.0
# The statistics groups ``virt.stats.parse_domain_stats`` reads (state, cpu.time, balloon.*,
# vcpu.current, block.*, net.*); 0 would ask for every group, perf and iothreads included.
STATS_GROUPS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_INTERFACE
    | libvirt.VIR_DOMAIN_STATS_BLOCK
)


def _close_quietly(conn: libvirt.virConnect) -> None:
    try:
        conn.close()
    except libvirt.libvirtError:
        pass


_CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "I/O error",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "end of file from the host",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timeout",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by localvmss",
}

_STATE_MAP = {
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.STOPPING,
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.STOPPED,
    libvirt.VIR_DOMAIN_CRASHED: PowerState.STOPPED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.STOPPED,
}


def _unless_already(dom: libvirt.virDomain, act: Callable[[], object], active: bool) -> None:
    """``act`` unless the domain already is active (or inactive) as asked. A domain that got
    there by itself between the look and the act (a guest finishing its own shutdown while we
    power it off) counts as done: libvirt then answers "domain is not running", which is no
    failure of ours."""
    if bool(dom.isActive()) == active:
        return
    try:
        act()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID and bool(dom.isActive()) == active:
            return
        raise


def _resume_unless_running(dom: libvirt.virDomain) -> None:
    """Resume a paused domain; one that runs again by itself meanwhile counts as resumed."""
    try:
        dom.resume()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID and dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING:
            return
        raise


def download_stream(
    conn: libvirt.virConnect, vol: libvirt.virStorageVol, length: int, sink: Callable[[bytes], object]
) -> None:
    """Hand the first ``length`` bytes of a volume (0: all of it) to ``sink`` through libvirt's
    stream API, which works for remote hosts too; a failed stream is aborted, never left open."""
    stream = conn.newStream(0)
    vol.download(stream, 0, length, 0)
    try:
        stream.recvAll(lambda _s, data, _o: sink(data), None)
        stream.finish()
    except BaseException:
        stream.abort()
        raise


_event_loop_started = False
_event_loop_lock = threading.Lock()


def start_event_loop() -> None:
    """Run libvirt's default event loop on its own daemon thread (needed for events and keepalive)."""
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


# libvirt prints every error to stderr by default; we report them ourselves.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


@dataclass
class _SharedRead:
    """One bulk statistics read that callers arriving meanwhile wait for (``all_domain_stats``)."""

    started: float
    done: threading.Event = field(default_factory=threading.Event)
    result: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    error: BaseException | None = None  # what the read raised: its waiters raise it too


@dataclass(frozen=True)
class NumaCell:
    cell_id: int
    cpus: tuple[int, ...]
    memory_bytes: int


@dataclass(frozen=True)
class HostCapacity:
    cpus: int
    memory_bytes: int
    free_memory_bytes: int
    cells: tuple[NumaCell, ...]
    domain_types: tuple[str, ...]


@dataclass(frozen=True)
class OwnedDomain:
    name: str
    ownership: Ownership
    power_state: PowerState


class Host:
    """A libvirt connection with verbs in our terms."""

    def __init__(self, name: str, uri: str) -> None:
        self.name = name
        self.uri = uri
        self._idle: list[libvirt.virConnect] = []  # live connections no call is using
        # This host's connections are opened and disposed of one at a time (never another
        # host's: an open that hangs on a host gone dark must not hold up the others).
        self._open_lock = threading.Lock()
        self._generation = 0  # bumped by ``close``: older connections are disposed of on return
        self._born: dict[int, int] = {}  # id(connection) -> the generation it was opened in
        self._lock = threading.Lock()
        self._in_flight = threading.BoundedSemaphore(MAX_CALLS_IN_FLIGHT)
        # thread id -> when its ping was sent, while it waits for the answer (``unanswered_for``);
        # a lock of its own: ``_lock`` is held while a connection is being opened
        self._pings: dict[int, float] = {}
        self._pings_lock = threading.Lock()
        self._lifecycle_callback: Callable[[str, int], None] | None = None
        self._events_conn: libvirt.virConnect | None = None  # the connection that has them
        self._events_id: int | None = None  # their registration on it
        self._events_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._stats_read: _SharedRead | None = None  # the bulk statistics read in flight
        # domain UUID -> (name, ownership read from its XML), for ``owned_domains``.
        self._ownership: dict[str, tuple[str, Ownership | None]] = {}
        # network -> its DHCP host entries {lowercase mac: (mac, ip)}, as last read or changed here.
        self._dhcp_hosts: dict[str, dict[str, tuple[str, str]]] = {}
        self._dhcp_changes: dict[str, int] = {}  # network -> changes made here (see network_layout)

    # -- connection -------------------------------------------------------------------------
    def connect(self) -> libvirt.virConnect:
        """A live connection to the host (opened if none is idle); raises HostUnavailable."""
        conn = self._checkout()
        self._checkin(conn)
        return conn

    def _checkout(self) -> libvirt.virConnect:
        """An idle live connection, or a new one; the caller has it alone until ``_checkin``."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._open()
            if self._alive(conn):
                self._ensure_events(conn)
                return conn
            self._dispose(conn)

    def _checkin(self, conn: libvirt.virConnect) -> None:
        with self._lock:
            if self._born.get(id(conn)) == self._generation:
                self._idle.append(conn)
                return
        self._dispose(conn)  # ``close`` was called while it was in use

    def _open(self) -> libvirt.virConnect:
        try:
            with self._open_lock:
                conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise HostUnavailable(f"host {self.name} ({self.uri}) does not answer: {exc}") from None
        if _event_loop_started:
            try:
                conn.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
                conn.registerCloseCallback(self._on_close, None)
            except libvirt.libvirtError:
                pass
        with self._lock:
            self._born[id(conn)] = self._generation
        self._ensure_events(conn)
        return conn

    def _ensure_events(self, conn: libvirt.virConnect) -> None:
        """Lifecycle events live on one of the host's connections; when that one is gone, the
        next connection a caller takes registers them again."""
        if self._lifecycle_callback is None or self._events_conn is not None:
            return
        try:
            with self._events_lock:
                if self._events_conn is None:
                    self._register_lifecycle(conn)
        except libvirt.libvirtError as exc:
            # Events only wake the reconciler early; its periodic pass still sees everything.
            log.warning("host %s: no lifecycle events on the new connection: %s", self.name, exc)

    def _dispose(self, conn: libvirt.virConnect) -> None:
        """Close a connection nobody uses any more, its event and close callbacks deregistered
        first (a dead one's deregistration fails harmlessly)."""
        with self._open_lock:
            if conn is self._events_conn:
                if self._events_id is not None:
                    try:
                        cast(libvirt.virConnect, conn).domainEventDeregisterAny(self._events_id)
                    except libvirt.libvirtError:
                        pass
                self._events_conn, self._events_id = None, None
            try:
                conn.unregisterCloseCallback()
            except libvirt.libvirtError:
                pass
            _close_quietly(conn)
        with self._lock:
            self._born.pop(id(conn), None)

    def _on_close(self, _conn: libvirt.virConnect, reason: int, _opaque: object) -> None:
        """libvirt tells why a connection ended; the next call reconnects."""
        if reason == libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT:
            return
        log.warning("connection to host %s (%s) closed: %s", self.name, self.uri, _CLOSE_REASONS.get(reason, reason))

    def close(self) -> None:
        """Close the idle connections now and the ones in use when their calls return."""
        with self._lock:
            self._generation += 1
            idle, self._idle = self._idle, []
        for conn in idle:
            self._dispose(conn)

    def _call(self, doing: str, fn: Callable[[libvirt.virConnect], T], idempotent: bool = True) -> T:
        """Run ``fn`` on a connection of its own; a connection that turns out to be dead is
        disposed of and the call made once more on another when that is safe: always when
        libvirt never sent the request (the socket was already closed), otherwise only for calls
        that may be repeated."""
        with self._in_flight:
            for attempt in (1, 2):
                conn = self._checkout()
                try:
                    result = fn(conn)
                except libvirt.libvirtError as exc:
                    code = exc.get_error_code()
                    alive = self._alive(conn)
                    if alive:
                        self._checkin(conn)
                    else:
                        self._dispose(conn)
                    if code in _NOT_FOUND:
                        raise NotFound(f"{doing} on host {self.name}: {exc.get_error_message()}") from None
                    if is_busy(code, exc.get_error_message() or ""):
                        raise HostBusy(f"{doing} on host {self.name}: busy ({exc.get_error_message()})") from None
                    if alive:
                        message = exc.get_error_message()
                        raise VirtError(f"{doing} on host {self.name} failed: {message}", code) from None
                    never_sent = NEVER_SENT_MESSAGE in (exc.get_error_message() or "")
                    if attempt == 1 and (never_sent or idempotent):
                        log.warning(
                            "host %s: connection lost while %s (%s); reconnecting and trying again",
                            self.name,
                            doing,
                            exc.get_error_message(),
                        )
                        continue
                    raise HostUnavailable(f"host {self.name} stopped answering while {doing}: {exc}") from None
                except BaseException:
                    self._checkin(conn)
                    raise
                self._checkin(conn)
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _alive(conn: libvirt.virConnect) -> bool:
        try:
            return bool(conn.isAlive())
        except libvirt.libvirtError:
            return False

    def ping(self) -> bool:
        """True if the host answers a cheap call. A failure never closes the connection under
        other threads: ``_call`` already dropped it if it is dead."""
        me = threading.get_ident()
        with self._pings_lock:
            self._pings[me] = time.monotonic()
        try:
            self._call("asking for the hostname", lambda c: c.getHostname())
            return True
        except HostBusy:
            return True  # it answered
        except (HostUnavailable, VirtError):
            return False
        finally:
            with self._pings_lock:
                self._pings.pop(me, None)

    def unanswered_for(self) -> float:
        """Seconds the oldest ping in flight has waited for its answer; 0 when none waits. A
        libvirtd that is stopped (SIGSTOP) or stuck keeps its connection open, so its calls
        fail only when the connection's keepalive gives up; meanwhile this says how long."""
        with self._pings_lock:
            oldest = min(self._pings.values(), default=None)
        return 0.0 if oldest is None else time.monotonic() - oldest

    # -- capacity ---------------------------------------------------------------------------
    def capacity(self) -> HostCapacity:
        def read(conn: libvirt.virConnect) -> HostCapacity:
            caps = ET.fromstring(conn.getCapabilities())
            cells = []
            for cell in caps.iterfind("host/topology/cells/cell"):
                mem = cell.find("memory")
                mem_bytes = int(mem.text) * 1024 if mem is not None and mem.text else 0
                cpus = tuple(sorted(int(c.get("id", "0")) for c in cell.iterfind("cpus/cpu")))
                cells.append(NumaCell(int(cell.get("id", "0")), cpus, mem_bytes))
            types = tuple(sorted({d.get("type", "") for d in caps.iterfind("guest/arch/domain")}))
            info = conn.getInfo()  # [model, memory MiB, cpus, ...]
            return HostCapacity(
                cpus=int(info[2]),
                memory_bytes=int(info[1]) * 1024 * 1024,
                free_memory_bytes=int(conn.getFreeMemory()),
                cells=tuple(cells) or (NumaCell(0, tuple(range(int(info[2]))), int(info[1]) << 20),),
                domain_types=types,
            )

        return self._call("reading host capabilities", read)

    # -- storage ----------------------------------------------------------------------------
    def ensure_pool(self, name: str, path: str) -> None:
        """Define, build and start a directory pool if it is not there yet."""

        def ensure(conn: libvirt.virConnect) -> None:
            try:
                pool = conn.storagePoolLookupByName(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                    raise
                pool = conn.storagePoolDefineXML(domainxml.pool_xml(name, path), 0)
                pool.build(0)
                pool.setAutostart(1)
            if not pool.isActive():
                pool.create(0)
            _refresh_unless_busy(pool)

        self._call(f"preparing storage pool {name}", ensure)

    def volume_exists(self, pool: str, name: str) -> bool:
        try:
            self.volume_path(pool, name)
            return True
        except NotFound:
            return False

    def volume_path(self, pool: str, name: str) -> str:
        return self._call(
            f"looking up volume {name}", lambda c: c.storagePoolLookupByName(pool).storageVolLookupByName(name).path()
        )

    def volume_names(self, pool: str, prefix: str = OBJECT_PREFIX, refresh: bool = False) -> list[str]:
        """Volumes whose name has ``prefix``. libvirt's list already holds every volume made
        through libvirt, so no refresh is needed to see our own; ``refresh`` also picks up files
        changed behind libvirt's back, and is skipped (not failed) while the pool is busy."""

        def names(conn: libvirt.virConnect) -> list[str]:
            p = conn.storagePoolLookupByName(pool)
            if refresh:
                _refresh_unless_busy(p)
            return [n for n in p.listVolumes() if n.startswith(prefix)]

        return self._call(f"listing volumes of pool {pool}", names)

    def volume_sha256(self, pool: str, name: str, length: int) -> str:
        """sha256 of the volume's first ``length`` bytes, read back through libvirt (works for
        remote hosts): how an upload is verified when no record says it completed."""

        def digest(conn: libvirt.virConnect) -> str:
            vol = conn.storagePoolLookupByName(pool).storageVolLookupByName(name)
            if int(vol.info()[1]) < length:
                return ""
            h = hashlib.sha256()
            download_stream(conn, vol, length, h.update)
            return h.hexdigest()

        return self._call(f"reading back volume {name}", lambda _c: self._on_own_connection(digest))

    def download_volume(self, pool: str, name: str, path: str) -> int:
        """Write the volume's bytes to a local file through libvirt's stream API (works for
        remote hosts); returns the bytes written. A redeploy moves an instance's disk this way."""

        def download(conn: libvirt.virConnect) -> int:
            vol = conn.storagePoolLookupByName(pool).storageVolLookupByName(name)
            written = 0
            with open(path, "wb") as out:

                def sink(data: bytes) -> None:
                    nonlocal written
                    written += out.write(data)

                download_stream(conn, vol, 0, sink)  # length 0: the whole volume
            return written

        return self._call(f"downloading volume {name}", lambda _c: self._on_own_connection(download))

    def upload_file(self, pool: str, name: str, path: str, fmt: str) -> None:
        """Create a volume from a local file through libvirt's stream API (works for remote hosts)."""
        size = os.path.getsize(path)
        with open(path, "rb") as src:
            self._upload(pool, name, size, fmt, lambda n: src.read(n))

    def upload_bytes(self, pool: str, name: str, data: bytes, fmt: str = "raw") -> None:
        view = memoryview(data)
        offset = 0

        def read(n: int) -> bytes:
            nonlocal offset
            chunk = bytes(view[offset : offset + n])
            offset += len(chunk)
            return chunk

        self._upload(pool, name, len(data), fmt, read)

    def _upload(self, pool: str, name: str, size: int, fmt: str, read: Callable[[int], bytes]) -> None:
        def upload(conn: libvirt.virConnect) -> None:
            p = conn.storagePoolLookupByName(pool)
            try:
                p.storageVolLookupByName(name).delete(0)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                    raise
            vol = p.createXML(domainxml.volume_xml(name, max(size, 512), fmt), 0)
            stream = conn.newStream(0)
            try:
                vol.upload(stream, 0, size, 0)
                stream.sendAll(lambda _s, n, _o: read(n), None)
                stream.finish()
            except BaseException:
                try:
                    stream.abort()
                finally:
                    vol.delete(0)
                raise

        self._call(f"uploading volume {name}", lambda _c: self._on_own_connection(upload))

    def _on_own_connection(self, fn: Callable[[libvirt.virConnect], T]) -> T:
        """Run a volume stream on a short-lived connection of its own: a stream that breaks (or
        waits on the pool) then cannot stall the calls sharing the host's connection."""
        with self._open_lock:
            conn = libvirt.open(self.uri)
        try:
            return fn(conn)
        finally:
            with self._open_lock:
                _close_quietly(conn)

    def create_overlay(self, pool: str, name: str, base_volume: str) -> str:
        """A qcow2 volume whose backing store is ``base_volume``; returns its path. Idempotent."""

        def create(conn: libvirt.virConnect) -> str:
            p = conn.storagePoolLookupByName(pool)
            base = p.storageVolLookupByName(base_volume)
            try:
                return p.storageVolLookupByName(name).path()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                    raise
            capacity = base.info()[1]
            return p.createXML(domainxml.volume_xml(name, capacity, "qcow2", base.path()), 0).path()

        return self._call(f"creating overlay {name} on {base_volume}", create)

    def delete_volume(self, pool: str, name: str) -> None:
        """Delete a volume; one that is already gone counts as deleted."""
        try:
            self._call(
                f"deleting volume {name}",
                lambda c: c.storagePoolLookupByName(pool).storageVolLookupByName(name).delete(0),
            )
        except NotFound:
            pass

    def volume_backing_path(self, pool: str, name: str) -> str | None:
        def read(conn: libvirt.virConnect) -> str | None:
            xml = conn.storagePoolLookupByName(pool).storageVolLookupByName(name).XMLDesc(0)
            el = ET.fromstring(xml).find("backingStore/path")
            return el.text if el is not None else None

        return self._call(f"reading volume {name}", read)

    # -- networks ---------------------------------------------------------------------------
    def ensure_network(self, name: str, xml: str) -> None:
        def ensure(conn: libvirt.virConnect) -> None:
            try:
                net = conn.networkLookupByName(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
                    raise
                net = conn.networkDefineXML(xml)
                net.setAutostart(1)
            if not net.isActive():
                net.create()

        self._call(f"preparing network {name}", ensure)

    def network_layout(self, name: str) -> tuple[str, str, str, str, list[tuple[str, str]]]:
        """(gateway, netmask, dhcp start, dhcp end, [(mac, ip) reservations]) of a network."""

        def read(conn: libvirt.virConnect) -> tuple[str, str, str, str, list[tuple[str, str]]]:
            with self._lock:
                changes = self._dhcp_changes.get(name, 0)
            root = ET.fromstring(conn.networkLookupByName(name).XMLDesc(0))
            ip = root.find("ip")
            rng = root.find("ip/dhcp/range")
            if ip is None or rng is None:
                raise VirtError(f"network {name} has no IPv4 DHCP range; localvmss needs one")
            hosts = [(h.get("mac", ""), h.get("ip", "")) for h in root.iterfind("ip/dhcp/host")]
            netmask = ip.get("netmask") or _prefix_to_mask(int(ip.get("prefix", "24")))
            with self._lock:
                if self._dhcp_changes.get(name, 0) == changes:  # else a change made here meanwhile is newer
                    self._dhcp_hosts[name] = {mac.lower(): (mac, addr) for mac, addr in hosts}
            return ip.get("address", ""), netmask, rng.get("start", ""), rng.get("end", ""), hosts

        return self._call(f"reading network {name}", read)

    def _dhcp_entries(self, network: str) -> dict[str, tuple[str, str]]:
        """The network's DHCP host entries as this Host last saw them (read once, then kept
        current by its own changes and by every ``network_layout``): a reservation costs one
        update call, not a read and parse of every entry of the network."""
        with self._lock:
            known = self._dhcp_hosts.get(network)
        return self._read_dhcp(network) if known is None else known

    def _update_dhcp_host(self, network: str, command: int, xml: str, doing: str) -> None:
        """Change one DHCP host entry, live and persistent."""

        def update(conn: libvirt.virConnect) -> None:
            conn.networkLookupByName(network).update(
                command,
                libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
                -1,
                xml,
                libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG,
            )

        self._call(doing, update, idempotent=False)

    def reserve_address(self, network: str, mac: str, ip: str, hostname: str) -> None:
        """Add a DHCP host entry (live and persistent); an identical existing entry is fine.
        Refused by libvirt (e.g. an entry made behind our back holds the address): the entries
        are read again, so the next attempt sees them."""
        if self._dhcp_entries(network).get(mac.lower()) == (mac, ip):
            return
        try:
            self._update_dhcp_host(
                network,
                libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
                domainxml.dhcp_host_xml(mac, ip, hostname),
                f"reserving {ip} for {mac} in network {network}",
            )
        except VirtError:
            # What this Host knew was out of date (an entry made elsewhere): look again.
            if self._read_dhcp(network).get(mac.lower()) == (mac, ip):
                return
            raise
        self._dhcp_changed(network, mac, (mac, ip))

    def release_address(self, network: str, mac: str) -> None:
        """Remove the DHCP host entry of ``mac``; one already gone counts as released. An
        entry this Host does not know of is looked for again before it counts as gone."""
        entry = self._dhcp_entries(network).get(mac.lower()) or self._read_dhcp(network).get(mac.lower())
        if entry is None:
            return
        entry_mac, entry_ip = entry
        self._update_dhcp_host(
            network,
            libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
            ET.tostring(ET.Element("host", mac=entry_mac, ip=entry_ip), encoding="unicode"),
            f"releasing {entry_ip} in network {network}",
        )
        self._dhcp_changed(network, mac, None)

    def _read_dhcp(self, network: str) -> dict[str, tuple[str, str]]:
        self.network_layout(network)
        with self._lock:
            return self._dhcp_hosts.get(network, {})

    def _dhcp_changed(self, network: str, mac: str, entry: tuple[str, str] | None) -> None:
        """Keep the known entries current after a change made here; a read that began before
        it then does not overwrite it (see ``network_layout``)."""
        with self._lock:
            self._dhcp_changes[network] = self._dhcp_changes.get(network, 0) + 1
            hosts = self._dhcp_hosts.setdefault(network, {})
            if entry is None:
                hosts.pop(mac.lower(), None)
            else:
                hosts[mac.lower()] = entry

    # -- domains ----------------------------------------------------------------------------
    def define_domain(self, xml: str) -> None:
        dom = self._call("defining a domain", lambda c: c.defineXML(xml))
        with self._lock:
            self._ownership.pop(dom.UUIDString(), None)  # a redefinition may change the metadata

    def create_transient(self, xml: str) -> None:
        self._call("starting a transient domain", lambda c: c.createXML(xml, 0), idempotent=False)

    def domain_exists(self, name: str) -> bool:
        try:
            self._call(f"looking up domain {name}", lambda c: c.lookupByName(name))
            return True
        except NotFound:
            return False

    def power_state(self, name: str) -> PowerState:
        state = self._call(f"reading state of {name}", lambda c: c.lookupByName(name).state()[0])
        return _STATE_MAP.get(state, PowerState.UNKNOWN)

    def start(self, name: str) -> None:
        """Start a defined domain; one already running counts as started, a paused one is
        resumed, and one with a managed save image is restored from it (libvirt's own rule)."""

        def start(conn: libvirt.virConnect) -> None:
            dom = conn.lookupByName(name)
            if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                _resume_unless_running(dom)
                return
            _unless_already(dom, dom.create, active=True)

        self._call(f"starting {name}", start)

    def suspend(self, name: str) -> None:
        """Pause a running domain (libvirt suspend: its memory stays, its vCPUs stop); one
        already paused counts as paused."""

        def suspend(conn: libvirt.virConnect) -> None:
            dom = conn.lookupByName(name)
            if dom.state()[0] != libvirt.VIR_DOMAIN_PAUSED:
                dom.suspend()

        self._call(f"pausing {name}", suspend)

    def managed_save(self, name: str) -> None:
        """Write a running (or paused) domain's memory to libvirt's managed save image and stop
        it; the next ``start`` restores it. A domain already saved counts as saved."""

        def save(conn: libvirt.virConnect) -> None:
            dom = conn.lookupByName(name)
            if not dom.isActive() and dom.hasManagedSaveImage(0):
                return
            dom.managedSave(0)

        self._call(f"saving {name}", save)  # repeatable: a domain already saved counts as saved

    def has_managed_save(self, name: str) -> bool:
        return bool(
            self._call(f"looking at {name}'s save image", lambda c: c.lookupByName(name).hasManagedSaveImage(0))
        )

    def shutdown(self, name: str) -> None:
        """Ask the guest to power off (ACPI); falls through if it is already off."""

        def shutdown(conn: libvirt.virConnect) -> None:
            dom = conn.lookupByName(name)
            _unless_already(dom, dom.shutdown, active=False)

        self._call(f"shutting down {name}", shutdown)

    def destroy(self, name: str) -> None:
        """Power off at once; a domain already off or gone counts as destroyed."""

        def destroy(conn: libvirt.virConnect) -> None:
            dom = conn.lookupByName(name)
            _unless_already(dom, dom.destroy, active=False)

        try:
            self._call(f"powering off {name}", destroy)
        except NotFound:
            pass

    def undefine(self, name: str) -> None:
        """Power off and remove the definition; a domain already gone counts as removed."""
        self.destroy(name)
        try:
            self._call(
                f"undefining {name}",
                lambda c: c.lookupByName(name).undefineFlags(
                    libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                ),
            )
        except NotFound:
            pass

    def owned_domains(self, prefix: str = OBJECT_PREFIX) -> list[OwnedDomain]:
        """Every domain whose name has our prefix and whose metadata says who owns it, with its
        power state: one call for the whole host (the states come with libvirt's bulk listing).
        A domain's ownership is read from its XML once per definition (libvirt's UUID changes
        with every new definition; ``define_domain`` forgets the one it redefines), so a steady
        host costs no per-domain call."""

        def listing(conn: libvirt.virConnect) -> list[OwnedDomain]:
            result = []
            seen: dict[str, tuple[str, Ownership | None]] = {}
            for dom, stats in conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0):
                name = dom.name()
                if not name.startswith(prefix):
                    continue
                key = dom.UUIDString()
                known = self._ownership.get(key)
                if known is None or known[0] != name:
                    try:
                        known = (name, domainxml.read_ownership(dom.XMLDesc(0)))
                    except libvirt.libvirtError as exc:
                        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                            continue  # vanished while we looked
                        raise  # never a partial listing: a missing domain would look deleted
                seen[key] = known
                if known[1] is not None:
                    state = _STATE_MAP.get(int(stats.get("state.state", -1)), PowerState.UNKNOWN)
                    result.append(OwnedDomain(name, known[1], state))
            with self._lock:
                self._ownership = seen  # what is gone is forgotten
            return result

        return self._call("listing domains", listing)

    def domain_xml(self, name: str) -> str:
        return self._call(f"reading XML of {name}", lambda c: c.lookupByName(name).XMLDesc(0))

    # -- guest command channel (virt/guestchannel.py) -------------------------------------------
    def guest_command(self, name: str, line: str, timeout_s: float = 5.0) -> str:
        """One command line to the guest's command service, its reply line back. Runs on a
        connection of its own, so a guest that does not answer never holds the shared one.
        GuestAgentUnavailable when nobody answers; the reply is returned as the guest sent it."""
        return self._call(
            f"talking to the guest of {name}",
            lambda _c: self._on_own_connection(
                lambda c: guestchannel.exchange(c, c.lookupByName(name), line, timeout_s)
            ),
            idempotent=False,
        )

    def guest_conversation(
        self, name: str, lines: Sequence[str | Callable[[], str]], timeout_s: float = 5.0
    ) -> list[str]:
        """Several command lines over one stream of the guest channel (after a ping), each sent
        after the reply to the one before (a line may be a function, called as it is sent)."""
        return self._call(
            f"talking to the guest of {name}",
            lambda _c: self._on_own_connection(
                lambda c: guestchannel.converse(c, c.lookupByName(name), lines, timeout_s, prime=True)
            ),
            idempotent=False,
        )

    def sync_clock(self, name: str, timeout_s: float = 5.0) -> float:
        """Set the guest clock to this machine's (after a resume or restore: under TCG the
        guest clock stands still while paused); returns the skew left, guest minus host, in s."""
        return self._call(
            f"setting the guest clock of {name}",
            lambda _c: self._on_own_connection(lambda c: guestchannel.sync_clock(c, c.lookupByName(name), timeout_s)),
            idempotent=False,
        )

    def all_domain_stats(self, wait_s: float = STATS_WAIT_S) -> list[tuple[str, dict[str, Any]]]:
        """libvirt's bulk statistics for every active domain in one call. Callers at the same
        time share one read: each scrape used to start its own, so a stalled host collected a
        blocked thread per scrape until its keepalive gave up. A caller that finds a read in
        flight waits ``wait_s`` for it, then gets HostBusy (the host is slow, not gone)."""
        with self._stats_lock:
            read = self._stats_read
            leader = read is None
            if leader:
                read = self._stats_read = _SharedRead(time.monotonic())
        assert read is not None
        if not leader:
            if not read.done.wait(wait_s):
                raise HostBusy(
                    f"reading domain statistics on host {self.name}: a read has waited "
                    f"{time.monotonic() - read.started:.0f} s for the host"
                )
            if read.error is not None:
                raise read.error
            return read.result

        def stats(conn: libvirt.virConnect) -> list[tuple[str, dict[str, Any]]]:
            raw = conn.getAllDomainStats(STATS_GROUPS, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE)
            return [(dom.name(), values) for dom, values in raw]

        try:
            read.result = self._call("reading domain statistics", stats)
            return read.result
        except BaseException as exc:
            read.error = exc  # never an empty list that looks like "no domains" to a waiter
            raise
        finally:
            with self._stats_lock:
                self._stats_read = None
            read.done.set()

    def register_lifecycle_events(self, callback: Callable[[str, int], None]) -> None:
        """Call ``callback(domain_name, event)`` on lifecycle events (needs the event loop); the
        registration is made again on a new connection when its connection is gone, so events
        survive a reconnect."""
        self._lifecycle_callback = callback
        self._call("registering for domain events", self._ensure_events)

    def _register_lifecycle(self, conn: libvirt.virConnect) -> None:
        callback = self._lifecycle_callback
        if callback is None:
            return
        self._events_id = conn.domainEventRegisterAny(
            None,
            libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
            lambda _c, dom, event, _detail, _opaque: callback(dom.name(), event),
            None,
        )
        self._events_conn = conn

    @contextmanager
    def transient_guard(self, name: str) -> Iterator[None]:
        """Make sure a probe domain is gone afterwards, whatever happened."""
        try:
            yield
        finally:
            self.destroy(name)


def _refresh_unless_busy(pool: libvirt.virStoragePool) -> None:
    """Refresh a pool; a pool busy with a volume job keeps its current list (busy is not down)."""
    try:
        pool.refresh(0)
    except libvirt.libvirtError as exc:
        if not is_busy(exc.get_error_code(), exc.get_error_message() or ""):
            raise
        log.info("pool %s is busy (%s); using its current volume list", pool.name(), exc.get_error_message())


def _prefix_to_mask(prefix: int) -> str:
    bits = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
    return ".".join(str((bits >> s) & 0xFF) for s in (24, 16, 8, 0))
