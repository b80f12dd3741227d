"""The reconciler's decisions, with the real store, inventory and provisioner over recording fake
hosts (tests/unit/fakehost.py): what it writes, what it asks libvirt for, and what it leaves alone.

The cases pin the promise that the control plane never destroys the data plane: a host that does
not answer keeps its guests and records, a busy host is not a dead one, orphans wait for a grace
period, a stale observation never overwrites newer intent, and a converged set costs no work.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pycdlib
import pytest

from localvmss.config import DaemonConfig, HostConfig
from localvmss.errors import HostBusy, VirtError
from localvmss.inventory import Inventory
from localvmss.model import PowerState, ProvisioningState
from localvmss.provision import Provisioner
from localvmss.reconciler import Reconciler, needs_work
from localvmss.spec import parse_scale_set_body
from localvmss.store import InstanceRow, Store
from localvmss.virt.domainxml import InstanceDomain, Ownership, build_domain_xml
from localvmss.virt.host import OwnedDomain
from tests.unit.fakehost import BULK_CALLS, FakeDomain, FakeHost

GRACE = 20.0
ORPHAN_GRACE = 30.0


@dataclass
class Clock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingBalancer:
    """Records what the reconciler asks of the load balancer; ``on_drain`` lets a test act
    while a drain is under way (as an API request would)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.on_drain: Any = None

    def sync(self, scale_set: str, spec: Any, instances: list[InstanceRow]) -> None:
        self.calls.append(("sync", scale_set))

    def drain(self, scale_set: str, instance_id: int, timeout_s: float) -> None:
        self.calls.append(("drain", instance_id))
        if self.on_drain is not None:
            self.on_drain(instance_id)

    def drain_and_remove(self, scale_set: str, instance_id: int, timeout_s: float) -> None:
        self.calls.append(("remove", instance_id))

    def remove_set(self, scale_set: str) -> None:
        self.calls.append(("remove_set", scale_set))


@dataclass
class Env:
    store: Store
    inv: Inventory
    rec: Reconciler
    hosts: dict[str, FakeHost]
    clock: Clock
    balancer: RecordingBalancer

    def converge(
        self, passes: int = 1, guests_answer: bool = True, serving: Callable[[InstanceRow], bool] | None = None
    ) -> None:
        """Passes, each followed by its workers; guests that run answer their health probe
        (recorded as the health monitor records it, so nothing is sent on a network), those
        ``serving`` says no of excepted."""
        for _ in range(passes):
            self.rec.pass_once()
            deadline = time.monotonic() + 10
            while not self.rec.idle():
                assert time.monotonic() < deadline, "workers did not finish"
                time.sleep(0.005)
            if guests_answer:
                self.probe_running_guests(serving)

    def probe_running_guests(self, serving: Callable[[InstanceRow], bool] | None = None) -> None:
        for inst in self.store.instances():
            host = self.hosts[inst.host]
            dom = host.domains.get(inst.domain_name)
            if not host.answering or dom is None or dom.state is not PowerState.RUNNING:
                continue
            if serving is not None and not serving(inst):
                continue
            if inst.provisioning_state in (ProvisioningState.CREATING.value, ProvisioningState.UPDATING.value):
                self.store.record_status(
                    inst.scale_set,
                    inst.instance_id,
                    inst.generation,
                    provisioning_state=ProvisioningState.SUCCEEDED.value,
                    health="healthy",
                    ready_at=self.clock(),
                )

    def create_set(self, name: str, capacity: int, fault_domains: int = 1, **props: Any) -> None:
        body = {
            "sku": {"name": "Standard_B1ls", "capacity": capacity},
            "properties": {
                "orchestrationMode": "Uniform",
                "platformFaultDomainCount": fault_domains,
                "virtualMachineProfile": {"storageProfile": {"imageReference": {"id": "base"}}, "osProfile": {}},
                **props,
            },
        }
        spec, cap = parse_scale_set_body(name, body, {"base"})
        self.store.insert_scale_set(name, spec.mode.value, spec.model_dump(mode="json"), cap, "Creating")

    def instances(self, name: str) -> list[InstanceRow]:
        return self.store.instances(name)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from make_env(tmp_path)


def make_env(tmp_path: Path, static_addresses: dict[str, str] | None = None) -> Iterator[Env]:
    """Two fake hosts h1 and h2 (198.18.1.0/24 and 198.18.2.0/24, DHCP .10-.250), ``static_addresses``
    per host name."""
    image = tmp_path / "image"
    image.mkdir()
    files = {"disk.qcow2": b"qcow2-base", "vmlinux": b"kernel", "initrd.img": b"initrd"}
    for file, data in files.items():
        (image / file).write_bytes(data)
    manifest = {
        "disk": "disk.qcow2",
        "format": "qcow2",
        "kernel": "vmlinux",
        "initrd": "initrd.img",
        "cmdline": "console=ttyS0",
        "files": {f: hashlib.sha256(d).hexdigest() for f, d in files.items()},
    }
    (image / "image.json").write_text(json.dumps(manifest))
    cfg = DaemonConfig(
        state_dir=tmp_path / "state",
        hosts=[
            HostConfig(name=name, zone=None, static_addresses=(static_addresses or {}).get(name))
            for name in ("h1", "h2")
        ],
        kvm_probe=False,
        reconcile_interval_s=2.0,
        shutdown_timeout_s=60.0,  # fake guests obey the power button at once
    )
    store = Store(tmp_path / "state.db")
    store.put_image("base", manifest, str(image))
    inv = Inventory(cfg, store)
    hosts = {name: FakeHost(name) for name in ("h1", "h2")}
    for name, fake in hosts.items():
        fake.network = (f"198.18.{name[1]}.1", "255.255.255.0", f"198.18.{name[1]}.10", f"198.18.{name[1]}.250")
        inv.hosts[name] = fake  # type: ignore[assignment]
    inv.prepare_all()
    clock = Clock()
    balancer = RecordingBalancer()
    rec = Reconciler(
        cfg,
        store,
        inv,
        Provisioner(cfg, inv),
        balancer,
        host_lost_grace_s=GRACE,
        orphan_grace_s=ORPHAN_GRACE,
        clock=clock,
    )
    e = Env(store, inv, rec, hosts, clock, balancer)
    try:
        yield e
    finally:
        rec.stop(timeout_s=1)
        store.close()


def running(host: FakeHost) -> set[str]:
    return {n for n, d in host.domains.items() if d.state is PowerState.RUNNING}


def all_running(env: Env) -> set[str]:
    return running(env.hosts["h1"]) | running(env.hosts["h2"])


# -- create, steady state, delete ---------------------------------------------------------------


def seed_file(host: FakeHost, inst: InstanceRow, name: str) -> bytes | None:
    """A file of the instance's NoCloud seed as uploaded (None: not in it)."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(host.volumes[f"{inst.domain_name}-seed.iso"]))
    try:
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
        return out.getvalue()
    except pycdlib.pycdlibexception.PyCdlibInvalidInput:
        return None
    finally:
        iso.close()


@pytest.fixture
def static_env(tmp_path: Path) -> Iterator[Env]:
    """h1 hands out 198.18.1.2-198.18.1.9 statically; h2 reserves in its DHCP range."""
    yield from make_env(tmp_path, {"h1": "198.18.1.2-198.18.1.9"})


def test_a_host_with_static_addresses_tells_the_seed_and_never_touches_the_network(static_env: Env) -> None:
    env = static_env
    env.create_set("web", 2, fault_domains=2)
    env.converge(2)
    by_host = {i.host: i for i in env.instances("web")}
    static, dhcp = by_host["h1"], by_host["h2"]
    assert static.ip == "198.18.1.2" and dhcp.ip == "198.18.2.10"
    h1, h2 = env.hosts["h1"], env.hosts["h2"]
    assert not [c for c in h1.calls if c[0] in ("reserve_address", "release_address")]
    assert h1.reservations == [] and h2.reservations == [(dhcp.mac, dhcp.ip)]
    config = seed_file(h1, static, "network-config")
    assert config is not None and b"- '198.18.1.2/24'" in config and b"gateway4: '198.18.1.1'" in config
    assert seed_file(h2, dhcp, "network-config") is None, "a DHCP host's guest asks DHCP"

    env.store.update_scale_set("web", capacity=0)
    env.converge(2)
    assert env.instances("web") == [] and h2.reservations == []
    assert not [c for c in h1.calls if c[0] in ("reserve_address", "release_address")]


def test_a_reservation_made_before_the_host_had_static_addresses_is_still_released(static_env: Env) -> None:
    env = static_env
    h1 = env.hosts["h1"]
    env.create_set("web", 1)
    env.converge(2)
    (inst,) = env.instances("web")
    h1.reservations.append((inst.mac, inst.ip))  # as if made while h1 still reserved addresses
    env.converge(1)  # the pass reads the network's entries
    env.store.update_scale_set("web", capacity=0)
    env.converge(2)
    assert h1.reservations == [] and ("release_address", (inst.mac,)) in h1.calls


def test_a_static_range_the_network_cannot_hold_makes_the_host_unavailable(tmp_path: Path) -> None:
    made = make_env(tmp_path, {"h1": "198.18.1.5-198.18.1.20"})
    env = next(made)
    try:
        (row,) = [h for h in env.store.hosts() if h.name == "h1"]
        assert not row.available and "overlap its DHCP range 198.18.1.10-198.18.1.250" in row.message
        assert [h.available for h in env.store.hosts() if h.name == "h2"] == [True]
    finally:
        made.close()


def test_create_defines_starts_and_reserves_each_instance(env: Env) -> None:
    env.create_set("web", 2, fault_domains=2)
    env.converge(2)
    insts = env.instances("web")
    assert [i.instance_id for i in insts] == [0, 1]
    assert {i.host for i in insts} == {"h1", "h2"}, "two fault domains land on two hosts"
    assert all(i.provisioning_state == ProvisioningState.SUCCEEDED.value for i in insts)
    assert all_running(env) == {"lvmss-web-0", "lvmss-web-1"}
    for inst in insts:
        host = env.hosts[inst.host]
        assert (inst.mac, inst.ip) in host.reservations
        assert {f"lvmss-web-{inst.instance_id}-os.qcow2", f"lvmss-web-{inst.instance_id}-seed.iso"} <= set(host.volumes)


def test_a_converged_set_costs_no_per_instance_call_and_no_worker(env: Env) -> None:
    env.create_set("web", 3)
    env.converge(3)
    for host in env.hosts.values():
        host.clear_calls()
    env.rec._wake.clear()
    report = env.rec.pass_once()
    assert report.submitted == 0
    for host in env.hosts.values():
        assert set(host.verbs()) <= BULK_CALLS, f"{host.name}: {host.verbs()}"
    assert not env.rec._wake.is_set(), "a pass with nothing to do must not wake the loop again"


@pytest.mark.parametrize(
    ("state", "desired", "observed", "pending", "expected"),
    [
        ("Succeeded", "running", PowerState.RUNNING, False, False),
        ("Succeeded", "running", PowerState.STOPPED, False, True),  # died behind our back: start it
        ("Succeeded", "running", None, False, True),  # domain gone: define it again
        ("Succeeded", "stopped", PowerState.STOPPED, False, False),
        ("Succeeded", "stopped", PowerState.RUNNING, False, True),  # still shutting down
        ("Succeeded", "deallocated", None, False, False),
        ("Succeeded", "deallocated", PowerState.STOPPED, False, True),
        ("Creating", "running", PowerState.RUNNING, False, True),  # boot timeout is watched
        ("Deleting", "running", PowerState.RUNNING, False, True),
        ("Succeeded", "running", PowerState.RUNNING, True, True),  # a reimage is asked for
        ("Failed", "running", PowerState.RUNNING, False, False),
        ("Succeeded", "stopped", PowerState.STOPPING, False, True),  # libvirt's "in shutdown"
    ],
)
def test_needs_work(state: str, desired: str, observed: PowerState | None, pending: bool, expected: bool) -> None:
    inst = InstanceRow(
        scale_set="web",
        instance_id=0,
        host="h1",
        fault_domain=0,
        update_domain=0,
        mac="52:54:00:00:00:01",
        ip="198.18.0.10",
        model_version=1,
        desired_power=desired,
        provisioning_state=state,
        created_at=0.0,
        reimage_generation=1 if pending else 0,
    )
    domains = {} if observed is None else {"lvmss-web-0": OwnedDomain("lvmss-web-0", Ownership("web", 0, 1), observed)}
    assert needs_work(inst, domains) is expected
    assert needs_work(inst, None) is True, "an instance whose host was not observed is looked at"
    assert needs_work(inst, domains, shutdown_asked=True) is True, "a guest asked to power off is seen off"


def test_a_graceful_stop_is_seen_through_when_the_guest_is_off_by_the_next_look(env: Env) -> None:
    """The guest stays "in shutdown" for a while, then is off before any worker looks again:
    the stop still ends with its outcome logged and nothing left pending."""
    env.create_set("web", 1)
    env.converge(2)
    inst = env.instances("web")[0]
    env.hosts[inst.host].shutdown_lingers = 2
    _ask(env, "powerOff", inst.instance_id)
    env.converge(5)
    said = [a.message for a in env.store.activity("web")]
    assert any(m.startswith("instance 0 stopped: the guest shut down in") for m in said), said
    assert not env.rec.prov.shutdown_pending(env.store.instance("web", inst.instance_id))


def test_scale_in_deletes_objects_then_the_record(env: Env) -> None:
    env.create_set("web", 3)
    env.converge(2)
    env.store.update_scale_set("web", capacity=1)
    env.converge(3)
    assert [i.instance_id for i in env.instances("web")] == [0]
    assert all_running(env) == {"lvmss-web-0"}
    assert ("remove", 2) in env.balancer.calls and ("remove", 1) in env.balancer.calls
    leftovers = [v for h in env.hosts.values() for v in h.volumes if v.startswith(("lvmss-web-1", "lvmss-web-2"))]
    assert leftovers == []


# -- unreachable is not gone; busy is not down -----------------------------------------------------


def test_the_surplus_after_a_lost_host_goes_failing_instances_first(env: Env) -> None:
    """Its guest died with the host and does not serve when the host is back (health unknown):
    the loop's own surplus removes it, not the healthy replacement, whatever the policy's order."""
    env.create_set("web", 2, fault_domains=2)
    env.converge(2)
    h2 = env.hosts["h2"]
    (dead,) = [i for i in env.instances("web") if i.host == "h2"]
    h2.answering = False
    env.converge(1)
    env.clock.advance(GRACE * 1.5)
    env.converge(2)
    assert len(env.instances("web")) == 3
    h2.answering = True
    env.converge(1, guests_answer=False)
    inst = env.store.instance("web", dead.instance_id)
    env.store.record_status("web", inst.instance_id, inst.generation, health="unknown")
    env.clock.advance(GRACE)
    env.converge(3, guests_answer=False)
    final = {i.instance_id for i in env.instances("web")}
    assert final == {0, 1, 2} - {dead.instance_id}, "the instance that does not serve went, the replacement stayed"


def test_unreachable_host_keeps_its_guests_and_records_then_surplus_is_scaled_in(env: Env) -> None:
    env.create_set("web", 2, fault_domains=2)
    env.converge(2)
    before = {(i.instance_id, i.host, i.ip, i.mac) for i in env.instances("web")}
    h2 = env.hosts["h2"]
    guest = next(iter(running(h2)))
    h2.answering = False

    env.converge(1)
    env.clock.advance(GRACE / 2)
    env.converge(1)
    assert {(i.instance_id, i.host, i.ip, i.mac) for i in env.instances("web")} == before, "inside the grace"

    env.clock.advance(GRACE)
    env.converge(2)
    after = env.instances("web")
    assert before <= {(i.instance_id, i.host, i.ip, i.mac) for i in after}, "no record lost"
    replacements = [i for i in after if i.instance_id >= 2]
    assert len(replacements) == 1 and replacements[0].host == "h1", "capacity held on the host that answers"

    h2.answering = True
    env.converge(2)
    assert len(env.instances("web")) == 3, "the returned guests get a grace to show their health"
    env.clock.advance(GRACE)
    env.converge(3)
    final = env.instances("web")
    assert len(final) == 2, "the surplus is scaled in once the host answers again"
    assert {i.instance_id for i in final} == {0, 1}, "Default policy: the replacement in the fuller fault domain"
    assert guest in running(h2), "the guest of the host that came back was never destroyed"
    assert not [v for v, _ in h2.calls if v in ("destroy", "undefine", "delete_volume", "release_address")]
    log = " | ".join(a.message for a in env.store.activity("web"))
    assert "host h2 does not answer" in log and "creating replacements" in log and "answers again" in log


def test_flexible_vms_on_an_unreachable_host_are_kept_without_replacement(env: Env) -> None:
    env.create_set("web", 1, fault_domains=1)
    env.converge(2)
    host = env.instances("web")[0].host
    env.hosts[host].answering = False
    env.store.update_scale_set("web", mode="Flexible")
    env.clock.advance(GRACE * 2)
    env.converge(2)
    assert [i.instance_id for i in env.instances("web")] == [0]


@pytest.mark.parametrize("busy_verb", ["volume_names", "owned_domains", "network_layout", "ensure_pool"])
def test_a_busy_host_stays_available_and_loses_nothing(env: Env, busy_verb: str) -> None:
    env.create_set("web", 2, fault_domains=2)
    env.converge(2)
    before = {(i.instance_id, i.host, i.provisioning_state) for i in env.instances("web")}
    env.hosts["h2"].busy.add(busy_verb)
    for _ in range(4):
        env.clock.advance(GRACE)
        env.converge(1)
    assert {h.name: h.available for h in env.store.hosts()} == {"h1": True, "h2": True}
    assert {(i.instance_id, i.host, i.provisioning_state) for i in env.instances("web")} == before
    assert len(all_running(env)) == 2


def test_a_busy_host_being_prepared_again_stays_available(env: Env) -> None:
    env.create_set("web", 1)
    env.converge(2)
    env.hosts["h1"].answering = False
    env.converge(1)
    env.hosts["h1"].answering = True
    env.hosts["h1"].busy.add("ensure_pool")
    env.converge(1)
    assert {h.name: h.available for h in env.store.hosts()}["h1"] is True


# -- orphans -------------------------------------------------------------------------------------


def _orphan_xml(name: str, set_name: str, iid: int) -> str:
    return build_domain_xml(
        InstanceDomain(
            name=name,
            domain_type="qemu",
            vcpus=1,
            memory_mib=256,
            pool="lvmss-pool",
            os_volume=f"{name}-os.qcow2",
            seed_volume=f"{name}-seed.iso",
            network="default",
            mac="52:54:00:12:00:63",
            ownership=Ownership(set_name, iid, 1),
        )
    )


def test_orphans_wait_for_the_grace_period_seen_in_every_pass(env: Env) -> None:
    h1 = env.hosts["h1"]
    h1.domains["lvmss-gone-7"] = FakeDomain(_orphan_xml("lvmss-gone-7", "gone", 7), PowerState.RUNNING)
    h1.volumes["lvmss-gone-7-os.qcow2"] = b"x"
    h1.volumes["lvmss-gone-8-seed.iso"] = b"x"
    env.converge(1)
    env.clock.advance(ORPHAN_GRACE - 1)
    env.converge(1)
    assert "lvmss-gone-7" in h1.domains and "lvmss-gone-8-seed.iso" in h1.volumes, "inside the grace"

    # One pass in which the host is not observed (busy): the count starts again.
    h1.busy.add("owned_domains")
    env.converge(1)
    h1.busy.clear()
    env.clock.advance(2)
    env.converge(1)
    assert "lvmss-gone-7" in h1.domains

    env.clock.advance(ORPHAN_GRACE)
    env.converge(2)
    assert "lvmss-gone-7" not in h1.domains
    assert "lvmss-gone-8-seed.iso" not in h1.volumes
    assert "lvmss-gone-7-os.qcow2" in h1.volumes, "a volume whose domain existed is in use until it is gone"
    env.clock.advance(ORPHAN_GRACE)
    env.converge(1)
    assert "lvmss-gone-7-os.qcow2" not in h1.volumes


def test_objects_that_do_not_match_our_naming_exactly_are_never_touched(env: Env) -> None:
    h1 = env.hosts["h1"]
    for vol in ("lvmss-x-1-os.qcow2\n", "lvmss-x-1-os.qcow2.bak", "other-x-1-os.qcow2", "lvmss-img-base-1-disk.qcow2"):
        h1.volumes[vol] = b"x"
    env.converge(1)
    env.clock.advance(ORPHAN_GRACE * 3)
    env.converge(2)
    assert {"lvmss-x-1-os.qcow2\n", "lvmss-x-1-os.qcow2.bak", "other-x-1-os.qcow2"} <= set(h1.volumes)


def test_a_host_that_comes_back_does_not_lose_running_orphans_at_once(env: Env) -> None:
    h2 = env.hosts["h2"]
    h2.answering = False
    env.converge(1)
    h2.domains["lvmss-old-3"] = FakeDomain(_orphan_xml("lvmss-old-3", "old", 3), PowerState.RUNNING)
    h2.answering = True
    env.converge(2)
    assert "lvmss-old-3" in h2.domains


# -- stale snapshots, backoff ---------------------------------------------------------------------


def test_a_delete_during_a_reimage_drain_is_not_overwritten(env: Env) -> None:
    env.create_set("web", 1)
    env.converge(2)
    inst = env.instances("web")[0]
    env.store.update_instance("web", inst.instance_id, reimage_generation=inst.reimage_generation + 1)

    def delete_meanwhile(iid: int) -> None:  # what delete-instances writes, during the drain
        env.store.update_instance("web", iid, provisioning_state=ProvisioningState.DELETING.value)
        env.store.update_scale_set("web", capacity=0)
        env.balancer.on_drain = None

    env.balancer.on_drain = delete_meanwhile
    env.converge(1)
    after = env.store.instance("web", inst.instance_id)
    assert after.provisioning_state == ProvisioningState.DELETING.value, "the newer intent stands"
    env.converge(2)
    assert env.instances("web") == []


def test_a_failing_instance_backs_off(env: Env) -> None:
    env.create_set("web", 1)
    env.converge(1)
    host = env.hosts[env.instances("web")[0].host]
    host.failing["define_domain"] = VirtError("defining a domain failed: boom")
    host.domains.clear()  # gone behind our back: the next pass defines it again, and fails
    env.converge(1)
    tries = host.verbs().count("define_domain")
    for _ in range(3):
        env.converge(1)  # same moment: still backing off
    assert host.verbs().count("define_domain") == tries
    env.clock.advance(env.rec.cfg.reconcile_interval_s + 0.1)
    env.converge(1)
    assert host.verbs().count("define_domain") == tries + 1
    env.converge(1)
    assert host.verbs().count("define_domain") == tries + 1, "the second delay is longer"
    assert "boom" in env.instances("web")[0].message
    host.failing.clear()
    env.clock.advance(60)
    env.converge(2)
    assert env.instances("web")[0].provisioning_state == ProvisioningState.SUCCEEDED.value


def test_a_partial_seed_is_made_again(env: Env) -> None:
    env.create_set("web", 1)
    env.converge(1)
    inst = env.instances("web")[0]
    seed = f"lvmss-web-{inst.instance_id}-seed.iso"
    host = env.hosts[inst.host]
    # A crash mid-upload: the volume exists, its upload never finished.
    env.store.forget_upload(inst.host, seed)
    host.volumes[seed] = b"half"
    host.domains.clear()
    env.converge(2)
    assert host.volumes[seed] != b"half"
    assert env.store.upload_done(inst.host, seed) is not None


def test_no_libvirt_call_is_made_while_the_store_is_locked(env: Env) -> None:
    """One slow host must not freeze every API call: address allocation inside the store's
    transaction reads the inventory's copy of the reservations, never libvirt."""
    under_lock: list[str] = []

    def check(verb: str) -> None:
        if env.store._lock._is_owned():  # type: ignore[attr-defined]
            under_lock.append(verb)

    for host in env.hosts.values():
        host.on_call = check
    env.create_set("web", 4, fault_domains=2)
    env.converge(3)
    env.store.update_scale_set("web", capacity=1)
    env.converge(3)
    assert len(env.instances("web")) == 1
    assert under_lock == []


def test_allocation_avoids_addresses_reserved_in_the_network_without_a_record(env: Env) -> None:
    h1 = env.hosts["h1"]
    h1.reservations.append(("52:54:00:99:99:99", "198.18.1.10"))  # someone else's entry
    env.inv.refresh_reservations("h1")
    env.create_set("web", 1)
    env.converge(1)
    assert env.instances("web")[0].ip == "198.18.1.11"


@pytest.mark.parametrize(("content", "reuploaded"), [(b"qcow2-base", False), (b"qcow2-ba", True), (b"", True)])
def test_an_image_volume_without_an_upload_record_is_verified_before_use(
    env: Env, content: bytes, reuploaded: bool
) -> None:
    """A crash mid-upload leaves a full-size, partly written volume: it is used only if its
    content matches the manifest's checksum, else uploaded again."""
    h1 = env.hosts["h1"]
    disk = next(v for v in h1.volumes if v.endswith("-disk.qcow2"))
    env.store.forget_upload("h1", disk)
    h1.volumes[disk] = content
    h1.clear_calls()
    manifest, source = env.inv.image("base")
    env.inv.ensure_image("h1", "base", manifest, source)
    assert h1.volumes[disk] == b"qcow2-base"
    assert ("upload_file" in h1.verbs()) is reuploaded
    assert env.store.upload_done("h1", disk) == manifest["files"]["disk.qcow2"]


def test_a_new_instance_looks_at_its_domain_once_and_at_the_image_volumes_not_at_all(env: Env) -> None:
    """The image's volumes were found whole when the host was prepared: making an instance
    asks libvirt nothing about them, and its domain is looked at once before it is defined."""
    env.create_set("web", 1)
    for host in env.hosts.values():
        host.clear_calls()
    env.converge(1)
    host = next(h for h in env.hosts.values() if h.domains)
    name = next(iter(host.domains))
    per_instance = [(verb, args) for verb, args in host.calls if verb not in BULK_CALLS]
    assert [verb for verb, args in per_instance if args and args[0] == name] == ["power_state", "start"]
    assert not [verb for verb, _ in per_instance if verb in ("volume_path", "volume_exists", "domain_exists")]
    assert [verb for verb, _ in per_instance].count("define_domain") == 1


@pytest.mark.parametrize(
    ("behind_our_back", "looked_again"),
    [
        (None, False),  # nothing happened to the volumes: no look
        ("listed", True),  # a pass's listing of the pool lacks the disk: looked at (and uploaded) again
        ("overlay", True),  # a worker found the base gone: the next run looks again
    ],
)
def test_image_volumes_known_whole_are_looked_at_again_once_gone(
    env: Env, behind_our_back: str | None, looked_again: bool
) -> None:
    env.create_set("web", 1)
    env.converge(2)
    h1 = env.hosts["h1"]
    disk = next(v for v in h1.volumes if v.endswith("-disk.qcow2"))
    if behind_our_back == "listed":
        del h1.volumes[disk]
        env.inv.volumes_listed("h1", sorted(h1.volumes))
    elif behind_our_back == "overlay":
        env.inv.forget_image_volumes("h1")  # what Provisioner does when create_overlay finds no base
    h1.clear_calls()
    env.inv.ready_image("h1", "base")
    assert ("volume_path" in h1.verbs()) is looked_again
    assert disk in h1.volumes


def test_a_base_volume_gone_under_a_worker_is_uploaded_again_on_its_next_run(env: Env) -> None:
    env.create_set("web", 1)
    env.converge(2)
    h1 = env.hosts["h1"]
    disk = next(v for v in h1.volumes if v.endswith("-disk.qcow2"))
    del h1.volumes[disk]  # behind our back, between two passes
    inst = env.instances("web")[0]
    env.hosts[inst.host].volumes.pop(f"{inst.domain_name}-os.qcow2", None)
    env.hosts[inst.host].domains.pop(inst.domain_name)
    env.clock.advance(600)  # past any backoff
    env.converge(1)  # the worker's overlay finds no base: fails, and the volumes are looked at again
    env.clock.advance(600)
    env.converge(2)
    assert disk in h1.volumes
    assert inst.domain_name in env.hosts[inst.host].domains


def _ask(env: Env, action: str, iid: int, **kw: Any) -> None:
    """What the service writes for an action (the one lifecycle table decides the changes)."""
    from localvmss import lifecycle

    inst = env.store.instance("web", iid)
    changes = lifecycle.request(
        lifecycle.find_action(action),
        inst,
        model_version=env.store.scale_set("web").model_version,
        now=env.clock(),
        **kw,
    )
    env.store.update_instance("web", iid, **changes)


@pytest.mark.parametrize(
    ("actions", "power", "defined", "verbs"),
    [
        (["powerOff"], PowerState.STOPPED, True, {"shutdown"}),
        (["powerOff", "start"], PowerState.RUNNING, True, {"shutdown", "start"}),
        (["deallocate"], None, False, {"shutdown", "undefine"}),
        (["deallocate", "start"], PowerState.RUNNING, True, {"define_domain", "start"}),
        (["restart"], PowerState.RUNNING, True, {"shutdown", "start"}),
        (["reimage"], PowerState.RUNNING, True, {"undefine", "delete_volume", "create_overlay", "define_domain"}),
    ],
)
def test_actions_reach_libvirt(
    env: Env, actions: list[str], power: PowerState | None, defined: bool, verbs: set[str]
) -> None:
    env.create_set("web", 1)
    env.converge(2)
    inst = env.instances("web")[0]
    host = env.hosts[inst.host]
    host.clear_calls()
    for action in actions:
        _ask(env, action, inst.instance_id)
        env.converge(3)
    after = env.store.instance("web", inst.instance_id)
    assert (inst.domain_name in host.domains) is defined
    if power is not None:
        assert host.domains[inst.domain_name].state is power
    assert verbs <= set(host.verbs()), host.verbs()
    assert after.provisioning_state == ProvisioningState.SUCCEEDED.value
    assert (after.applied_reimage, after.applied_restart) == (after.reimage_generation, after.restart_generation)
    assert (after.ip, after.mac) == (inst.ip, inst.mac), "an action keeps the instance's address"
    if "shutdown" in verbs and actions[0] != "reimage":
        assert ("drain", inst.instance_id) in env.balancer.calls, "out of rotation before the guest goes down"


def test_power_off_with_skip_shutdown_powers_off_at_once(env: Env) -> None:
    env.create_set("web", 1)
    env.converge(2)
    inst = env.instances("web")[0]
    host = env.hosts[inst.host]
    host.clear_calls()
    _ask(env, "powerOff", inst.instance_id, skip_shutdown=True)
    env.converge(2)
    assert "destroy" in host.verbs() and "shutdown" not in host.verbs()
    assert env.store.instance("web", inst.instance_id).skip_shutdown is False, "cleared once done"


def test_rolling_upgrade_goes_one_update_domain_at_a_time(env: Env) -> None:
    env.create_set(
        "web",
        4,
        fault_domains=2,
        upgradePolicy={
            "mode": "Rolling",
            "rollingUpgradePolicy": {"maxBatchInstancePercent": 50, "pauseTimeBetweenBatches": "PT0S"},
        },
    )
    env.converge(3)
    row = env.store.scale_set("web")
    env.store.update_scale_set("web", model_version=row.model_version + 1)
    env.rec.pass_once()  # plans the first batch only
    asked = {i.instance_id for i in env.instances("web") if i.reimage_generation > i.applied_reimage}
    domains = {i.update_domain for i in env.instances("web") if i.instance_id in asked}
    assert len(asked) == 2 and len(domains) == 1, "one update domain (half the set) per batch"
    deadline = time.monotonic() + 10
    while not env.rec.idle():
        assert time.monotonic() < deadline
        time.sleep(0.005)
    env.probe_running_guests()
    env.converge(6)
    assert all(i.model_version == row.model_version + 1 for i in env.instances("web")), "every batch done"
    assert all(i.reimage_generation == i.applied_reimage for i in env.instances("web"))
    log = [a.message for a in env.store.activity("web") if a.kind == "upgrade"]
    assert len(log) == 2, log


def test_redeploy_moves_the_instance_and_its_disk_to_another_host(env: Env) -> None:
    env.create_set("web", 1)
    env.converge(2)
    inst = env.instances("web")[0]
    old, new = env.hosts[inst.host], env.hosts["h2" if inst.host == "h1" else "h1"]
    disk = f"lvmss-web-{inst.instance_id}-os.qcow2"
    old.volumes[disk] = b"what the guest wrote"
    _ask(env, "redeploy", inst.instance_id)
    env.converge(4)
    after = env.store.instance("web", inst.instance_id)
    assert after.host == new.name and after.provisioning_state == ProvisioningState.SUCCEEDED.value
    assert (after.instance_id, after.nat_port, after.vm_name) == (inst.instance_id, inst.nat_port, inst.vm_name)
    assert after.ip.startswith(f"198.18.{new.name[1]}."), "an address of the new host's network"
    assert new.volumes[disk] == b"what the guest wrote", "the disk moved with it"
    assert running(new) == {inst.domain_name} and old.domains == {}
    assert not [v for v in old.volumes if v.startswith("lvmss-web-")]
    assert (inst.mac, inst.ip) not in old.reservations and (after.mac, after.ip) in new.reservations
    assert ("drain", inst.instance_id) in env.balancer.calls
    assert "shutdown" in old.verbs(), "a graceful shutdown before the move"
    assert any("redeployed from" in a.message for a in env.store.activity("web"))


def test_redeploy_copies_the_disk_only_once_qemu_is_gone(env: Env) -> None:
    """A guest "in shutdown" still has QEMU writing its disk: the copy waits until it is off,
    and the move is logged even if the old host's clean-up then fails."""
    env.create_set("web", 1)
    env.converge(2)
    inst = env.instances("web")[0]
    old = env.hosts[inst.host]
    old.shutdown_lingers = 3
    seen: list[PowerState] = []
    old.on_call = lambda verb: verb == "download_volume" and seen.append(old.domains[inst.domain_name].state)
    old.failing["undefine"] = HostBusy("undefining: busy")
    _ask(env, "redeploy", inst.instance_id)
    env.converge(6)
    assert seen == [PowerState.STOPPED], "copied once, from a guest that was off"
    after = env.store.instance("web", inst.instance_id)
    assert after.host != old.name and after.applied_redeploy == 1
    assert any(
        f"instance {inst.instance_id} redeployed from {old.name}" in a.message for a in env.store.activity("web")
    )


def test_redeploy_without_another_host_with_room_restarts_in_place(env: Env) -> None:
    env.create_set("web", 1)
    env.converge(2)
    inst = env.instances("web")[0]
    other = env.hosts["h2" if inst.host == "h1" else "h1"]
    other.answering = False
    env.converge(1)
    _ask(env, "redeploy", inst.instance_id)
    env.converge(3)
    after = env.store.instance("web", inst.instance_id)
    assert (after.host, after.ip, after.mac) == (inst.host, inst.ip, inst.mac)
    assert after.applied_redeploy == after.redeploy_generation == 1
    assert running(env.hosts[inst.host]) == {inst.domain_name}
    assert any("no other host of its zone has room" in a.message for a in env.store.activity("web"))


def test_what_a_redeploy_left_on_its_old_host_is_an_orphan_there(env: Env) -> None:
    """A crash between the move (one transaction) and the old host's clean-up."""
    env.create_set("web", 1)
    env.converge(2)
    inst = env.instances("web")[0]
    old = env.hosts[inst.host]
    leftover = dict(old.domains)
    _ask(env, "redeploy", inst.instance_id)
    env.converge(4)
    old.domains.update(leftover)  # as if the clean-up never ran
    old.volumes[f"lvmss-web-{inst.instance_id}-os.qcow2"] = b"old"
    env.converge(1)
    env.clock.advance(ORPHAN_GRACE)
    env.converge(2)
    env.clock.advance(ORPHAN_GRACE)
    env.converge(1)
    assert old.domains == {} and not [v for v in old.volumes if v.startswith("lvmss-web-")]
    assert env.store.instance("web", inst.instance_id).host != old.name
