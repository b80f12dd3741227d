"""Daemon configuration: a TOML file (``/etc/localvmss/localvmssd.toml`` by default).

Every field has a default that works on a single Linux host with libvirt's ``default`` network,
so the file is optional; the demo and the tests write their own.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localvmss.errors import InvalidSpec
from localvmss.hosturi import check_config_host_uri
from localvmss.model import validate_name

DEFAULT_CONFIG_PATH = Path("/etc/localvmss/localvmssd.toml")


@dataclass
class HostConfig:
    name: str
    uri: str = "qemu:///system"
    zone: str | None = None
    network: str = "default"
    # libvirt's log directory on that host (serial consoles are logged there), and the same
    # directory as the daemon can read it (None: not readable from here, e.g. a remote host).
    serial_log_dir: str = "/var/log/libvirt/qemu"
    serial_log_read_dir: str | None = "/var/log/libvirt/qemu"


@dataclass
class DaemonConfig:
    state_dir: Path = Path("/var/lib/localvmss")
    api_socket: Path = Path("/run/localvmss/api.sock")
    api_tcp: str | None = None  # "127.0.0.1:8470": only with api_token
    api_token: str | None = None
    pool_name: str = "lvmss-pool"
    pool_path: str = "/var/lib/libvirt/localvmss"
    hosts: list[HostConfig] = field(default_factory=lambda: [HostConfig(name="local")])
    memory_overcommit: float = 1.5
    reconcile_interval_s: float = 3.0
    max_parallel_boots: int = 4
    boot_timeout_s: float = 300.0
    drain_timeout_s: float = 30.0
    shutdown_timeout_s: float = 60.0  # a graceful power-off waits this long, then powers off hard
    health_interval_s: float = 2.0
    exporter_address: str = "127.0.0.1"
    exporter_port: int = 9464
    prometheus_url: str | None = None  # None: start and supervise a local prometheus
    prometheus_port: int = 9490
    prometheus_binary: str = "prometheus"
    scrape_interval_s: float = 5.0
    haproxy_enabled: bool = True
    haproxy_binary: str = "haproxy"
    haproxy_stats_port: int = 9480
    autoscale_interval_s: float = 10.0
    kvm_probe: bool = True

    @property
    def db_path(self) -> Path:
        return self.state_dir / "state.db"

    def own_ports(self) -> dict[int, str]:
        """TCP ports the daemon and its children listen on (port -> who), so a load-balancer
        frontend cannot take one: HAProxy would fail to bind, or steal the port first."""
        ports: dict[int, str] = {}
        if self.exporter_port:
            ports[self.exporter_port] = "the daemon's metrics exporter (exporter_port)"
        if self.prometheus_url is None and self.prometheus_port:
            ports[self.prometheus_port] = "the daemon's Prometheus (prometheus_port)"
        if self.haproxy_enabled and self.haproxy_stats_port:
            ports[self.haproxy_stats_port] = "HAProxy's stats listener (haproxy_stats_port)"
        if self.api_tcp:
            ports[api_tcp_port(self.api_tcp)] = "the daemon's TCP API (api_tcp)"
        return ports


def api_tcp_port(value: str) -> int:
    """The port of ``api_tcp`` ("HOST:PORT"); InvalidSpec if it is not one."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InvalidSpec(f"api_tcp {value!r} must be HOST:PORT, e.g. 127.0.0.1:8470")
    return int(port)


def load_config(path: Path | None = None) -> DaemonConfig:
    """Read the TOML file; a missing default file means all defaults. Raises InvalidSpec."""
    target = path or DEFAULT_CONFIG_PATH
    if not target.exists():
        if path is not None:
            raise InvalidSpec(f"configuration file {target} does not exist")
        return DaemonConfig()
    try:
        data = tomllib.loads(target.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InvalidSpec(f"configuration file {target} is not valid TOML: {exc}") from None
    return config_from_dict(data)


def _check_type(key: str, value: Any, default: Any) -> None:
    """A value must have its default's type (a whole number is a fine float); durations and
    counts are never negative."""
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, int | float):
        ok = isinstance(value, int | float) and (isinstance(value, int) or isinstance(default, float))
        if ok and value < 0:
            raise InvalidSpec(f"configuration key {key!r} must not be negative, not {value!r}")
    elif isinstance(default, str | Path) or default is None:
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        raise InvalidSpec(f"configuration key {key!r} has the wrong type: {value!r}")


def config_from_dict(data: dict[str, Any]) -> DaemonConfig:
    cfg = DaemonConfig()
    known = set(cfg.__dataclass_fields__)
    for key, value in data.items():
        if key == "hosts":
            continue
        if key not in known:
            raise InvalidSpec(f"unknown configuration key {key!r}")
        current = getattr(cfg, key)
        _check_type(key, value, current)
        setattr(cfg, key, Path(value) if isinstance(current, Path) else value)
    if "hosts" in data:
        hosts = []
        for entry in data["hosts"]:
            try:
                host = HostConfig(**entry)
            except TypeError as exc:
                raise InvalidSpec(f"bad [[hosts]] entry {entry!r}: {exc}") from None
            validate_name(host.name, "host name")
            check_config_host_uri(host.uri, f"uri of [[hosts]] {host.name!r}")
            hosts.append(host)
        if not hosts:
            raise InvalidSpec("at least one [[hosts]] entry is needed")
        if len({h.name for h in hosts}) != len(hosts):
            raise InvalidSpec("host names in [[hosts]] must be unique")
        cfg.hosts = hosts
    if cfg.api_tcp and not cfg.api_token:
        raise InvalidSpec("api_tcp needs api_token: the TCP API is never served without a token")
    if cfg.api_tcp:
        api_tcp_port(cfg.api_tcp)
    return cfg
