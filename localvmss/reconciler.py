"""The level-triggered reconcile loop: observe libvirt -> plan -> apply -> record.

Each pass compares the whole desired state (the store) with what libvirt reports and converges
them. API writes, libvirt events and real changes made by workers wake the loop; a pass with
nothing to do submits nothing, and the loop then rests for ``reconcile_interval_s``. Order
matters for crash safety: libvirt is observed *before* the store is read, and records are always
written before libvirt objects are made, so an object without a record is an orphan, and a record
without objects is simply made again. Per-instance work runs on a bounded worker pool so
independent boots proceed in parallel; a failing instance is retried with exponential backoff.

The control plane never destroys the data plane:
- a host that does not answer is not a host whose guests are gone: its instances keep their
  records, addresses and NAT ports; after ``host_lost_grace_s`` a Uniform set creates
  replacements on hosts that answer, *in addition*, and when the host answers again the surplus
  is scaled in by the set's scale-in policy;
- a host that answers but is busy (a pool job, a domain in transition) stays available; the
  steps that met the busy object wait for a later pass;
- an orphan (a libvirt object with our ownership and no record) is removed only after it was
  seen so, while its host answered, for ``orphan_grace_s``, and the removal is logged.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from localvmss import lifecycle, planner, repairs, standby, terminate
from localvmss.allocation import Allocator, slot
from localvmss.capacity import CapacityRule
from localvmss.config import DaemonConfig
from localvmss.errors import LocalVMSSError, NotFound, StoreError, WarmCloneUnavailable
from localvmss.health import probe_once
from localvmss.inventory import Inventory
from localvmss.model import (
    OBJECT_PREFIX,
    OrchestrationMode,
    PowerState,
    ProvisioningState,
    UpgradeMode,
)
from localvmss.plans import Change, Plan, PlannedChange
from localvmss.provision import Provisioner, computer_name, os_volume, seed_volume
from localvmss.spec import ScaleSetSpec, StandbyState, check_not_before_timeout
from localvmss.store import InstanceRow, ScaleSetRow, ScheduledEventRow, Store
from localvmss.upgrades import Upgrades
from localvmss.virt.domainxml import read_macs
from localvmss.virt.host import OwnedDomain
from localvmss.warmclones import WarmClones

log = logging.getLogger(__name__)

INSTANCE_VOLUME = re.compile(rf"{re.escape(OBJECT_PREFIX)}(?P<set>[a-z0-9-]+)-(?P<id>[0-9]+)-(os\.qcow2|seed\.iso)")
HOST_LOST_GRACE_S = 20.0  # a host silent this long gets its Uniform instances replaced elsewhere
ORPHAN_GRACE_S = 30.0  # an orphan must be seen this long, while its host answers, before removal
BACKOFF_MAX_S = 300.0  # a failing instance is retried at most this far apart
POOL_REFRESH_S = 300.0  # how often a pool is refreshed to see files changed behind libvirt's back
STOPPED_OUTSIDE = "the domain stopped outside localvmss"
RESUME_PROBE_S = 10.0  # a member taken from the pool is probed this long at once, then by the monitor
RESUME_PROBE_EVERY_S = 0.05
# The libvirt power state a pool instance standing by is kept in.
STANDBY_POWER = {
    StandbyState.RUNNING.value: PowerState.RUNNING,
    StandbyState.PAUSED.value: PowerState.PAUSED,
    StandbyState.SAVED.value: PowerState.STOPPED,
}


def needs_work(inst: InstanceRow, domains: dict[str, OwnedDomain] | None, shutdown_asked: bool = False) -> bool:
    """Whether a worker has anything to do for the instance, judged from this pass's observation
    of its host (``None``: not observed, so a worker looks for itself). A converged instance
    costs no libvirt call and no worker. ``shutdown_asked``: its guest was asked to power off;
    a worker sees it off even when this pass already finds it off (and says how it went)."""
    if domains is None or shutdown_asked:
        return True
    if inst.provisioning_state in (
        ProvisioningState.CREATING.value,
        ProvisioningState.UPDATING.value,
        ProvisioningState.DELETING.value,
    ):
        return True
    if lifecycle.changing(inst):
        return True
    dom = domains.get(inst.domain_name)
    if lifecycle.in_pool(inst):
        if not lifecycle.standing_by(inst):
            # Booting (the normal path), or healthy and to be brought to its standby state.
            return dom is None or dom.power_state is not PowerState.RUNNING or lifecycle.ready(inst)
        return dom is None or dom.power_state is not STANDBY_POWER[str(inst.standby_state)]
    if inst.desired_power == "running":
        return dom is None or dom.power_state is not PowerState.RUNNING
    if inst.desired_power == "stopped":
        return dom is None or dom.power_state is not PowerState.STOPPED
    return dom is not None  # deallocated: no domain


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
        *,
        host_lost_grace_s: float = HOST_LOST_GRACE_S,
        orphan_grace_s: float = ORPHAN_GRACE_S,
        clock: Callable[[], float] = time.time,
        capacity: CapacityRule | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.inv = inventory
        self.prov = provisioner
        self.balancer: Balancer = balancer or NoBalancer()
        self.alloc = Allocator(inventory, clock)
        self.capacity = capacity  # admission of what the loop makes by itself (surge, overprovisioning)
        self.upgrades = Upgrades(store, self.alloc, capacity, clock)
        self.clones = WarmClones(cfg, store, inventory, provisioner, clock)
        self.host_lost_grace_s = host_lost_grace_s
        self.orphan_grace_s = orphan_grace_s
        self.clock = clock
        self._wake = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=cfg.max_parallel_boots, thread_name_prefix="converge")
        # Work queued or running, by key; a run leaves it when it ends (``_ended``).
        self._in_flight: dict[tuple[str, int | str], Future[None]] = {}
        self._lock = threading.Lock()
        self._host_down_since: dict[str, float] = {}
        self._lost_told: set[str] = set()
        self._host_back_since: dict[str, float] = {}
        # Sets whose instances on a lost host were replaced and whose host came back: their
        # surplus goes failing instances first (unhealthy or unknown), whatever prioritizeUnhealthyVMs
        # says, as it is the loop's own repair, not a scale-in someone asked for.
        self._surplus_from_loss: set[str] = set()
        self._orphan_seen: dict[tuple[str, str], float] = {}  # (host, object) -> first seen as orphan
        self._failures: dict[tuple[str, int | str], tuple[int, float]] = {}  # key -> (count, retry at)
        self._pool_refreshed: dict[str, float] = {}
        self._stopping = False
        self._last_errors: list[str] = []
        self.action_hook = on_action  # callable(kind, result) for metrics
        self.pass_hook: Callable[[PassReport], None] | None = None  # metrics of every pass
        self.last_report = PassReport()

    # -- loop -------------------------------------------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """The loop: a pass, then rest until woken or ``reconcile_interval_s`` passed."""
        while not stop.is_set():
            self._wake.clear()
            started = time.monotonic()
            try:
                self.last_report = self.pass_once()
                self._log_errors(self.last_report.errors)
            except Exception as exc:  # a pass must never kill the loop; the next one retries
                log.exception("reconcile pass failed")
                # Timed and counted too: slow failing passes matter most.
                self.last_report = PassReport(duration_s=time.monotonic() - started, errors=[f"pass failed: {exc}"])
            if self.pass_hook is not None:
                self.pass_hook(self.last_report)
            self._wake.wait(self.cfg.reconcile_interval_s)

    def _log_errors(self, errors: list[str]) -> None:
        """Each distinct set of pass errors is logged once, not once a pass."""
        if errors != self._last_errors:
            for error in errors:
                log.warning("reconcile: %s", error)
            self._last_errors = list(errors)

    def stop(self, timeout_s: float = 20.0) -> None:
        """Let running workers finish (bounded), drop queued ones: called before the store closes."""
        self._stopping = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + timeout_s
        with self._lock:
            running = list(self._in_flight.values())
        for future in running:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                future.result(timeout=remaining)
            except Exception:  # noqa: BLE001 - reported by _guarded already
                pass

    def _record_action(self, kind: str, result: str) -> None:
        hook = self.action_hook
        if callable(hook):
            hook(kind, result)

    def _submit(self, key: tuple[str, int | str], fn: Callable[..., bool], *args: object) -> bool:
        """Run ``fn(*args)`` on the worker pool unless it already runs for ``key`` or is backing
        off after a failure; True if submitted."""
        with self._lock:
            if self._stopping:
                return False
            running = self._in_flight.get(key)
            if running is not None and not running.done():
                return False
            failed = self._failures.get(key)
            if failed is not None and self.clock() < failed[1]:
                return False
            future = self._pool.submit(self._guarded, key, fn, *args)
            self._in_flight[key] = future
        # Outside the lock: a run that already ended calls back at once, in this thread.
        future.add_done_callback(lambda done: self._ended(key, done))
        return True

    def _ended(self, key: tuple[str, int | str], future: Future[None]) -> None:
        """A run ended (or was cancelled): it no longer counts as in flight, so ``idle`` and
        ``stop`` look only at work that is left, however many runs came before."""
        with self._lock:
            if self._in_flight.get(key) is future:
                del self._in_flight[key]

    def _backoff(self, key: tuple[str, int | str]) -> float:
        """Record one more failure of ``key``; returns the delay before it is tried again."""
        with self._lock:
            count = self._failures.get(key, (0, 0.0))[0] + 1
            delay = min(BACKOFF_MAX_S, max(self.cfg.reconcile_interval_s, 1.0) * 2 ** (count - 1))
            self._failures[key] = (count, self.clock() + delay)
            return delay

    def _guarded(self, key: tuple[str, int | str], fn: Callable[..., bool], *args: object) -> None:
        """One worker run. Only a run that changed something wakes the loop at once: a finished
        run that changed nothing must not start the next pass (the loop would never rest)."""
        changed = False
        try:
            changed = bool(fn(*args))
            with self._lock:
                self._failures.pop(key, None)
        except StoreError:
            if not self._stopping:
                log.warning("%s: %s", key, "state database unavailable")
            self._backoff(key)
        except LocalVMSSError as exc:
            delay = self._backoff(key)
            log.warning("%s: %s (next try in %.0f s)", key, exc.message, delay)
            self._record_action(getattr(fn, "__name__", "action"), "error")
            if isinstance(key[1], int):
                try:
                    self.store.record_status(key[0], key[1], message=exc.message[:500])
                except LocalVMSSError:
                    pass
        except Exception:
            self._backoff(key)
            log.exception("%s failed", key)
            self._record_action(getattr(fn, "__name__", "action"), "error")
        if changed:
            self.wake()

    def idle(self) -> bool:
        with self._lock:
            # done() too: a run's callback (``_ended``) comes just after its result.
            return all(f.done() for f in self._in_flight.values())

    # -- one pass ---------------------------------------------------------------------------
    def pass_once(self) -> PassReport:
        started = time.monotonic()
        report = PassReport()
        alive = self.inv.refresh_availability()
        now = self.clock()
        self._track_hosts(alive, now)
        # Records as they were before libvirt is looked at: a worker may delete a record (after
        # removing its objects) while this pass observes, and those objects are no orphans.
        known_before = {home for i in self.store.instances() for home in _homes(i)}
        observed: dict[str, dict[str, OwnedDomain]] = {}
        volumes: dict[str, list[str]] = {}
        for host, ok in alive.items():
            if ok:
                self._observe(host, now, observed, volumes, report)
        for row in self.store.scale_sets():
            try:
                self._plan_records(row, alive)
            except LocalVMSSError as exc:
                report.errors.append(exc.message)
                self.store.record_set_status(row.name, message=exc.message[:500])
        for tpl in self.clones.stale():
            self._submit(("template", f"{tpl.scale_set}/{tpl.model_version}/{tpl.host}"), self.clones.delete, tpl)
        instances = self.store.instances()
        keys = {home for i in instances for home in _homes(i)} | known_before
        report.orphans_removed = self._remove_orphans(observed, volumes, keys, now)
        sets = {s.name: s for s in self.store.scale_sets()}
        # The load balancer learns first (e.g. scale-in victims stop taking new connections at
        # once, all together), then the workers drain, remove and create.
        self._finish_sets(sets, alive)
        for inst in instances:
            if not alive.get(inst.host, False) or inst.scale_set not in sets:
                continue
            if not needs_work(inst, observed.get(inst.host), self.prov.shutdown_pending(inst)):
                continue
            if self._submit((inst.scale_set, inst.instance_id), self._converge_instance, inst):
                report.submitted += 1
        report.duration_s = time.monotonic() - started
        return report

    def _observe(
        self,
        host: str,
        now: float,
        observed: dict[str, dict[str, OwnedDomain]],
        volumes: dict[str, list[str]],
        report: PassReport,
    ) -> None:
        """One host's domains, volumes and DHCP reservations, in bulk. A host that answers but
        fails a listing (busy) stays available; only its orphan check waits for a later pass."""
        h = self.inv.host(host)
        try:
            domains = {d.name: d for d in h.owned_domains()}
            refresh = now - self._pool_refreshed.get(host, 0.0) >= POOL_REFRESH_S
            names = h.volume_names(self.cfg.pool_name, refresh=refresh)
            if refresh:
                self._pool_refreshed[host] = now
            self.inv.refresh_reservations(host)
        except LocalVMSSError as exc:
            report.errors.append(exc.message)
            return
        observed[host] = domains
        volumes[host] = names
        self.inv.volumes_listed(host, names)

    def _track_hosts(self, alive: dict[str, bool], now: float) -> None:
        """Unreachable is not gone: a silent host's instances keep their records; the activity
        log says when a host stopped answering, when replacements start, and when it is back."""
        for host, ok in alive.items():
            on_host = [i for i in self.store.instances() if i.host == host]
            if ok:
                since = self._host_down_since.pop(host, None)
                if since is not None:
                    self._host_back_since[host] = now
                    if host in self._lost_told:  # its instances were replaced elsewhere: a surplus follows
                        self._surplus_from_loss |= {i.scale_set for i in on_host}
                    for inst in on_host:
                        if inst.message.startswith(f"host {host} does not answer"):
                            self.store.record_status(inst.scale_set, inst.instance_id, message="")
                    self._host_news(
                        on_host,
                        f"host {host} answers again after {now - since:.0f} s; its instances are back "
                        "(a surplus from replacements is scaled in by the scale-in policy)",
                    )
                continue
            if host not in self._host_down_since:
                self._host_down_since[host] = now
                for inst in on_host:
                    self.store.record_status(
                        inst.scale_set, inst.instance_id, message=f"host {host} does not answer; the guest is kept"
                    )
                self._host_news(on_host, f"host {host} does not answer; its instances are kept (state unknown)")
            elif now - self._host_down_since[host] >= self.host_lost_grace_s and host not in self._lost_told:
                self._lost_told.add(host)
                self._host_news(
                    on_host,
                    f"host {host} unreachable for {self.host_lost_grace_s:.0f} s: creating replacements on hosts "
                    "that answer, in addition; its instances are kept",
                )
        for host in list(self._lost_told):
            if alive.get(host):
                self._lost_told.discard(host)

    def _host_news(self, on_host: list[InstanceRow], message: str) -> None:
        log.warning("%s", message)
        by_set: dict[str, list[int]] = {}
        for inst in on_host:
            by_set.setdefault(inst.scale_set, []).append(inst.instance_id)
        for scale_set, ids in by_set.items():
            self.store.log_activity(scale_set, "host", f"{message}: instances {ids}", instances=ids)

    def settling(self, host: str) -> bool:
        """True for ``host_lost_grace_s`` after a silent host answers again: its guests get that
        long to show (to the health monitor) whether they still serve before a surplus is chosen."""
        back = self._host_back_since.get(host)
        return back is not None and self.clock() - back < self.host_lost_grace_s

    def unreachable(self, host: str) -> bool:
        """True once the host has not answered for ``host_lost_grace_s``: its instances do not
        count toward capacity (replacements are made) but keep their records."""
        since = self._host_down_since.get(host)
        return since is not None and self.clock() - since >= self.host_lost_grace_s

    # -- planning records -------------------------------------------------------------------
    def _plan_records(self, row: ScaleSetRow, alive: dict[str, bool]) -> None:
        instances = self.store.instances(row.name)
        if row.deleting:
            for inst in instances:
                if inst.provisioning_state != ProvisioningState.DELETING.value:
                    # Pool instances serve nothing: no terminate notice (the reason says so).
                    reason = {"delete_reason": terminate.STANDBY} if lifecycle.in_pool(inst) else {}
                    self.store.update_instance(
                        row.name, inst.instance_id, provisioning_state=ProvisioningState.DELETING.value, **reason
                    )
            if not instances:
                self.balancer.remove_set(row.name)
                self.store.delete_scale_set_row(row.name)
                log.info("scale set %s deleted", row.name)
            return
        if row.mode != OrchestrationMode.UNIFORM.value:
            return
        spec = row.spec
        # Instances of a host silent past its grace keep their records but do not count: the
        # set makes replacements elsewhere, and scales the surplus in once the host is back.
        live = [i for i in instances if lifecycle.counts_toward_capacity(i) and not self.unreachable(i.host)]
        self.upgrades.step(row, alive)  # a rolling upgrade's next step (Rolling policy, or one started)
        self._plan_upgrade(row, spec, live)
        self._carry_out(row, spec, self.scale_plan(row, alive))
        self._keep_pool(row, spec, alive, instances)
        self._keep_templates(row, spec, alive)

    def scale_plan(self, row: ScaleSetRow, alive: dict[str, bool] | None = None, capacity: int | None = None) -> Plan:
        """What this set's next pass does to reach ``capacity`` (default: the set's), as a Plan:
        the one object ``_carry_out`` applies and ``--what-if`` shows, so they cannot drift.
        ``alive``: hosts that answer (default: as last seen). Read-only; the API calls it too."""
        if alive is None:
            answering = set(self.inv.available())
            alive = {h: h in answering for h in self.inv.hosts}
        spec = row.spec
        # Instances of a host silent past its grace keep their records but do not count: the
        # set makes replacements elsewhere, and scales the surplus in once the host is back.
        live = [
            i
            for i in self.store.instances(row.name)
            if lifecycle.counts_toward_capacity(i) and not self.unreachable(i.host)
        ]
        recovering = row.name in self._surplus_from_loss
        if recovering and len(live) <= row.capacity:
            self._surplus_from_loss.discard(row.name)
            recovering = False
        back = sorted({i.host for i in live if self.settling(i.host)})
        hold = (
            f"scale-in waits: host(s) {back} answer again and their guests get {self.host_lost_grace_s:.0f} s "
            "to show their health first"
            if back
            else None
        )
        plan = planner.plan_scale(
            row.name,
            [scale_slot(i, failing_first=recovering) for i in live],
            row.capacity if capacity is None else capacity,
            zones=spec.zones,
            fault_domain_count=spec.platform_fault_domain_count,
            policy=spec.scale_in_policy,
            prioritize_unhealthy=spec.prioritize_unhealthy_vms or recovering,
            zone_balance=spec.zone_balance,
            overprovision=spec.overprovision,
            host_for=lambda zone, fd: self.host_for(spec, zone, fd, alive),
            hold_scale_in=hold,
        )
        return self._with_pool(row, plan, live, alive)

    def _pool_slots(self, row: ScaleSetRow, alive: dict[str, bool]) -> list[standby.PoolSlot]:
        """The set's pool instances as the pool decisions see them. Like members, those of a
        silent host still count until it is lost (``host_lost_grace_s``: a busy host is not
        refilled elsewhere), but only those of hosts that answer may be taken."""
        return [
            standby.PoolSlot(
                instance_id=i.instance_id,
                state=StandbyState(str(i.standby_state)),
                zone=i.zone,
                fault_domain=i.fault_domain,
                standing_by=lifecycle.standing_by(i),
                usable=lifecycle.usable_from_pool(i, row.model_version) and alive.get(i.host, False),
                outdated=lifecycle.outdated(i, row.model_version),
                # Never ready in time, or a Running one whose probe now fails: replaced.
                failed=i.provisioning_state == ProvisioningState.FAILED.value or i.health == "unhealthy",
            )
            for i in self.store.instances(row.name)
            if lifecycle.kept_in_pool(i)
            and i.standby_state != lifecycle.TEMPLATE_BUILDER
            and (alive.get(i.host, False) or not self.unreachable(i.host))
        ]

    def _with_pool(self, row: ScaleSetRow, plan: Plan, live: list[InstanceRow], alive: dict[str, bool]) -> Plan:
        """The scale plan with the standby pool in it: a new member the pool holds is taken
        from it (TAKE, not CREATE), and with ``reuseOnScaleIn`` a scale-in victim of the current
        model returns to the pool (RETURN, not REMOVE) while the pool has room."""
        policy = row.spec.standby_pool
        if policy is None:
            return plan
        pool = self._pool_slots(row, alive)
        creates = [c for c in plan.changes if c.change is Change.CREATE and not c.extra]
        takes = standby.choose_takes([(c.zone, c.fault_domain or 0) for c in creates], pool, zonal=bool(row.spec.zones))
        taken = dict(zip([id(c) for c in creates], takes, strict=True))
        by_id = {i.instance_id: i for i in live}
        victims = [
            (c.instance_id, _reusable(by_id[c.instance_id], row.model_version))
            for c in plan.of(Change.REMOVE)
            if c.instance_id in by_id and not c.overprovisioned
        ]
        returned = standby.reuse_on_scale_in(policy, plan.capacity or 0, pool, victims)
        where = {i.instance_id: i for i in self.store.instances(row.name)}
        changes: list[PlannedChange] = []
        for c in plan.changes:
            take = taken.get(id(c))
            if take is not None:
                inst = where[take.instance_id]  # it keeps its own placement (zone, fault domain, host)
                changes.append(
                    PlannedChange(
                        Change.TAKE,
                        f"from the standby pool ({take.state.value}) instead of a new instance: {c.reason}",
                        instance_id=take.instance_id,
                        zone=inst.zone,
                        fault_domain=inst.fault_domain,
                        host=inst.host,
                        standby_state=take.state.value,
                    )
                )
            elif c.change is Change.REMOVE and c.instance_id in returned:
                state = returned[c.instance_id]
                changes.append(
                    replace(
                        c,
                        change=Change.RETURN,
                        reason=f"back to the standby pool ({state.value}, reuseOnScaleIn): {c.reason}",
                        standby_state=state.value,
                    )
                )
            else:
                changes.append(c)
        return replace(plan, changes=tuple(changes))

    def _carry_out(self, row: ScaleSetRow, spec: ScaleSetSpec, plan: Plan) -> None:
        """Apply a scale plan: adopt the overprovisioned instances it keeps, mark what it removes
        for deletion, create what it creates; its notes become the set's message."""
        adopted = plan.instance_ids(Change.ADOPT)
        removed = plan.of(Change.REMOVE)
        extras = [c.instance_id for c in removed if c.overprovisioned and c.instance_id is not None]
        victims = [c.instance_id for c in removed if not c.overprovisioned and c.instance_id is not None]
        for iid in adopted:
            self.store.update_instance(row.name, iid, overprovisioned=False)
        for iid in extras:
            self.store.update_instance(
                row.name,
                iid,
                provisioning_state=ProvisioningState.DELETING.value,
                delete_reason=terminate.OVERPROVISION,
            )
        for iid in victims:
            self.store.update_instance(
                row.name, iid, provisioning_state=ProvisioningState.DELETING.value, delete_reason=terminate.SCALE_IN
            )
        if adopted or extras:
            self.store.log_activity(
                row.name,
                "overprovision",
                f"overprovisioning: kept instances {adopted} (the first to become healthy), removing extras "
                f"{extras} (never in rotation)",
                instances=[*adopted, *extras],
            )
        self._take_and_return(row, spec, plan)
        if victims:
            why = "; ".join(f"{c.instance_id}: {c.reason}" for c in removed if c.instance_id in victims)
            self.store.log_activity(
                row.name,
                "scale-in",
                f"removing instances {victims} to reach capacity {plan.capacity} ({why})",
                instances=victims,
            )
        creates = plan.of(Change.CREATE)
        if creates:
            self._create_records(row, spec, creates)
        if plan.notes and row.message != "; ".join(plan.notes):
            self.store.record_set_status(row.name, message="; ".join(plan.notes))

    def _take_and_return(self, row: ScaleSetRow, spec: ScaleSetSpec, plan: Plan) -> None:
        """A plan's TAKE changes make pool instances members (resumed by a worker, joining the
        load balancer once healthy); its RETURN changes send members back to the pool (drained
        by a worker, then brought to their standby state). One transaction each way."""
        now = self.clock()
        takes = plan.of(Change.TAKE)
        if takes:
            self.store.update_instances(
                [
                    (
                        row.name,
                        int(c.instance_id or 0),
                        {
                            "standby_state": None,
                            "standby_at": None,
                            "ready_at": None,
                            "provisioning_state": ProvisioningState.UPDATING.value,
                            "boot_started_at": now,
                            "origin": f"{lifecycle.FROM_POOL} ({c.standby_state})",
                            "prepared_at": None,
                        },
                    )
                    for c in takes
                ]
            )
            what = ", ".join(f"{c.instance_id} ({c.standby_state})" for c in takes)
            self.store.log_activity(
                row.name,
                "scale-out",
                f"taking instances {what} from the standby pool to reach capacity {plan.capacity}",
                instances=plan.instance_ids(Change.TAKE),
            )
        returns = plan.of(Change.RETURN)
        if returns:
            # The state each waits in is the plan's (what --what-if showed), decided once.
            self.store.update_instances(
                [
                    (row.name, int(c.instance_id or 0), {"standby_state": c.standby_state, "standby_at": None})
                    for c in returns
                ]
            )
            ids = plan.instance_ids(Change.RETURN)
            self.store.log_activity(
                row.name,
                "scale-in",
                f"returning instances {ids} to the standby pool (reuseOnScaleIn) to reach capacity {plan.capacity}: "
                "each is drained, then kept " + ", ".join(str(c.standby_state) for c in returns),
                instances=ids,
            )

    def _keep_pool(
        self, row: ScaleSetRow, spec: ScaleSetSpec, alive: dict[str, bool], instances: list[InstanceRow]
    ) -> None:
        """The pool's background work (``standby.upkeep``): failed, outdated and surplus pool
        instances are removed (no terminate notice: they serve nothing), and the pool is refilled
        to its size, each new one admitted against host memory as any instance; one that does
        not fit is left out and the set's message says why."""
        if spec.standby_pool is None and not any(lifecycle.in_pool(i) for i in instances):
            return  # (``instances``: the pass's snapshot; only this method makes pool instances)
        pool = self._pool_slots(row, alive)
        work = standby.upkeep(spec.standby_pool, row.capacity, pool)
        if work.remove:
            ids = [iid for iid, _ in work.remove]
            for iid in ids:
                self.store.update_instance(
                    row.name, iid, provisioning_state=ProvisioningState.DELETING.value, delete_reason=terminate.STANDBY
                )
            why = "; ".join(f"{iid}: {reason}" for iid, reason in work.remove)
            self.store.log_activity(row.name, "standby-pool", f"removing pool instances {ids} ({why})", instances=ids)
        if not work.create:
            return
        kept = [p for p in pool if (p.instance_id, standby.FAILED) not in work.remove and not p.outdated]
        slots = [planner.Slot(p.instance_id, p.zone, p.fault_domain, 0.0) for p in kept]
        placement = planner.plan_scale(
            row.name,
            slots,
            len(slots) + len(work.create),
            zones=spec.zones,
            fault_domain_count=spec.platform_fault_domain_count,
            policy=spec.scale_in_policy,
            zone_balance=spec.zone_balance,
            host_for=lambda zone, fd: self.host_for(spec, zone, fd, alive),
        )
        creates = [c for c in placement.of(Change.CREATE) if c.host is not None]
        made: list[int] = []
        skipped = ""
        try:
            for change, state in zip(creates, work.create, strict=False):
                if self.capacity is not None:
                    self.capacity.admit(spec, 1)
                with self.store.transaction() as db:
                    made.append(self._insert_record(db, row, spec, change, 0, standby_state=state.value))
        except LocalVMSSError as exc:
            skipped = f"{len(work.create) - len(made)} standby pool instance(s) not made: {exc.message}"
        if len(creates) < len(work.create) and not skipped:
            skipped = f"{len(work.create) - len(creates)} standby pool instance(s) not made: no host answers"
        if made:
            self.store.log_activity(
                row.name,
                "standby-pool",
                f"filling the standby pool: creating instances {made} "
                f"({', '.join(s.value for s in work.create[: len(made)])})",
                instances=made,
            )
        if skipped and row.message != skipped:
            self.store.record_set_status(row.name, message=skipped[:500])

    def _keep_templates(self, row: ScaleSetRow, spec: ScaleSetSpec, alive: dict[str, bool]) -> None:
        """templateClones: a hidden builder instance on each host of the set that has no warm
        template of the set's model version yet (admitted against memory like any instance;
        one that does not fit is left out, and new instances there boot cold)."""
        if not spec.template_clones.enabled:
            return
        hosts = self.clones.hosts_needing_a_builder(row, spec, alive, self.store.instances(row.name))
        made: list[int] = []
        for host in hosts:
            try:
                if self.capacity is not None:
                    self.capacity.admit(spec, 1)
                change = PlannedChange(Change.CREATE, "warm template builder", zone=self.inv.zone_of(host), host=host)
                with self.store.transaction() as db:
                    made.append(
                        self._insert_record(
                            db, row, spec, replace(change, fault_domain=0), 0, lifecycle.TEMPLATE_BUILDER
                        )
                    )
            except LocalVMSSError as exc:
                log.info("%s: no warm template builder on %s now: %s", row.name, host, exc.message)
        if made:
            self.store.log_activity(
                row.name,
                "template",
                f"booting template builders {made} for model version {row.model_version} (on {', '.join(hosts)}): "
                "each is saved as a warm template once healthy",
                instances=made,
            )

    def _plan_upgrade(self, row: ScaleSetRow, spec: ScaleSetSpec, live: list[InstanceRow]) -> None:
        """Automatic policy: every outdated instance at once, through the action table's reimage.
        Rolling upgrades (the policy, or ``rolling-upgrade start``) are ``Upgrades.step``'s."""
        if spec.upgrade_policy.mode is not UpgradeMode.AUTOMATIC:
            return
        targets = [
            i
            for i in live
            if lifecycle.outdated(i, row.model_version) and not lifecycle.busy(i) and not i.protect_actions
        ]
        if not targets:
            return
        reimage = lifecycle.find_action("reimage")
        now = self.clock()
        for inst in targets:
            changes = lifecycle.request(reimage, inst, model_version=row.model_version, now=now)
            self.store.update_instance(row.name, inst.instance_id, **changes)
        ids = [i.instance_id for i in targets]
        message = f"automatic upgrade of instances {ids} to model version {row.model_version}"
        self.store.log_activity(row.name, "upgrade", message, instances=ids)

    def _create_records(self, row: ScaleSetRow, spec: ScaleSetSpec, creates: list[PlannedChange]) -> None:
        """The records of a plan's CREATE changes, each on the host, zone and fault domain the
        plan names: the instances asked for in one transaction (all or none); overprovisioning
        extras after them, each only if admitted (host memory, as any new instance) and given an
        address and NAT port, so a tight host or pool costs the extras, never the scale-out."""
        index = sum(1 for i in self.store.instances(row.name) if lifecycle.counts_toward_capacity(i))
        needed = [c for c in creates if not c.extra]
        wanted = [c for c in creates if c.extra]
        created: list[int] = []
        with self.store.transaction() as db:
            for change in needed:
                created.append(self._insert_record(db, row, spec, change, index + len(created)))
        extras: list[int] = []
        skipped = ""
        try:
            if wanted and self.capacity is not None:
                self.capacity.admit(spec, len(wanted))
            for change in wanted:
                with self.store.transaction() as db:
                    extras.append(self._insert_record(db, row, spec, change, index + len(created) + len(extras)))
        except LocalVMSSError as exc:
            skipped = f"; {len(wanted) - len(extras)} overprovisioning extra(s) not made: {exc.message}"
        self.store.log_activity(
            row.name,
            "scale-out",
            f"creating instances {created + extras} to reach capacity {row.capacity}"
            + (f" (overprovisioned: extras {extras}; the first to become healthy are kept)" if extras else "")
            + skipped,
            instances=created + extras,
        )

    def _insert_record(
        self,
        db: Any,
        row: ScaleSetRow,
        spec: ScaleSetSpec,
        change: PlannedChange,
        index: int,
        standby_state: str | None = None,
    ) -> int:
        """A new instance's record with its final identity (id, address, NAT port): a member
        (a cold boot), or with ``standby_state`` a standby-pool instance."""
        assert change.host is not None and change.fault_domain is not None  # plan_scale with host_for
        iid = self.store.allocate_instance_id(db, row.name)
        inst = self.alloc.new_instance_row(
            db, row, spec, iid, change.host, change.zone, change.fault_domain, index=index
        )
        if standby_state is None:
            cloned = spec.template_clones.enabled and self.clones.ready_template(
                row.name, row.model_version, change.host
            )
            inst = replace(inst, origin=lifecycle.TEMPLATE_CLONE if cloned else lifecycle.COLD_BOOT)
        else:
            inst = replace(inst, standby_state=standby_state)
        if change.overprovisioned:
            inst = replace(inst, overprovisioned=True)
        self.store.insert_instance(db, inst)
        return iid

    def host_for(self, spec: ScaleSetSpec, zone: str | None, fault_domain: int, alive: dict[str, bool]) -> str | None:
        return self.alloc.host_for(spec, zone, fault_domain, alive)

    def new_instance_row(self, db: Any, row: ScaleSetRow, spec: ScaleSetSpec, *args: Any, **kw: Any) -> InstanceRow:
        return self.alloc.new_instance_row(db, row, spec, *args, **kw)

    # -- orphans ----------------------------------------------------------------------------
    def _remove_orphans(
        self,
        observed: dict[str, dict[str, OwnedDomain]],
        volumes: dict[str, list[str]],
        keys: set[tuple[str, str, int]],
        now: float,
    ) -> int:
        """Submit the removal of objects that carry our ownership, have no record on their host
        (a redeployed instance's leftovers on its old host count too), and have been
        seen so in every pass for ``orphan_grace_s`` while their host answered (a host that has
        just come back waits that long too). Returns how many removals were submitted."""
        seen_now: set[tuple[str, str]] = set()
        candidates: list[tuple[str, str, str]] = []  # (host, object, kind)
        for host, domains in observed.items():
            for name, dom in domains.items():
                if (host, dom.ownership.scale_set, dom.ownership.instance_id) not in keys:
                    candidates.append((host, name, "domain"))
            for vol in volumes.get(host, []):
                m = INSTANCE_VOLUME.fullmatch(vol)
                # A volume whose domain exists is in use, whoever owns that domain.
                in_use = f"{OBJECT_PREFIX}{m['set']}-{m['id']}" in domains if m else True
                if m and not in_use and (host, m["set"], int(m["id"])) not in keys:
                    candidates.append((host, vol, "volume"))
        removed = 0
        for host, name, kind in candidates:
            seen_now.add((host, name))
            first = self._orphan_seen.setdefault((host, name), now)
            if now - first < self.orphan_grace_s:
                continue
            if kind == "domain":
                dom = observed[host][name]
                log.warning(
                    "removing orphan domain %s on %s (%s): it carries localvmss ownership (set %s, instance %d) "
                    "but has no record, and has been seen so for %.0f s",
                    name,
                    host,
                    dom.power_state.value,
                    dom.ownership.scale_set,
                    dom.ownership.instance_id,
                    now - first,
                )
                submitted = self._submit(("orphan", f"{host}/{name}"), self._remove_orphan_domain, host, name)
            else:
                log.warning("removing orphan volume %s on %s: no record for %.0f s", name, host, now - first)
                submitted = self._submit(("orphan", f"{host}/{name}"), self._remove_orphan_volume, host, name)
            removed += int(submitted)
        # "Seen so in every pass": an object not seen as an orphan now starts from zero again.
        self._orphan_seen = {k: v for k, v in self._orphan_seen.items() if k in seen_now}
        return removed

    def _remove_orphan_domain(self, host: str, name: str) -> bool:
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
                self.inv.release(host, mac)
        self._record_action("remove_orphan", "ok")
        return False

    def _remove_orphan_volume(self, host: str, volume: str) -> bool:
        self.inv.delete_volume(host, volume)
        self._record_action("remove_orphan", "ok")
        return False

    # -- converging one instance ------------------------------------------------------------
    def _spec_for(self, inst: InstanceRow) -> ScaleSetSpec:
        """The set's spec with the VM model of the version the instance runs: an instance on an
        older version (Manual policy, a rollout under way, a rollback) is made, reimaged or
        moved from its own model, never from a newer one it was not upgraded to."""
        row = self.store.scale_set(inst.scale_set)
        if inst.model_version == row.model_version:
            return row.spec
        version = self.store.model_version(inst.scale_set, inst.model_version)
        return row.spec if version is None else row.spec.with_model_of(version.model)

    def _converge_instance(self, inst: InstanceRow) -> bool:
        """One step of one instance toward its record; True if it changed something (the loop
        then looks again at once). Observations are written for the generation read here, so
        an intent that arrives meanwhile (a delete during a drain) is never overwritten."""
        try:
            inst = self.store.instance(inst.scale_set, inst.instance_id)  # the snapshot may be a pass old
            spec = self._spec_for(inst)
        except NotFound:
            return False
        if inst.provisioning_state == ProvisioningState.DELETING.value:
            if not self._terminate_notice(inst, spec):
                return False  # the guest has its notice: a later pass (or its acknowledgement) looks again
            self.balancer.drain_and_remove(inst.scale_set, inst.instance_id, self.cfg.drain_timeout_s)
            self.prov.remove(inst)
            self.store.delete_instance_row(inst.scale_set, inst.instance_id)
            self._record_action("delete_instance", "ok")
            log.info("instance %s removed", inst.domain_name)
            return True
        if inst.redeploy_generation > inst.applied_redeploy:
            return self._redeploy(inst, spec)
        if inst.reimage_generation > inst.applied_reimage:
            self.balancer.drain(inst.scale_set, inst.instance_id, self.cfg.drain_timeout_s)
            self.prov.reimage(inst, spec)
            # What was done is a fact whatever was asked meanwhile; the state only if still current.
            self.store.record_status(inst.scale_set, inst.instance_id, applied_reimage=inst.reimage_generation)
            self._status(
                inst,
                health="unknown",
                ready_at=None,
                boot_started_at=self.clock(),
                provisioning_state=ProvisioningState.UPDATING.value,
                message="",
            )
            self._record_action("reimage", "ok")
            return True  # the next pass boots it
        if lifecycle.in_pool(inst) and lifecycle.ready(inst):
            if inst.standby_state == lifecycle.TEMPLATE_BUILDER:
                return self.clones.make(inst)
            return self._stand_by(inst)
        if lifecycle.preparing(inst) and inst.origin == lifecycle.TEMPLATE_CLONE:
            return self._clone(inst, spec)
        if self._taken_from_pool(inst):
            return self._resume_from_pool(inst, spec)
        if inst.desired_power == "deallocated" or (
            inst.desired_power == "stopped" and self.inv.host(inst.host).domain_exists(inst.domain_name)
        ):
            # stop / deallocate: out of rotation first, then the guest shuts down (several passes).
            if not self.prov.shutdown_pending(inst):
                self.balancer.drain(inst.scale_set, inst.instance_id, self.cfg.drain_timeout_s)
            outcome = self.prov.converge_power(inst)
            if outcome is None:
                return False
            changed = self._status(
                inst, provisioning_state=ProvisioningState.SUCCEEDED.value, message="", skip_shutdown=False
            )
            if outcome:
                self.store.log_activity(
                    inst.scale_set,
                    inst.desired_power,
                    f"instance {inst.instance_id} {inst.desired_power}: {outcome}",
                    instances=[inst.instance_id],
                )
            return changed or bool(outcome)
        before = self.prov.power_state(inst)  # DEALLOCATED: no domain defined yet
        was_defined = before is not PowerState.DEALLOCATED
        self.prov.ensure_artifacts(inst, spec, defined=was_defined)
        if not was_defined:
            self._record_action("define_instance", "ok")
            before = PowerState.STOPPED  # what a domain just defined is
        restarting = inst.restart_generation > inst.applied_restart
        if restarting and before.active:
            # Azure's restart: the guest shuts down (ACPI), then starts again.
            if not self.prov.shutdown_pending(inst):
                self.balancer.drain(inst.scale_set, inst.instance_id, self.cfg.drain_timeout_s)
            outcome = self.prov.power_off(inst)
            if outcome is None:
                return False  # still shutting down: the next pass looks again
            if outcome:
                self.store.log_activity(
                    inst.scale_set,
                    "restart",
                    f"instance {inst.instance_id} restarting: {outcome}",
                    instances=[inst.instance_id],
                )
            self._record_action("restart_instance", "ok")
        elif restarting:
            # Already off (the guest obeyed the power button between two passes): settle the
            # shutdown asked of it, else the next restart would wait for this one's timeout.
            self.prov.power_off(inst)
        if (
            was_defined
            and not restarting
            and before is PowerState.STOPPED
            and inst.desired_power == "running"
            and inst.provisioning_state == ProvisioningState.SUCCEEDED.value
        ):
            # The domain was shut off outside localvmss (virsh destroy, a guest's poweroff).
            if repairs.applies(spec) and spec.health_probe is not None:
                # Not started here: it is unhealthy, and the automatic repair acts on it after
                # the grace period with the set's repairAction (a protected one stays off until
                # someone starts it).
                if inst.health == "unhealthy" and inst.message == STOPPED_OUTSIDE:
                    return False
                if not self._status(inst, health="unhealthy", message=STOPPED_OUTSIDE):
                    return True  # something was asked meanwhile: look again
                self.store.log_activity(
                    inst.scale_set,
                    "health",
                    f"instance {inst.instance_id} unhealthy: {STOPPED_OUTSIDE}; left to the automatic repair "
                    f"({spec.automatic_repairs.repair_action.value} after {spec.automatic_repairs.grace_period})",
                    instances=[inst.instance_id],
                )
                return True
            self.store.log_activity(
                inst.scale_set,
                "start",
                f"instance {inst.instance_id} found stopped outside localvmss: started again",
                instances=[inst.instance_id],
            )
        self.prov.converge_power(inst)
        changed = not was_defined
        if restarting:
            self.store.record_status(inst.scale_set, inst.instance_id, applied_restart=inst.restart_generation)
            changed = True
        if before is not PowerState.RUNNING and inst.desired_power == "running":
            self._record_action("start_instance", "ok")
            changed = True
        if inst.desired_power != "running":
            # Defined and not started (a Flexible VM created stopped): nothing to wait for.
            return self._status(inst, provisioning_state=ProvisioningState.SUCCEEDED.value, message="") or changed
        if spec.health_probe is None and inst.provisioning_state != ProvisioningState.SUCCEEDED.value:
            # Nothing to probe: running is ready.
            self._status(inst, provisioning_state=ProvisioningState.SUCCEEDED.value, ready_at=self.clock(), message="")
            return True
        return self._check_boot_timeout(inst) or changed

    # -- standby pool -----------------------------------------------------------------------
    def _stand_by(self, inst: InstanceRow) -> bool:
        """A healthy pool instance to its standby state: a member returned by a scale-in drains
        first and leaves the load balancer; then Paused (libvirt suspend), Saved (managed save)
        or left Running. Also puts back one found in another state (a restart, a resume by hand)."""
        host = self.inv.host(inst.host)
        state = StandbyState(str(inst.standby_state))
        if lifecycle.load_balanced(inst):
            self.balancer.drain(inst.scale_set, inst.instance_id, self.cfg.drain_timeout_s)
            # Out of the load balancer's member list: the next sync deletes its drained servers.
            self._status(inst, origin="")
            return True
        power = self.prov.power_state(inst)
        if state is StandbyState.PAUSED and power is not PowerState.PAUSED:
            if not power.active:
                host.start(inst.domain_name)
            host.suspend(inst.domain_name)
        elif state is StandbyState.SAVED and (power.active or not host.has_managed_save(inst.domain_name)):
            if not power.active:
                host.start(inst.domain_name)
            host.managed_save(inst.domain_name)
        elif state is StandbyState.RUNNING and power is not PowerState.RUNNING:
            host.start(inst.domain_name)
        elif inst.standby_at is not None:
            return False
        if inst.standby_at is None:
            took = self.clock() - lifecycle.boot_started(inst)
            if self._status(inst, standby_at=self.clock()):
                self.store.log_activity(
                    inst.scale_set,
                    "standby-pool",
                    f"instance {inst.instance_id} standing by ({state.value}), {took:.1f} s after its boot began",
                    instances=[inst.instance_id],
                )
                self._record_action(f"standby_{state.value.lower()}", "ok")
        return True

    @staticmethod
    def _taken_from_pool(inst: InstanceRow) -> bool:
        """A member a scale-out just took from the pool, not yet resumed with its clock set."""
        return lifecycle.preparing(inst) and inst.origin.startswith(lifecycle.FROM_POOL)

    def _resume_from_pool(self, inst: InstanceRow, spec: ScaleSetSpec) -> bool:
        """A member taken from the pool: resume it (or restore its saved memory), give its clock
        the host's time, probe it at once until healthy, and record it ready, so the very next
        pass puts it in the load balancer. What took how long goes to the activity log."""
        host = self.inv.host(inst.host)
        if not host.domain_exists(inst.domain_name):
            return self._status(inst, origin=lifecycle.COLD_BOOT)  # lost meanwhile: the normal path boots it
        started = time.monotonic()
        host.start(inst.domain_name)
        resumed = time.monotonic() - started
        clock = self._sync_clock(host, inst)
        state = inst.origin.removeprefix(lifecycle.FROM_POOL + " ").strip("()")
        return self._prepared_then_ready(
            inst,
            spec,
            "take_from_pool",
            lambda after, probe: (
                f"instance {inst.instance_id} from the {state} standby pool healthy {after:.2f} s after it was taken "
                f"(resume {resumed:.2f} s{clock}, first healthy probe {probe:.2f} s); it joins the load balancer now"
            ),
        )

    def _clone(self, inst: InstanceRow, spec: ScaleSetSpec) -> bool:
        """A new member restored from its host's warm template instead of booted, then probed
        at once; one that cannot be cloned safely boots cold (and the activity log says why)."""
        try:
            detail = self.clones.clone(inst, spec)
        except WarmCloneUnavailable as exc:
            self.store.log_activity(
                inst.scale_set,
                "scale-out",
                f"instance {inst.instance_id}: no warm clone ({exc.message}); booting it cold",
                instances=[inst.instance_id],
            )
            self._status(inst, origin=lifecycle.COLD_BOOT)
            return True
        return self._prepared_then_ready(
            inst,
            spec,
            "template_clone",
            lambda after, probe: (
                f"instance {inst.instance_id} restored from a warm template: healthy {after:.2f} s after its record "
                f"was made ({detail}; first healthy probe {probe:.2f} s); it joins the load balancer now"
            ),
        )

    def _prepared_then_ready(
        self, inst: InstanceRow, spec: ScaleSetSpec, action: str, describe: Callable[[float, float], str]
    ) -> bool:
        """After a resume or a restore has set the guest's clock (and identity): mark it
        prepared (from now on probes may judge it), probe it at once, and record it ready so the
        next pass puts it in the load balancer; ``describe(healthy_after_s, probe_s)`` is the
        activity-log line saying how long it took."""
        if not self._status(inst, prepared_at=self.clock()):
            return True  # something was asked meanwhile: look again
        probed = time.monotonic()
        if not self._probe_now(inst, spec):
            return True  # prepared: the health monitor probes it from now on (the boot timeout applies)
        now = self.clock()
        if self._status(
            inst, provisioning_state=ProvisioningState.SUCCEEDED.value, ready_at=now, health="healthy", message=""
        ):
            after = now - lifecycle.boot_started(inst)
            self.store.log_activity(
                inst.scale_set, "scale-out", describe(after, time.monotonic() - probed), instances=[inst.instance_id]
            )
            self._record_action(action, "ok")
        return True

    def _probe_now(self, inst: InstanceRow, spec: ScaleSetSpec) -> bool:
        """Probe a just-resumed or just-restored instance until healthy (up to RESUME_PROBE_S),
        so it joins the load balancer on the very next pass rather than the monitor's next round."""
        if spec.health_probe is None:
            return True
        started = time.monotonic()
        while time.monotonic() - started < RESUME_PROBE_S:
            if probe_once(inst.ip, spec.health_probe, timeout_s=1.0).healthy:
                return True
            time.sleep(RESUME_PROBE_EVERY_S)
        return False

    def _sync_clock(self, host: Any, inst: InstanceRow) -> str:
        """The guest's clock stood still while it was paused or saved: set it to the host's time
        through the guest channel. Returns what to log (a guest without the channel, defined by
        an older localvmss, is resumed all the same and the log says its clock was not set)."""
        try:
            skew = host.sync_clock(inst.domain_name)
        except LocalVMSSError as exc:
            log.warning("%s: clock not set after resume: %s", inst.domain_name, exc.message)
            return "; clock not set: " + exc.message
        return f", clock set (skew after {skew * 1000:+.0f} ms)"

    def _terminate_notice(self, inst: InstanceRow, spec: ScaleSetSpec) -> bool:
        """What comes before deleting ``inst`` (``terminate.before_delete`` decides): True once
        the deletion may go ahead. Sending the notice drains the instance first; the wait never
        blocks a worker (False: a later pass, or the guest's acknowledgement, looks again)."""
        profile = spec.terminate_notification
        events = self.store.scheduled_events(inst.scale_set, inst.instance_id)
        stored = next((e for e in events if e.event_type == terminate.EVENT_TYPE), None)
        now = self.clock()
        scale_in = inst.delete_reason == terminate.SCALE_IN
        extra = inst.delete_reason in (terminate.OVERPROVISION, terminate.STANDBY)
        running = True
        if profile.enable and not extra and not (spec.force_deletion and scale_in):
            running = self.prov.power_state(inst) is PowerState.RUNNING  # only a running guest can read it
        decision = terminate.before_delete(
            enabled=profile.enable,
            force_deletion=spec.force_deletion,
            scale_in=scale_in,
            notice=terminate.Notice(stored.created_at, stored.not_before, stored.acknowledged_at) if stored else None,
            now=now,
            guest_running=running,
            overprovisioned=extra,
        )
        if decision.step is terminate.Step.WAIT:
            return False
        if decision.step is terminate.Step.DELETE:
            if decision.outcome:
                what = f"terminate notice {stored.event_id} sent to {stored.resource} " if stored else ""
                self.store.log_activity(
                    inst.scale_set,
                    "terminate-notice",
                    f"instance {inst.instance_id}: {what}{decision.outcome}",
                    instances=[inst.instance_id],
                )
            return True
        # Out of rotation first: the guest is told only once no new connection reaches it.
        self.balancer.drain(inst.scale_set, inst.instance_id, self.cfg.drain_timeout_s)
        timeout_s = check_not_before_timeout(profile.not_before_timeout)
        now = self.clock()
        event = self.store.schedule_event(
            ScheduledEventRow(
                event_id=str(uuid.uuid4()),
                scale_set=inst.scale_set,
                instance_id=inst.instance_id,
                event_type=terminate.EVENT_TYPE,
                resource=computer_name(spec, inst),
                created_at=now,
                not_before=terminate.not_before(now, timeout_s),
            )
        )
        self.store.log_activity(
            inst.scale_set,
            "terminate-notice",
            f"instance {inst.instance_id}: terminate notice sent to {event.resource} (EventId {event.event_id}, "
            f"NotBefore {terminate.rfc1123(event.not_before)})",
            instances=[inst.instance_id],
        )
        self._record_action("terminate_notice", "ok")
        return False

    def _redeploy(self, inst: InstanceRow, spec: ScaleSetSpec) -> bool:
        """Azure's redeploy, over several passes: out of rotation, a graceful shutdown, then the
        instance moves to another host of its zone that has room (or starts again where it was),
        its disk copied through libvirt; id, name and NAT port stay. Crash-safe: the target is
        recorded before the copy, the move is one store transaction, and what is left on the old
        host is an orphan of no record there."""
        if not self.prov.shutdown_pending(inst):
            self.balancer.drain(inst.scale_set, inst.instance_id, self.cfg.drain_timeout_s)
        outcome = self.prov.power_off(inst)
        if outcome is None:
            return False  # still shutting down: the next pass looks again
        target = inst.redeploy_target or self._redeploy_host(inst, spec)
        if target == inst.host:
            self.store.move_instance(
                inst.scale_set,
                inst.instance_id,
                inst.host,
                lambda _db: (inst.mac, inst.ip),
                inst.redeploy_generation,
                lambda _ip: f"instance {inst.instance_id} restarted on {inst.host}: no other host of its zone has room",
            )
            return True
        if inst.redeploy_target != target and not self._status(inst, redeploy_target=target):
            return True  # something else was asked meanwhile: look again
        source, dest = self.inv.host(inst.host), self.inv.host(target)
        image = str(inst.overrides.get("image") or spec.image)
        manifest, image_dir = self.inv.image(image)
        self.inv.ensure_image(target, image, manifest, image_dir)  # the disk's backing image, first
        staging = self.cfg.state_dir / "redeploy"
        staging.mkdir(parents=True, exist_ok=True)
        copy = staging / os_volume(inst)
        try:
            size = source.download_volume(self.cfg.pool_name, os_volume(inst), str(copy))
            dest.upload_file(self.cfg.pool_name, os_volume(inst), str(copy), "qcow2")
        finally:
            copy.unlink(missing_ok=True)
        # An address belongs to its host's network (each host has its own DHCP range), so the
        # instance takes one of the new host's network; on its own host it keeps its own.
        self.store.move_instance(
            inst.scale_set,
            inst.instance_id,
            target,
            lambda db: self.alloc.address(db, target),
            inst.redeploy_generation,
            lambda ip: (
                f"instance {inst.instance_id} redeployed from {inst.host} to {target} ({size >> 20} MiB disk moved; "
                f"address {inst.ip} -> {ip}, NAT port {inst.nat_port} kept)"
            ),
        )
        self._record_action("redeploy", "ok")
        # The old host's clean-up; if it fails, what is left there is an orphan of no record.
        source.undefine(inst.domain_name)
        self.inv.delete_volume(inst.host, os_volume(inst))
        self.inv.delete_volume(inst.host, seed_volume(inst))
        self.inv.release(inst.host, inst.mac)
        return True  # the next pass defines and boots it on the new host

    def _redeploy_host(self, inst: InstanceRow, spec: ScaleSetSpec) -> str:
        """Another available host of the instance's zone with room for it (most free memory
        first); the instance's own host when there is none."""
        need = lifecycle.memory_mib(inst, spec) << 20
        best: tuple[int, str] | None = None
        for host in self.inv.available():
            if host == inst.host or (inst.zone is not None and self.inv.zone_of(host) != inst.zone):
                continue
            try:
                free = int(self.inv.capacity(host).free_memory_bytes * self.cfg.memory_overcommit)
            except LocalVMSSError:
                continue
            if free >= need and (best is None or free > best[0]):
                best = (free, host)
        return best[1] if best else inst.host

    def _status(self, inst: InstanceRow, **changes: object) -> bool:
        """Record what was observed, only where it differs and only if the instance's intent is
        still the one ``inst`` was read with; True if something was written."""
        differ = {k: v for k, v in changes.items() if getattr(inst, k) != v}
        if not differ:
            return False
        return self.store.record_status(inst.scale_set, inst.instance_id, inst.generation, **differ)

    def _check_boot_timeout(self, inst: InstanceRow) -> bool:
        if inst.provisioning_state not in (ProvisioningState.CREATING.value, ProvisioningState.UPDATING.value):
            return False
        started = inst.boot_started_at or inst.created_at
        if self.clock() - started < self.cfg.boot_timeout_s or inst.ready_at is not None:
            return False
        return self._status(
            inst,
            provisioning_state=ProvisioningState.FAILED.value,
            message=f"not healthy within {self.cfg.boot_timeout_s:.0f} s of creation; see the serial console log",
        )

    # -- set-level state and load balancer ---------------------------------------------------
    def _finish_sets(self, sets: dict[str, ScaleSetRow], alive: dict[str, bool]) -> None:
        for name, row in sets.items():
            if row.deleting:
                continue
            instances = self.store.instances(name)
            spec = row.spec
            members = [i for i in instances if not lifecycle.in_pool(i)]
            states = {i.provisioning_state for i in members}
            live = [i for i in members if i.provisioning_state != ProvisioningState.DELETING.value]
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
                self.store.record_set_status(name, **changes)
            if spec.load_balancer:
                try:
                    self.balancer.sync(name, spec, [i for i in instances if lifecycle.load_balanced(i)])
                except LocalVMSSError as exc:
                    log.warning("load balancer sync of %s: %s", name, exc.message)


def scale_slot(inst: InstanceRow, failing_first: bool = False) -> planner.Slot:
    """What a scale plan needs of an instance: its placement and protection, whether it counts
    as unhealthy for scale-in (``failing_first``: also when its health is unknown, as a guest
    that died with its host is), and (an overprovisioning candidate) since when it is ready."""
    unhealthy = lifecycle.unhealthy_for_scale_in(inst) or (failing_first and inst.health in lifecycle.FAILING_HEALTH)
    return slot(
        inst,
        healthy=not unhealthy,
        candidate=inst.overprovisioned,
        ready_at=inst.ready_at if lifecycle.ready(inst) else None,
    )


def _reusable(inst: InstanceRow, set_version: int) -> bool:
    """A scale-in victim reuseOnScaleIn may return to the pool: healthy and of the current model."""
    return lifecycle.ready(inst) and not lifecycle.outdated(inst, set_version)


def _homes(inst: InstanceRow) -> list[tuple[str, str, int]]:
    """(host, set, id) where the instance's objects may rightly be: its host, and the host a
    redeploy is copying its disk to."""
    homes = [(inst.host, inst.scale_set, inst.instance_id)]
    if inst.redeploy_target:
        homes.append((inst.redeploy_target, inst.scale_set, inst.instance_id))
    return homes
