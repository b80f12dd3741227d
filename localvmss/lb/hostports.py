"""What TCP ports this host uses already: the kernel's ephemeral range and the listening sockets.

The service reads it before it accepts a load balancer (lb.spec.check_host_ports does the
checking). What it reads is a constructor argument, so tests give fixture files and tables
instead of this machine's sockets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import psutil

from localvmss.lb.spec import HostPorts

log = logging.getLogger(__name__)

PORT_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
RESERVED_PORTS_FILE = Path("/proc/sys/net/ipv4/ip_local_reserved_ports")
LINUX_DEFAULT_RANGE = (32768, 60999)


def read_port_range(path: Path = PORT_RANGE_FILE) -> tuple[int, int]:
    """``net.ipv4.ip_local_port_range`` ("32768\\t60999"); Linux's default if it cannot be read."""
    try:
        low, high = (int(v) for v in path.read_text().split())
    except (OSError, ValueError):
        return LINUX_DEFAULT_RANGE
    return (low, high)


def read_reserved_ports(path: Path = RESERVED_PORTS_FILE) -> frozenset[int]:
    """``net.ipv4.ip_local_reserved_ports`` ("8080,50000-50119"): ports the kernel never picks."""
    ports: set[int] = set()
    try:
        text = path.read_text().strip()
    except OSError:
        return frozenset()
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, _, high = part.partition("-")
        try:
            ports.update(range(int(low), int(high or low) + 1))
        except ValueError:
            continue
    return frozenset(ports)


def listening_tcp_ports() -> dict[int, str]:
    """TCP ports in LISTEN in this network namespace -> who holds them ("pid 812 (nginx)")."""
    out: dict[int, str] = {}
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError) as exc:
        log.warning("cannot list listening TCP sockets (%s); port conflicts show only when HAProxy binds", exc)
        return out
    for conn in conns:
        if conn.status != psutil.CONN_LISTEN or not conn.laddr:
            continue
        who = "another process"
        if conn.pid:
            try:
                who = f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
            except psutil.Error:
                who = f"pid {conn.pid}"
        out.setdefault(conn.laddr.port, who)
    return out


class HostPortReader:
    """Reads HostPorts for check_host_ports; every source can be replaced."""

    def __init__(
        self,
        port_range_file: Path = PORT_RANGE_FILE,
        reserved_ports_file: Path = RESERVED_PORTS_FILE,
        listening: Callable[[], Mapping[int, str]] = listening_tcp_ports,
    ) -> None:
        self.port_range_file = port_range_file
        self.reserved_ports_file = reserved_ports_file
        self.listening = listening

    def read(self, holders: Mapping[int, str]) -> HostPorts:
        return HostPorts(
            holders=dict(holders),
            ephemeral=read_port_range(self.port_range_file),
            ephemeral_reserved=read_reserved_ports(self.reserved_ports_file),
            listening=dict(self.listening()),
        )
