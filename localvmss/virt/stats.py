"""Per-domain resource counters from libvirt's bulk statistics API.

One ``virConnectGetAllDomainStats`` call per host returns every domain's counters at once, which
is far cheaper than one RPC per domain per metric. Parsing is kept pure (``parse_domain_stats``
takes the plain dict libvirt returns) so it is tested on fixture dicts without a hypervisor.

Key names (libvirt ``virConnectGetAllDomainStats`` documentation):

- ``state.state``: ``virDomainState`` value.
- ``cpu.time``: total CPU time of the domain, nanoseconds.
- ``vcpu.current``: number of online vCPUs.
- ``balloon.current`` / ``balloon.maximum``: memory assigned to the guest, KiB.
- ``balloon.rss``: resident set size of the QEMU process on the host, KiB.
- ``balloon.available``: total memory the guest sees (its ``MemTotal``), KiB; guest-reported.
- ``balloon.usable``: memory the guest could give up without swapping (its ``MemAvailable``),
  KiB; guest-reported. Both guest-reported keys only appear once the virtio balloon has a
  statistics period set and the guest driver answered.
- ``block.count``, ``block.<n>.rd.bytes``, ``block.<n>.wr.bytes``.
- ``net.count``, ``net.<n>.rx.bytes``, ``net.<n>.tx.bytes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from localvmss.errors import HostUnavailable, VirtError

KIB = 1024
NS_PER_SECOND = 1_000_000_000

# virDomainState values; names follow virsh's spelling.
STATE_NAMES: dict[int, str] = {
    0: "nostate",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutdown",
    5: "shutoff",
    6: "crashed",
    7: "pmsuspended",
}
STATE_RUNNING = 1

# VIR_DOMAIN_STATS_* bits (stable ABI values), so that callers never need libvirt imported.
STATS_STATE = 1
STATS_CPU_TOTAL = 2
STATS_BALLOON = 4
STATS_VCPU = 8
STATS_INTERFACE = 16
STATS_BLOCK = 32
WANTED_STATS = STATS_STATE | STATS_CPU_TOTAL | STATS_BALLOON | STATS_VCPU | STATS_INTERFACE | STATS_BLOCK


@dataclass(frozen=True)
class DomainStats:
    """One domain's counters, in base units (seconds, bytes) as Prometheus wants them."""

    name: str
    state: int
    cpu_seconds: float
    vcpus: int
    memory_bytes: int
    rss_bytes: int
    available_bytes: int | None
    usable_bytes: int | None
    disk_read_bytes: int
    disk_write_bytes: int
    net_rx_bytes: int
    net_tx_bytes: int

    @property
    def state_name(self) -> str:
        return STATE_NAMES.get(self.state, f"unknown({self.state})")

    @property
    def running(self) -> bool:
        return self.state == STATE_RUNNING


def _int(raw: Mapping[str, Any], key: str) -> int:
    value = raw.get(key)
    if value is None:
        return 0
    if type(value) is int:  # what libvirt gives (every scrape, every domain: no conversion)
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _optional_kib(raw: Mapping[str, Any], key: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    try:
        return int(value) * KIB
    except (TypeError, ValueError):
        return None


def _sum_indexed(raw: Mapping[str, Any], group: str, first: str, second: str) -> tuple[int, int]:
    """Sums of ``<group>.<n>.<first>`` and of ``<group>.<n>.<second>`` over ``0 <= n <
    <group>.count`` (one pass over the indices for both fields)."""
    total_first = total_second = 0
    for index in range(_int(raw, f"{group}.count")):
        total_first += _int(raw, f"{group}.{index}.{first}")
        total_second += _int(raw, f"{group}.{index}.{second}")
    return total_first, total_second


def parse_domain_stats(name: str, raw: Mapping[str, Any]) -> DomainStats:
    """Turn one ``getAllDomainStats`` record into base units; absent keys become 0 (or None when
    the value is guest-reported, so "unknown" never looks like "no memory left").

    Called for every domain at every scrape: each key is looked up once, and a group without
    devices (no ``block.count``) costs one look-up."""
    memory_kib = _int(raw, "balloon.current") or _int(raw, "balloon.maximum")
    disk_read, disk_write = _sum_indexed(raw, "block", "rd.bytes", "wr.bytes") if "block.count" in raw else (0, 0)
    net_rx, net_tx = _sum_indexed(raw, "net", "rx.bytes", "tx.bytes") if "net.count" in raw else (0, 0)
    return DomainStats(
        name,
        _int(raw, "state.state"),
        _int(raw, "cpu.time") / NS_PER_SECOND,
        _int(raw, "vcpu.current"),
        memory_kib * KIB,
        _int(raw, "balloon.rss") * KIB,
        _optional_kib(raw, "balloon.available"),
        _optional_kib(raw, "balloon.usable"),
        disk_read,
        disk_write,
        net_rx,
        net_tx,
    )


def bulk_stats(conn: Any, name_prefix: str) -> list[DomainStats]:
    """Counters of every domain on ``conn`` whose name starts with ``name_prefix``, in one RPC.

    Inactive domains are included (they report only their state) so callers can tell "stopped"
    from "gone". libvirt failures become ``HostUnavailable`` (connection lost) or ``VirtError``.
    """
    import libvirt  # lazily: everything else in this module works without the bindings

    try:
        records = conn.getAllDomainStats(WANTED_STATS, 0)
        result: list[DomainStats] = []
        for domain, raw in records:
            name = domain.name()
            if name.startswith(name_prefix):
                result.append(parse_domain_stats(name, raw))
    except libvirt.libvirtError as exc:
        code = exc.get_error_code()
        text = exc.get_error_message() or str(exc)
        unreachable = {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_ERR_RPC}
        if code in unreachable:
            raise HostUnavailable(f"reading domain statistics: libvirt connection lost: {text}") from exc
        raise VirtError(f"reading domain statistics failed: {text} (libvirt code {code})", code) from exc
    result.sort(key=lambda stats: stats.name)
    return result
