"""A ``Service`` without libvirt, for request-validation tests: the real store (SQLite in a temp
directory) behind tiny recording stand-ins for the inventory and the reconciler, and the host's
ports as a table. ``snapshot`` reads back everything the store holds, so a test can say that a
refused request changed nothing."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localvmss.capacity import CapacityRule
from localvmss.config import DaemonConfig, HostConfig
from localvmss.errors import Conflict, InvalidSpec, NotFound
from localvmss.lb.spec import HostPorts
from localvmss.model import PowerState
from localvmss.service import Service
from localvmss.store import HostRow, InstanceRow, Store

IMAGE_MANIFEST = {"disk": "disk.qcow2", "format": "qcow2", "files": {}}
FREE_MEMORY = 64 << 30


@dataclass
class FakeCapacity:
    free_memory_bytes: int = FREE_MEMORY
    cpus: int = 8
    memory_bytes: int = FREE_MEMORY
    cells: tuple[()] = ()


@dataclass
class FakeLibvirtHost:
    """What the service asks a host for in views: nothing runs."""

    uri: str = "qemu+tcp://h1/system"

    def domain_exists(self, _name: str) -> bool:
        return False

    def power_state(self, _name: str) -> PowerState:
        return PowerState.STOPPED

    def owned_domains(self) -> list[Any]:
        return []

    def all_domain_stats(self) -> list[tuple[str, Any]]:
        return []


@dataclass
class FakeInventory:
    """The Inventory verbs the service calls; add_host and import_image only record."""

    store: Store
    hosts: dict[str, FakeLibvirtHost] = field(default_factory=lambda: {"h1": FakeLibvirtHost()})
    calls: list[tuple[str, Any]] = field(default_factory=list)
    configs: dict[str, HostConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, host in self.hosts.items():
            self.store.put_host(HostRow(name, host.uri, None, "qemu", "", True, ""))
            self.configs[name] = HostConfig(name=name, uri=host.uri, serial_log_read_dir=None)

    def available(self) -> list[str]:
        return list(self.hosts)

    def zone_of(self, _name: str) -> str | None:
        return None

    def capacity(self, _name: str) -> FakeCapacity:
        return FakeCapacity()

    def capacity_age(self, _name: str) -> float | None:
        return 0.0

    def unanswered_for(self, _name: str) -> float:
        return 0.0

    def domain_type(self, _name: str) -> str:
        return "qemu"

    def host(self, name: str) -> FakeLibvirtHost:
        if name not in self.hosts:
            raise NotFound(f"host {name!r} is not in the inventory")
        return self.hosts[name]

    def add_host(self, host_cfg: HostConfig) -> None:
        self.calls.append(("add_host", host_cfg))
        if host_cfg.name in self.hosts:
            raise Conflict(f"host {host_cfg.name!r} is already in the inventory")
        self.hosts[host_cfg.name] = FakeLibvirtHost(host_cfg.uri)
        self.configs[host_cfg.name] = host_cfg
        self.store.put_host(HostRow(host_cfg.name, host_cfg.uri, host_cfg.zone, "qemu", "", True, ""))

    def import_image(self, name: str, directory: Path, guest_metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        self.calls.append(("import_image", (name, directory)))
        return {}

    def import_disk(self, name: str, file: Path, guest_metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        """As the real one refuses a file that is not a disk: nothing here is one."""
        self.calls.append(("import_disk", (name, file)))
        raise InvalidSpec(f"{file} is not a qcow2 or raw disk image")

    def remove_host(self, name: str, in_use: bool) -> None:
        self.calls.append(("remove_host", (name, in_use)))
        if name not in self.hosts:
            raise NotFound(f"host {name!r} is not in the inventory")
        if in_use:
            raise Conflict(f"host {name!r} still holds instances; delete or move them first")
        del self.hosts[name]
        self.configs.pop(name, None)
        self.store.delete_host(name)


class FakeReconciler:
    """Counts wake-ups (the service's wake) and, as its allocator, places every new VM on h1."""

    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1

    def host_for(self, *_args: Any) -> str:
        return "h1"

    def new_instance_row(
        self,
        db: object,
        row: Any,
        spec: Any,
        iid: int,
        host: str,
        zone: str | None,
        fd: int,
        index: int,
        vm_name: str | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> InstanceRow:
        return instance_row(row.name, iid, host=host, fault_domain=fd, vm_name=vm_name, overrides=overrides or {})


class TablePorts:
    """HostPortReader with fixed answers: ephemeral range and listeners from the test."""

    def __init__(
        self,
        ephemeral: tuple[int, int] = (32768, 60999),
        listening: dict[int, str] | None = None,
        reserved: frozenset[int] = frozenset(),
    ) -> None:
        self.ephemeral = ephemeral
        self.listening = listening or {}
        self.reserved = reserved
        self.holders: dict[int, str] = {}

    def read(self, holders: dict[int, str]) -> HostPorts:
        self.holders = dict(holders)
        return HostPorts(dict(holders), self.ephemeral, self.reserved, dict(self.listening))


def instance_row(set_name: str, iid: int, **values: Any) -> InstanceRow:
    base: dict[str, Any] = {
        "scale_set": set_name,
        "instance_id": iid,
        "host": "h1",
        "fault_domain": 0,
        "update_domain": 0,
        "mac": f"52:54:00:00:00:{iid:02x}",
        "ip": f"198.18.1.{10 + iid}",
        "model_version": 1,
        "desired_power": "running",
        "provisioning_state": "Succeeded",
        "created_at": time.time(),
    }
    base.update(values)
    return InstanceRow(**base)


@dataclass
class Harness:
    service: Service
    store: Store
    inventory: FakeInventory
    reconciler: FakeReconciler
    ports: TablePorts


def make_service(tmp_path: Path, cfg: DaemonConfig | None = None, ports: TablePorts | None = None) -> Harness:
    store = Store(tmp_path / "state.db")
    store.put_image("base", IMAGE_MANIFEST, "/images/base")
    inventory = FakeInventory(store)
    reconciler = FakeReconciler()
    table = ports or TablePorts()
    cfg = cfg or DaemonConfig()
    service = Service(
        cfg,
        store,
        inventory,  # type: ignore[arg-type]
        wake=reconciler.wake,
        allocator=reconciler,  # type: ignore[arg-type]
        capacity=CapacityRule(cfg, store, inventory),  # type: ignore[arg-type]
        host_ports=table,
    )
    return Harness(service, store, inventory, reconciler, table)


class FakePrometheus:
    """Prometheus as the autoscaler asks it: every expression parses, no series has data."""

    def validate(self, _expr: str) -> None:
        return None

    def query_scalar(self, _expr: str, _at: Any = None) -> float | None:
        return None


def attach_autoscaler(h: Harness) -> Any:
    """The real Autoscaler on this service, over FakePrometheus (the daemon always has one)."""
    from localvmss.autoscaler import Autoscaler

    scaler = Autoscaler(h.store, "http://127.0.0.1:9", 10.0, h.reconciler.wake, capacity=h.service.capacity)
    scaler.client = FakePrometheus()  # type: ignore[assignment]
    h.service.autoscaler = scaler
    return scaler


def add_instances(store: Store, set_name: str, count: int, **values: Any) -> list[int]:
    """Instance records as the reconciler would have made them (ids from the set's counter)."""
    ids = []
    with store.transaction() as db:
        for _ in range(count):
            iid = store.allocate_instance_id(db, set_name)
            store.insert_instance(db, instance_row(set_name, iid, **values))
            ids.append(iid)
    return ids


def snapshot(store: Store) -> dict[str, Any]:
    """Everything the store holds, through its public reads."""
    sets = store.scale_sets()
    return {
        "sets": sets,
        "instances": store.instances(),
        "hosts": store.hosts(),
        "added_hosts": store.added_hosts(),
        "images": store.images(),
        "activity": {s.name: store.activity(s.name) for s in sets},
        "autoscale": {s.name: store.autoscale(s.name) for s in sets},
        "groups": store.resource_groups(),
    }


def uniform_body(capacity: int | None = 2, lb: dict[str, Any] | None = None, **profile: Any) -> dict[str, Any]:
    vmp: dict[str, Any] = {"storageProfile": {"imageReference": {"id": "base"}}, **profile}
    if lb is not None:
        vmp.setdefault("networkProfile", {})["loadBalancer"] = lb
    body: dict[str, Any] = {"properties": {"virtualMachineProfile": vmp}}
    if capacity is not None:
        body["sku"] = {"capacity": capacity}
    return body


def api_client(h: Harness) -> Any:
    """The REST API over this service, as a TCP client with the token."""
    from fastapi.testclient import TestClient

    from localvmss.api.app import create_app

    return TestClient(create_app(h.service, token="t"), headers={"Authorization": "Bearer t"})


class _Forwarding:
    """Stands for the service of the harness in use now (``SharedApi.client``)."""

    def __init__(self) -> None:
        self.target: Service | None = None

    def __getattr__(self, name: str) -> Any:
        if self.target is None:
            raise RuntimeError("SharedApi: no harness is in use")
        return getattr(self.target, name)


class SharedApi:
    """One REST app for many harnesses, each example still with a service and store of its own:
    building the app (its 255 routes) takes 0.3 s, more than most examples of a property test."""

    def __init__(self) -> None:
        self._service = _Forwarding()
        self._client: Any = None

    def client(self, h: Harness) -> Any:
        """The API over ``h``'s service, until the next call names another harness."""
        from fastapi.testclient import TestClient

        from localvmss.api.app import create_app

        self._service.target = h.service
        if self._client is None:
            app = create_app(self._service, token="t")  # type: ignore[arg-type]
            self._client = TestClient(app, headers={"Authorization": "Bearer t"})
        return self._client


def refused(resp: Any, status: int, words: str) -> str:
    """Assert an Azure-shaped, one-line refusal; returns its message."""
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert {"code", "message"} <= set(error) <= {"code", "message", "target", "details"}, error
    assert words in error["message"] and "\n" not in error["message"], error["message"]
    return str(error["message"])
