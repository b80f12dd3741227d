"""parse_domain_stats on fixture dicts shaped like libvirt's getAllDomainStats records."""

from __future__ import annotations

from typing import Any

import pytest

from localvmss.errors import HostUnavailable, VirtError
from localvmss.virt.stats import WANTED_STATS, DomainStats, bulk_stats, parse_domain_stats

# What `virsh domstats --raw` shows for a running QEMU guest with a balloon stats period set.
RUNNING: dict[str, Any] = {
    "state.state": 1,
    "state.reason": 1,
    "cpu.time": 12_500_000_000,
    "cpu.user": 9_000_000_000,
    "cpu.system": 3_000_000_000,
    "balloon.current": 524288,
    "balloon.maximum": 1048576,
    "balloon.swap_in": 0,
    "balloon.unused": 300000,
    "balloon.available": 500000,
    "balloon.usable": 350000,
    "balloon.last-update": 1700000000,
    "balloon.rss": 210000,
    "vcpu.current": 2,
    "vcpu.maximum": 4,
    "vcpu.0.state": 1,
    "vcpu.0.time": 6_000_000_000,
    "net.count": 2,
    "net.0.name": "vnet0",
    "net.0.rx.bytes": 1000,
    "net.0.rx.pkts": 10,
    "net.0.tx.bytes": 2000,
    "net.1.name": "vnet1",
    "net.1.rx.bytes": 5,
    "net.1.tx.bytes": 7,
    "block.count": 2,
    "block.0.name": "vda",
    "block.0.rd.reqs": 3,
    "block.0.rd.bytes": 4096,
    "block.0.wr.bytes": 8192,
    "block.1.name": "vdb",
    "block.1.rd.bytes": 100,
    "block.1.wr.bytes": 0,
}


def test_running_domain_in_base_units() -> None:
    stats = parse_domain_stats("lvmss-web-0", RUNNING)
    assert stats == DomainStats(
        name="lvmss-web-0",
        state=1,
        cpu_seconds=12.5,
        vcpus=2,
        memory_bytes=524288 * 1024,
        rss_bytes=210000 * 1024,
        available_bytes=500000 * 1024,
        usable_bytes=350000 * 1024,
        disk_read_bytes=4196,
        disk_write_bytes=8192,
        net_rx_bytes=1005,
        net_tx_bytes=2007,
    )
    assert stats.running
    assert stats.state_name == "running"


def test_guest_without_balloon_stats_reports_none_not_zero() -> None:
    raw = {k: v for k, v in RUNNING.items() if k not in ("balloon.available", "balloon.usable")}
    stats = parse_domain_stats("d", raw)
    assert stats.available_bytes is None
    assert stats.usable_bytes is None
    assert stats.memory_bytes == 524288 * 1024


def test_shut_off_domain_has_only_state() -> None:
    stats = parse_domain_stats("d", {"state.state": 5, "state.reason": 1})
    assert stats.state_name == "shutoff"
    assert not stats.running
    assert stats.cpu_seconds == 0.0
    assert (stats.vcpus, stats.memory_bytes, stats.rss_bytes) == (0, 0, 0)
    assert (stats.disk_read_bytes, stats.disk_write_bytes, stats.net_rx_bytes, stats.net_tx_bytes) == (
        0,
        0,
        0,
        0,
    )
    assert stats.usable_bytes is None and stats.available_bytes is None


def test_empty_record() -> None:
    stats = parse_domain_stats("d", {})
    assert stats.state == 0 and stats.state_name == "nostate"


def test_memory_falls_back_to_maximum_without_current() -> None:
    stats = parse_domain_stats("d", {"balloon.maximum": 1024})
    assert stats.memory_bytes == 1024 * 1024


def test_count_bounds_the_indexed_keys() -> None:
    # Entries beyond block.count (e.g. backing chain records) are not double counted.
    raw = {
        "block.count": 1,
        "block.0.rd.bytes": 10,
        "block.1.rd.bytes": 99,
        "net.count": 0,
        "net.0.rx.bytes": 5,
    }
    stats = parse_domain_stats("d", raw)
    assert stats.disk_read_bytes == 10
    assert stats.net_rx_bytes == 0


def test_missing_device_fields_count_as_zero() -> None:
    stats = parse_domain_stats("d", {"block.count": 2, "block.1.wr.bytes": 3, "net.count": 1})
    assert stats.disk_write_bytes == 3
    assert stats.disk_read_bytes == 0
    assert stats.net_tx_bytes == 0


def test_unknown_state_value() -> None:
    assert parse_domain_stats("d", {"state.state": 42}).state_name == "unknown(42)"


class _FakeDomain:
    def __init__(self, name: str) -> None:
        self._name = name

    def name(self) -> str:
        return self._name


class _FakeConn:
    def __init__(self, records: list[tuple[_FakeDomain, dict[str, Any]]]) -> None:
        self.records = records
        self.calls: list[tuple[int, int]] = []

    def getAllDomainStats(self, stats: int, flags: int) -> list[tuple[_FakeDomain, dict[str, Any]]]:  # noqa: N802
        self.calls.append((stats, flags))
        return self.records


def test_bulk_stats_filters_by_prefix_with_one_call() -> None:
    conn = _FakeConn(
        [
            (_FakeDomain("lvmss-web-1"), {"state.state": 1, "cpu.time": 1_000_000_000}),
            (_FakeDomain("other-vm"), {"state.state": 1}),
            (_FakeDomain("lvmss-web-0"), {"state.state": 5}),
        ]
    )
    result = bulk_stats(conn, "lvmss-")
    assert [s.name for s in result] == ["lvmss-web-0", "lvmss-web-1"]
    assert result[1].cpu_seconds == 1.0
    assert conn.calls == [(WANTED_STATS, 0)]


def test_bulk_stats_against_libvirt_test_driver() -> None:
    libvirt = pytest.importorskip("libvirt")
    conn = libvirt.open("test:///default")  # in-process mock hypervisor with one domain "test"
    try:
        result = bulk_stats(conn, "te")
        assert [s.name for s in result] == ["test"]
        assert result[0].running
        assert bulk_stats(conn, "lvmss-") == []
    finally:
        conn.close()


def test_bulk_stats_maps_libvirt_errors() -> None:
    libvirt = pytest.importorskip("libvirt")

    class _Failing:
        def __init__(self, code: int) -> None:
            self.code = code

        def getAllDomainStats(self, stats: int, flags: int) -> Any:  # noqa: N802
            err = libvirt.libvirtError("boom")
            err.err = (self.code, 0, "connection reset by peer", 2, None, None, None, 0, 0)
            raise err

    with pytest.raises(HostUnavailable, match="connection reset"):
        bulk_stats(_Failing(libvirt.VIR_ERR_RPC), "lvmss-")
    with pytest.raises(VirtError) as info:
        bulk_stats(_Failing(libvirt.VIR_ERR_OPERATION_INVALID), "lvmss-")
    assert info.value.libvirt_code == libvirt.VIR_ERR_OPERATION_INVALID
