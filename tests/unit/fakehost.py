"""A recording stand-in for ``localvmss.virt.host.Host``, for controller unit tests.

It keeps domains, volumes and DHCP reservations in memory, answers the same verbs the real
``Host`` has (same names, same "already gone counts as done" rules, the same ``NotFound`` /
``HostBusy`` / ``HostUnavailable`` errors) and records every call, so a test can say both what the
controller decided and what it asked libvirt to do. It is used behind the real ``Inventory`` and
``Provisioner``: only the libvirt connection is replaced. Integration tests use real libvirt.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localvmss.errors import GuestAgentUnavailable, HostBusy, HostUnavailable, NotFound
from localvmss.model import OBJECT_PREFIX, PowerState
from localvmss.virt.domainxml import read_ownership
from localvmss.virt.host import HostCapacity, NumaCell, OwnedDomain

# Calls that read a whole host at once (one per pass), as opposed to per-instance work.
BULK_CALLS = {"ping", "owned_domains", "volume_names", "network_layout"}


@dataclass
class FakeDomain:
    xml: str
    state: PowerState = PowerState.STOPPED
    lingering: int = 0


@dataclass
class FakeHost:
    name: str
    uri: str = "test:///default"
    answering: bool = True
    busy: set[str] = field(default_factory=set)  # verbs that answer "busy" (e.g. {"volume_names"})
    failing: dict[str, Exception] = field(default_factory=dict)  # verb -> error to raise
    domains: dict[str, FakeDomain] = field(default_factory=dict)
    volumes: dict[str, bytes] = field(default_factory=dict)
    reservations: list[tuple[str, str]] = field(default_factory=list)
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    network: tuple[str, str, str, str] = ("198.18.0.1", "255.255.255.0", "198.18.0.10", "198.18.0.250")
    # Called on every verb; a test sets it to catch calls made while something is held.
    on_call: Any = None
    # How many looks a guest stays "in shutdown" (QEMU still running) after the ACPI button.
    shutdown_lingers: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def _enter(self, verb: str, *args: Any) -> None:
        with self._lock:
            self.calls.append((verb, args))
        if self.on_call is not None:
            self.on_call(verb)
        if not self.answering:
            raise HostUnavailable(f"host {self.name} does not answer")
        if verb in self.failing:
            raise self.failing[verb]
        if verb in self.busy:
            raise HostBusy(f"{verb} on host {self.name}: busy (pool has asynchronous jobs running)")

    def verbs(self) -> list[str]:
        with self._lock:
            return [v for v, _ in self.calls]

    def clear_calls(self) -> None:
        with self._lock:
            self.calls.clear()

    # -- connection
    def ping(self) -> bool:
        with self._lock:
            self.calls.append(("ping", ()))
        if self.on_call is not None:
            self.on_call("ping")
        return self.answering

    def close(self) -> None:
        pass

    def connect(self) -> None:
        self._enter("connect")

    def register_lifecycle_events(self, callback: Any) -> None:
        self._enter("register_lifecycle_events")

    def capacity(self) -> HostCapacity:
        self._enter("capacity")
        return HostCapacity(2, 4 << 30, 3 << 30, (NumaCell(0, (0, 1), 4 << 30),), ("qemu",))

    # -- storage
    def ensure_pool(self, pool: str, path: str) -> None:
        self._enter("ensure_pool", pool)

    def volume_exists(self, pool: str, name: str) -> bool:
        self._enter("volume_exists", name)
        return name in self.volumes

    def volume_path(self, pool: str, name: str) -> str:
        self._enter("volume_path", name)
        if name not in self.volumes:
            raise NotFound(f"volume {name} on host {self.name}")
        return f"/pool/{name}"

    def volume_names(self, pool: str, prefix: str = OBJECT_PREFIX, refresh: bool = False) -> list[str]:
        self._enter("volume_names")
        return sorted(n for n in self.volumes if n.startswith(prefix))

    def volume_sha256(self, pool: str, name: str, length: int) -> str:
        self._enter("volume_sha256", name)
        return hashlib.sha256(self.volumes.get(name, b"")[:length]).hexdigest()

    def download_volume(self, pool: str, name: str, path: str) -> int:
        self._enter("download_volume", name)
        if name not in self.volumes:
            raise NotFound(f"volume {name} on host {self.name}")
        Path(path).write_bytes(self.volumes[name])
        return len(self.volumes[name])

    def upload_file(self, pool: str, name: str, path: str, fmt: str) -> None:
        self._enter("upload_file", name)
        self.volumes[name] = Path(path).read_bytes()

    def upload_bytes(self, pool: str, name: str, data: bytes, fmt: str = "raw") -> None:
        self._enter("upload_bytes", name)
        self.volumes[name] = data

    def create_overlay(self, pool: str, name: str, base_volume: str) -> str:
        self._enter("create_overlay", name)
        if base_volume not in self.volumes:
            raise NotFound(f"volume {base_volume} on host {self.name}")
        self.volumes.setdefault(name, b"qcow2-overlay")
        return f"/pool/{name}"

    def delete_volume(self, pool: str, name: str) -> None:
        self._enter("delete_volume", name)
        self.volumes.pop(name, None)

    # -- network
    def network_layout(self, name: str) -> tuple[str, str, str, str, list[tuple[str, str]]]:
        self._enter("network_layout")
        return (*self.network, list(self.reservations))

    def reserve_address(self, network: str, mac: str, ip: str, hostname: str) -> None:
        self._enter("reserve_address", mac, ip)
        if (mac, ip) not in self.reservations:
            self.reservations.append((mac, ip))

    def release_address(self, network: str, mac: str) -> None:
        self._enter("release_address", mac)
        self.reservations = [(m, i) for m, i in self.reservations if m.lower() != mac.lower()]

    # -- domains
    def define_domain(self, xml: str) -> None:
        self._enter("define_domain")
        own = read_ownership(xml)
        assert own is not None, "every domain localvmss defines carries its ownership"
        import xml.etree.ElementTree as ET

        name = ET.fromstring(xml).findtext("name")
        assert name
        self.domains[name] = FakeDomain(xml)

    def domain_exists(self, name: str) -> bool:
        self._enter("domain_exists", name)
        return name in self.domains

    def domain_xml(self, name: str) -> str:
        self._enter("domain_xml", name)
        if name not in self.domains:
            raise NotFound(f"domain {name} on host {self.name}")
        return self.domains[name].xml

    def power_state(self, name: str) -> PowerState:
        self._enter("power_state", name)
        if name not in self.domains:
            raise NotFound(f"domain {name} on host {self.name}")
        return self._look(self.domains[name])

    @staticmethod
    def _look(dom: FakeDomain) -> PowerState:
        """A guest "in shutdown" is off after ``shutdown_lingers`` looks (of any kind)."""
        if dom.state is PowerState.STOPPING:
            dom.lingering -= 1
            if dom.lingering < 0:
                dom.state = PowerState.STOPPED
        return dom.state

    def start(self, name: str) -> None:
        self._enter("start", name)
        if name not in self.domains:
            raise NotFound(f"domain {name} on host {self.name}")
        self.domains[name].state = PowerState.RUNNING

    def sync_clock(self, name: str, timeout_s: float = 5.0) -> float:
        """The guest channel's clock command: a running guest's clock is set (no skew left)."""
        self._enter("sync_clock", name)
        dom = self.domains.get(name)
        if dom is None or dom.state is not PowerState.RUNNING:
            raise GuestAgentUnavailable(f"the guest of {name} is not running; nothing can answer")
        return 0.0

    def shutdown(self, name: str) -> None:
        self._enter("shutdown", name)
        dom = self.domains.get(name)
        if dom is not None and dom.state is PowerState.RUNNING:
            # A guest that obeys at once, or after ``shutdown_lingers`` more looks.
            dom.state = PowerState.STOPPING if self.shutdown_lingers else PowerState.STOPPED
            dom.lingering = self.shutdown_lingers

    def destroy(self, name: str) -> None:
        self._enter("destroy", name)
        if name in self.domains:
            self.domains[name].state = PowerState.STOPPED

    def undefine(self, name: str) -> None:
        self._enter("undefine", name)
        self.domains.pop(name, None)

    def owned_domains(self, prefix: str = OBJECT_PREFIX) -> list[OwnedDomain]:
        self._enter("owned_domains")
        out = []
        for name, dom in sorted(self.domains.items()):
            own = read_ownership(dom.xml)
            if name.startswith(prefix) and own is not None:
                out.append(OwnedDomain(name, own, self._look(dom)))
        return out

    def all_domain_stats(self) -> list[tuple[str, dict[str, Any]]]:
        self._enter("all_domain_stats")
        return []
