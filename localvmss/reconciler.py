"""The level-triggered reconcile loop: observe libvirt -> plan -> apply -> record.

Each pass compares the whole desired state (the store) with what libvirt reports and converges
them. API writes and libvirt events only wake the loop. Order matters for crash safety:
libvirt is observed *before* the store is read, and records are always written before libvirt
objects are made, so an object without a record is an orphan and is removed, and a record
without objects is simply made again. Per-instance work runs on a bounded worker pool so
independent boots proceed in parallel.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Protocol

from localvmss import planner
from localvmss.config import DaemonConfig
from localvmss.errors import HostUnavailable, LocalVMSSError, NotFound
from localvmss.inventory import Inventory
from localvmss.model import (
    OBJECT_PREFIX,
    FaultDomainMapping,
    OrchestrationMode,
    PowerState,
    ProvisioningState,
    UpgradeMode,
    update_domain_for,
)
from localvmss.provision import Provisioner
from localvmss.spec import ScaleSetSpec, check_iso_duration
from localvmss.store import InstanceRow, ScaleSetRow, Store
from localvmss.virt.domainxml import read_macs

log = logging.getLogger(__name__)

INSTANCE_VOLUME = re.compile(rf"^{re.escape(OBJECT_PREFIX)}(?P<set>[a-z0-9-]+)-(?P<id>\d+)-(os\.qcow2|seed\.iso)$")
HOST_LOST_GRACE_S = 20.0


class Balancer(Protocol):
    """What the reconciler needs of the load balancer (HAProxy, or nothing)."""

    def sync(self, scale_set: str, spec: ScaleSetSpec, instances: list[InstanceRow]) -> None: ...

    def drain_and_remove(self, scale_set: str, instance_id: int, timeout_s: float) -> None: ...

    def drain(self, scale_set: str, instance_id: int, timeout_s: float) -> None: ...

    def remove_set(self, scale_set: str) -> None: ...


class NoBalancer:
    def sync(self, scale_set: str, spec: ScaleSetSpec, instances: list[InstanceRow]) -> None:
        return None

    def drain_and_remove(self, scale_set: str, instance_id: int, timeout_s: float) -> None:
        return None

    def drain(self, scale_set: str, instance_id: int, timeout_s: float) -> None:
        return None

    def remove_set(self, scale_set: str) -> None:
        return None


@dataclass
class PassReport:
    """What one pass saw and did (for metrics and tests)."""

    duration_s: float = 0.0
    submitted: int = 0
    orphans_removed: int = 0
    errors: list[str] = field(default_factory=list)


class Reconciler:
    def __init__(
        self,
        cfg: DaemonConfig,
        store: Store,
        inventory: Inventory,
        provisioner: Provisioner,
        balancer: Balancer | None = None,
        on_action: object = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.inv = inventory
        self.prov = provisioner
        self.balancer: Balancer = balancer or NoBalancer()
        self._wake = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=cfg.max_parallel_boots, thread_name_prefix="converge")
        self._in_flight: dict[tuple[str, int | str], Future[None]] = {}
        self._lock = threading.Lock()
        self._host_down_since: dict[str, float] = {}
        self._batch_done: dict[str, float] = {}
        self.action_hook = on_action  # callable(kind, result) for metrics
        self.last_report = PassReport()

    # -- loop -------------------------------------------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.last_report = self.pass_once()
            except Exception:  # a pass must never kill the loop; the next one retries
                log.exception("reconcile pass failed")
            self._wake.wait(self.cfg.reconcile_interval_s)
            self._wake.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _record_action(self, kind: str, result: str) -> None:
        hook = self.action_hook
        if callable(hook):
            hook(kind, result)

    def _submit(self, key: tuple[str, int | str], fn: object, *args: object) -> bool:
        with self._lock:
            running = self._in_flight.get(key)
            if running is not None and not running.done():
                return False
            future = self._pool.submit(self._guarded, key, fn, *args)
            self._in_flight[key] = future
            return True

    def _guarded(self, key: tuple[str, int | str], fn: object, *args: object) -> None:
        try:
            fn(*args)  # type: ignore[operator]
        except LocalVMSSError as exc:
            log.warning("%s: %s", key, exc.message)
            self._record_action(getattr(fn, "__name__", "action"), "error")
            if isinstance(key[1], int):
                try:
                    self.store.update_instance(key[0], key[1], message=exc.message[:500])
                except LocalVMSSError:
                    pass
        except Exception:
            log.exception("%s failed", key)
            self._record_action(getattr(fn, "__name__", "action"), "error")
        finally:
            self.wake()

    def idle(self) -> bool:
        with self._lock:
            return all(f.done() for f in self._in_flight.values())

    # -- one pass ---------------------------------------------------------------------------
    def pass_once(self) -> PassReport:
        started = time.monotonic()
        report = PassReport()
        alive = self.inv.refresh_availability()
        # Records as they were before libvirt is looked at: a worker may delete a record (after
        # removing its objects) while this pass observes, and those objects are no orphans.
        known_before = {(i.scale_set, i.instance_id) for i in self.store.instances()}
        observed: dict[str, dict[str, object]] = {}
        volumes: dict[str, list[str]] = {}
        for host, ok in alive.items():
            if not ok:
                continue
            try:
                observed[host] = {d.name: d for d in self.inv.host(host).owned_domains()}
                volumes[host] = self.inv.host(host).volume_names(self.cfg.pool_name)
            except LocalVMSSError as exc:
                report.errors.append(exc.message)
                alive[host] = False
        self._track_host_loss(alive)
        for row in self.store.scale_sets():
            try:
                self._plan_records(row, alive)
            except LocalVMSSError as exc:
                report.errors.append(exc.message)
                self.store.update_scale_set(row.name, message=exc.message[:500])
        instances = self.store.instances()
        keys = {(i.scale_set, i.instance_id) for i in instances} | known_before
        report.orphans_removed = self._remove_orphans(observed, volumes, keys)
        sets = {s.name: s for s in self.store.scale_sets()}
        # The load balancer learns first (e.g. scale-in victims stop taking new connections at
        # once, all together), then the workers drain, remove and create.
        self._finish_sets(sets, alive)
        for inst in instances:
            if not alive.get(inst.host, False):
                continue
            set_row = sets.get(inst.scale_set)
            if set_row is None:
                continue
            if self._submit((inst.scale_set, inst.instance_id), self._converge_instance, inst, set_row):
                report.submitted += 1
        report.duration_s = time.monotonic() - started
        return report

    def _track_host_loss(self, alive: dict[str, bool]) -> None:
        """Instances on a host that stopped answering are unhealthy; after a grace period, lost."""
        now = time.time()
        for host, ok in alive.items():
            if ok:
                self._host_down_since.pop(host, None)
                continue
            since = self._host_down_since.setdefault(host, now)
            for inst in self.store.instances():
                if inst.host != host:
                    continue
                if inst.health != "unhealthy":
                    self.store.update_instance(
                        inst.scale_set,
                        inst.instance_id,
                        health="unhealthy",
                        message=f"host {host} does not answer",
                    )
                row = self.store.scale_set(inst.scale_set)
                if now - since >= HOST_LOST_GRACE_S and row.mode == OrchestrationMode.UNIFORM.value:
                    # Forget it: the set will re-create it on a host that answers; when the lost
                    # host comes back, its leftovers have no record and are removed as orphans.
                    self.store.delete_instance_row(inst.scale_set, inst.instance_id)
                    self.store.log_activity(
                        inst.scale_set,
                        "repair",
                        f"instance {inst.instance_id} lost with host {host}; replacing it on a host that answers",
                    )

    # -- planning records -------------------------------------------------------------------
    def _plan_records(self, row: ScaleSetRow, alive: dict[str, bool]) -> None:
        instances = self.store.instances(row.name)
        if row.deleting:
            for inst in instances:
                if inst.provisioning_state != ProvisioningState.DELETING.value:
                    self.store.update_instance(
                        row.name, inst.instance_id, provisioning_state=ProvisioningState.DELETING.value
                    )
            if not instances:
                self.balancer.remove_set(row.name)
                self.store.delete_scale_set_row(row.name)
                log.info("scale set %s deleted", row.name)
            return
        if row.mode != OrchestrationMode.UNIFORM.value:
            return
        spec = ScaleSetSpec.model_validate(row.model)
        live = [i for i in instances if i.provisioning_state != ProvisioningState.DELETING.value]
        self._plan_upgrade(row, spec, live)
        diff = row.capacity - len(live)
        if diff > 0:
            self._create_records(row, spec, live, diff, alive)
        elif diff < 0:
            slots = [_slot(i) for i in live]
            victims = planner.choose_scale_in(slots, -diff, policy=spec.scale_in_policy)
            for iid in victims:
                self.store.update_instance(row.name, iid, provisioning_state=ProvisioningState.DELETING.value)
            self.store.log_activity(
                row.name, "scale-in", f"removing instances {victims} to reach capacity {row.capacity}"
            )
            if len(victims) < -diff:
                self.store.update_scale_set(
                    row.name,
                    message=f"{-diff - len(victims)} instance(s) could not be removed: protected from scale-in",
                )

    def _plan_upgrade(self, row: ScaleSetRow, spec: ScaleSetSpec, live: list[InstanceRow]) -> None:
        """Automatic: every outdated instance at once. Rolling: one batch at a time, by update
        domain, the next only when the previous is healthy again and the unhealthy share is low."""
        mode = spec.upgrade_policy.mode
        outdated = [i for i in live if i.model_version < row.model_version]
        if not outdated or mode is UpgradeMode.MANUAL:
            return
        busy = [
            i
            for i in live
            if i.reimage_generation != i.applied_reimage
            or i.provisioning_state in (ProvisioningState.CREATING.value, ProvisioningState.UPDATING.value)
        ]
        if mode is UpgradeMode.AUTOMATIC:
            targets = [i.instance_id for i in outdated if i not in busy]
        else:
            if busy:
                self._batch_done.pop(row.name, None)
                return
            policy = spec.upgrade_policy.rolling_upgrade_policy
            pause = check_iso_duration(policy.pause_time_between_batches, "pauseTimeBetweenBatches")
            done_at = self._batch_done.setdefault(row.name, time.time())
            if time.time() - done_at < pause:
                return
            slots = [_slot(i) for i in live]
            if planner.unhealthy_limit_exceeded(
                slots, max_unhealthy_instance_percent=policy.max_unhealthy_instance_percent
            ):
                self.store.update_scale_set(
                    row.name,
                    message="rolling upgrade paused: more instances unhealthy than maxUnhealthyInstancePercent",
                )
                return
            batches = planner.upgrade_batches(
                slots,
                target_version=row.model_version,
                fault_domain_count=spec.platform_fault_domain_count,
                max_batch_instance_percent=policy.max_batch_instance_percent,
                max_unhealthy_instance_percent=policy.max_unhealthy_instance_percent,
                prioritize_unhealthy=policy.prioritize_unhealthy_instances,
            )
            targets = batches[0] if batches else []
        if not targets:
            return
        now = time.time()
        for iid in targets:
            inst = next(i for i in live if i.instance_id == iid)
            self.store.update_instance(
                row.name,
                iid,
                reimage_generation=inst.reimage_generation + 1,
                model_version=row.model_version,
                provisioning_state=ProvisioningState.UPDATING.value,
                health="unknown",
                ready_at=None,
                boot_started_at=now,
            )
        self.store.log_activity(
            row.name,
            "upgrade",
            f"{mode.value.lower()} upgrade of instances {targets} to model version {row.model_version}",
        )

    def _create_records(
        self, row: ScaleSetRow, spec: ScaleSetSpec, live: list[InstanceRow], count: int, alive: dict[str, bool]
    ) -> None:
        placements = planner.place_new(
            [_slot(i) for i in live], count, zones=spec.zones, fault_domain_count=spec.platform_fault_domain_count
        )
        created: list[int] = []
        waiting: list[str | None] = []
        with self.store.transaction() as db:
            for placement in placements:
                zone = placement.zone
                host = self.host_for(spec, zone, placement.fault_domain, alive)
                if host is None and spec.zones and not spec.zone_balance:
                    # Best-effort balance (zoneBalance=false): use a zone that has a host now.
                    for other in spec.zones:
                        host = self.host_for(spec, other, placement.fault_domain, alive)
                        if host is not None:
                            zone = other
                            break
                if host is None:
                    waiting.append(placement.zone)
                    continue
                iid = self.store.allocate_instance_id(db, row.name)
                inst = self.new_instance_row(
                    db, row, spec, iid, host, zone, placement.fault_domain, index=len(live) + len(created)
                )
                self.store.insert_instance(db, inst)
                created.append(iid)
        if created:
            self.store.log_activity(
                row.name, "scale-out", f"creating instances {created} to reach capacity {row.capacity}"
            )
        if waiting:
            self.store.update_scale_set(
                row.name,
                message=f"{len(waiting)} instance(s) wait for an available host in zone(s) "
                f"{sorted(set(map(str, waiting)))}",
            )

    def host_for(self, spec: ScaleSetSpec, zone: str | None, fault_domain: int, alive: dict[str, bool]) -> str | None:
        """Fault domain -> host: in 'host' mapping the n-th host of the zone, in 'numa' the first."""
        candidates = sorted(h for h in self.inv.hosts if alive.get(h) and (zone is None or self.inv.zone_of(h) == zone))
        if not candidates:
            return None
        if spec.fault_domain_mapping is FaultDomainMapping.NUMA:
            return candidates[0]
        return candidates[fault_domain % len(candidates)]

    def new_instance_row(
        self,
        db: object,
        row: ScaleSetRow,
        spec: ScaleSetSpec,
        iid: int,
        host: str,
        zone: str | None,
        fault_domain: int,
        index: int,
        vm_name: str | None = None,
        overrides: dict[str, object] | None = None,
    ) -> InstanceRow:
        mac, ip = self._allocate_address(db, host)
        return InstanceRow(
            scale_set=row.name,
            instance_id=iid,
            vm_name=vm_name,
            host=host,
            zone=zone,
            fault_domain=fault_domain,
            update_domain=update_domain_for(fault_domain, index, spec.platform_fault_domain_count),
            mac=mac,
            ip=ip,
            nat_port=self._allocate_nat_port(db, row.name, spec),
            model_version=row.model_version,
            desired_power="running",
            provisioning_state=ProvisioningState.CREATING.value,
            created_at=time.time(),
            overrides=dict(overrides or {}),
        )

    def _allocate_address(self, db: object, host: str) -> tuple[str, str]:
        """A MAC and an IP from the host network's DHCP range that nobody else holds."""
        (
            _gw,
            _mask,
            start,
            end,
        ) = self.inv.network_range(host)
        taken_ips = {r[0] for r in db.execute("SELECT ip FROM instances WHERE host=?", (host,))}  # type: ignore[attr-defined]
        taken_macs = {r[0] for r in db.execute("SELECT mac FROM instances")}  # type: ignore[attr-defined]
        reserved = self.inv.host(host).network_layout(self.inv.network(host))[4]
        taken_ips |= {ip for mac, ip in reserved if mac not in taken_macs}
        first, last = int(IPv4Address(start)), int(IPv4Address(end))
        for n in range(first, last + 1):
            ip = str(IPv4Address(n))
            if ip not in taken_ips:
                break
        else:
            raise HostUnavailable(f"network of host {host} has no free address in {start}-{end}")
        # The MAC is derived from the address: an address reused later comes with the same MAC,
        # so a DHCP lease the previous holder left in dnsmasq matches instead of blocking it.
        mac = "52:54:00:" + ":".join(f"{b:02x}" for b in IPv4Address(ip).packed[1:])
        return mac, ip

    def _allocate_nat_port(self, db: object, scale_set: str, spec: ScaleSetSpec) -> int | None:
        lb = spec.load_balancer or {}
        pool = lb.get("inboundNatPool")
        if not pool:
            return None
        taken = {
            r[0]
            for r in db.execute(  # type: ignore[attr-defined]
                "SELECT nat_port FROM instances WHERE scale_set=? AND nat_port IS NOT NULL", (scale_set,)
            )
        }
        for port in range(int(pool["frontendPortRangeStart"]), int(pool["frontendPortRangeEnd"]) + 1):
            if port not in taken:
                return port
        raise HostUnavailable(f"inbound NAT pool of {scale_set} is exhausted")

    # -- orphans ----------------------------------------------------------------------------
    def _remove_orphans(
        self, observed: dict[str, dict[str, object]], volumes: dict[str, list[str]], keys: set[tuple[str, int]]
    ) -> int:
        removed = 0
        for host, domains in observed.items():
            for name, dom in domains.items():
                own = dom.ownership  # type: ignore[attr-defined]
                if (own.scale_set, own.instance_id) not in keys:
                    if self._submit(("orphan", f"{host}/{name}"), self._remove_orphan_domain, host, name):
                        removed += 1
            for vol in volumes.get(host, []):
                m = INSTANCE_VOLUME.match(vol)
                if m and (m["set"], int(m["id"])) not in keys:
                    if self._submit(("orphan", f"{host}/{vol}"), self._remove_orphan_volume, host, vol):
                        removed += 1
        return removed

    def _remove_orphan_domain(self, host: str, name: str) -> None:
        log.info("removing orphan domain %s on %s", name, host)
        h = self.inv.host(host)
        try:
            macs = read_macs(h.domain_xml(name))
        except NotFound:
            macs = []
        h.undefine(name)
        # Its DHCP reservation goes too (e.g. an instance lost with its host and re-created
        # elsewhere), unless an instance with a record holds that MAC on this host.
        held = {i.mac.lower() for i in self.store.instances() if i.host == host}
        for mac in macs:
            if mac not in held:
                h.release_address(self.inv.network(host), mac)
        self._record_action("remove_orphan", "ok")

    def _remove_orphan_volume(self, host: str, volume: str) -> None:
        log.info("removing orphan volume %s on %s", volume, host)
        self.inv.host(host).delete_volume(self.cfg.pool_name, volume)
        self._record_action("remove_orphan", "ok")

    # -- converging one instance ------------------------------------------------------------
    def _converge_instance(self, inst: InstanceRow, row: ScaleSetRow) -> None:
        # Re-read: the snapshot may be a pass old.
        try:
            inst = self.store.instance(inst.scale_set, inst.instance_id)
        except LocalVMSSError:
            return
        spec = ScaleSetSpec.model_validate(self.store.scale_set(inst.scale_set).model)
        if inst.provisioning_state == ProvisioningState.DELETING.value:
            self.balancer.drain_and_remove(inst.scale_set, inst.instance_id, self.cfg.drain_timeout_s)
            self.prov.remove(inst)
            self.store.delete_instance_row(inst.scale_set, inst.instance_id)
            self._record_action("delete_instance", "ok")
            log.info("instance %s removed", inst.domain_name)
            return
        if inst.reimage_generation > inst.applied_reimage:
            self.balancer.drain(inst.scale_set, inst.instance_id, self.cfg.drain_timeout_s)
            self.prov.reimage(inst, spec)
            self.store.update_instance(
                inst.scale_set,
                inst.instance_id,
                applied_reimage=inst.reimage_generation,
                health="unknown",
                ready_at=None,
                boot_started_at=time.time(),
                provisioning_state=ProvisioningState.UPDATING.value,
                message="",
            )
            self._record_action("reimage", "ok")
            inst = self.store.instance(inst.scale_set, inst.instance_id)
        if inst.desired_power == "deallocated" or (
            inst.desired_power == "stopped" and self.inv.host(inst.host).domain_exists(inst.domain_name)
        ):
            # stop / deallocate: out of rotation first, then the guest shuts down (several passes).
            if not self.prov.shutdown_pending(inst):
                self.balancer.drain(inst.scale_set, inst.instance_id, self.cfg.drain_timeout_s)
            outcome = self.prov.converge_power(inst)
            if outcome is not None:
                self._settle(inst, ProvisioningState.SUCCEEDED)
                if inst.skip_shutdown:
                    self.store.update_instance(inst.scale_set, inst.instance_id, skip_shutdown=False)
                if outcome:
                    self.store.log_activity(
                        inst.scale_set,
                        inst.desired_power,
                        f"instance {inst.instance_id} {inst.desired_power}: {outcome}",
                    )
            return
        was_defined = self.inv.host(inst.host).domain_exists(inst.domain_name)
        self.prov.ensure_artifacts(inst, spec)
        if not was_defined:
            self._record_action("define_instance", "ok")
        before = self.prov.power_state(inst)
        if inst.restart_generation > inst.applied_restart and before is PowerState.RUNNING:
            # Azure's restart: the guest shuts down (ACPI), then starts again.
            if not self.prov.shutdown_pending(inst):
                self.balancer.drain(inst.scale_set, inst.instance_id, self.cfg.drain_timeout_s)
            outcome = self.prov.power_off(inst)
            if outcome is None:
                return  # still shutting down: the next pass looks again
            if outcome:
                self.store.log_activity(inst.scale_set, "restart", f"instance {inst.instance_id} restarting: {outcome}")
            self._record_action("restart_instance", "ok")
        self.prov.converge_power(inst)
        if inst.restart_generation > inst.applied_restart:
            self.store.update_instance(
                inst.scale_set, inst.instance_id, applied_restart=inst.restart_generation, health="unknown"
            )
        if before is not PowerState.RUNNING and inst.desired_power == "running":
            self._record_action("start_instance", "ok")
        if inst.desired_power != "running":
            # Defined and not started (a Flexible VM created stopped): nothing to wait for.
            self._settle(inst, ProvisioningState.SUCCEEDED)
            return
        if spec.health_probe is None and inst.provisioning_state != ProvisioningState.SUCCEEDED.value:
            # Nothing to probe: running is ready.
            self.store.update_instance(
                inst.scale_set,
                inst.instance_id,
                provisioning_state=ProvisioningState.SUCCEEDED.value,
                ready_at=time.time(),
                message="",
            )
            return
        self._check_boot_timeout(inst)

    def _settle(self, inst: InstanceRow, state: ProvisioningState, message: str = "") -> None:
        if inst.provisioning_state != state.value or inst.message != message:
            self.store.update_instance(
                inst.scale_set, inst.instance_id, provisioning_state=state.value, message=message
            )

    def _check_boot_timeout(self, inst: InstanceRow) -> None:
        if inst.provisioning_state not in (ProvisioningState.CREATING.value, ProvisioningState.UPDATING.value):
            return
        started = inst.boot_started_at or inst.created_at
        if time.time() - started < self.cfg.boot_timeout_s or inst.ready_at is not None:
            return
        self._settle(
            inst,
            ProvisioningState.FAILED,
            f"not healthy within {self.cfg.boot_timeout_s:.0f} s of creation; see the serial console log",
        )

    # -- set-level state and load balancer ---------------------------------------------------
    def _finish_sets(self, sets: dict[str, ScaleSetRow], alive: dict[str, bool]) -> None:
        for name, row in sets.items():
            if row.deleting:
                continue
            instances = self.store.instances(name)
            spec = ScaleSetSpec.model_validate(row.model)
            states = {i.provisioning_state for i in instances}
            live = [i for i in instances if i.provisioning_state != ProvisioningState.DELETING.value]
            if ProvisioningState.FAILED.value in states:
                state = ProvisioningState.FAILED
            elif (row.mode == OrchestrationMode.UNIFORM.value and len(live) != row.capacity) or states - {
                ProvisioningState.SUCCEEDED.value
            }:
                state = (
                    ProvisioningState.UPDATING if row.provisioning_state != "Creating" else ProvisioningState.CREATING
                )
            else:
                state = ProvisioningState.SUCCEEDED
            changes: dict[str, object] = {}
            if row.provisioning_state != state.value:
                changes["provisioning_state"] = state.value
            if state is ProvisioningState.SUCCEEDED and row.message:
                changes["message"] = ""
            if changes:
                self.store.update_scale_set(name, **changes)
            if spec.load_balancer:
                try:
                    self.balancer.sync(name, spec, instances)
                except LocalVMSSError as exc:
                    log.warning("load balancer sync of %s: %s", name, exc.message)


def _slot(inst: InstanceRow) -> planner.Slot:
    return planner.Slot(
        instance_id=inst.instance_id,
        zone=inst.zone,
        fault_domain=inst.fault_domain,
        created_at=inst.created_at,
        protected_from_scale_in=inst.protect_scale_in,
        healthy=inst.health != "unhealthy",
        model_version=inst.model_version,
        host=inst.host,
    )
