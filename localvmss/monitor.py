"""Health monitor: probes running instances, records their rich health state, and applies the
automatic repairs that ``localvmss.repairs`` decides.

Health (Azure's Application Health extension, rich states), in the ``health`` column:
``initializing`` while a failing probe is inside the grace period after a (re)boot and the
instance was not yet healthy; ``healthy`` after one good probe; ``unhealthy`` (the application
said so) or ``unknown`` (nothing answered) after ``FAILS_TO_UNHEALTHY`` bad probes past it.
Readiness: an instance in Creating/Updating becomes Succeeded on its first healthy probe.
Repairs: Replace (delete it; the set, below capacity, creates a new one), Restart or Reimage,
each through the lifecycle table, each with a "repair" activity-log entry; the rate cap and the
self-suspension are ``repairs.plan``'s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from localvmss import lifecycle, repairs
from localvmss.errors import Conflict, NotFound, StoreError
from localvmss.health import ProbeResult, probe_many
from localvmss.model import ProvisioningState
from localvmss.spec import ScaleSetSpec
from localvmss.store import InstanceRow, ScaleSetRow, Store

log = logging.getLogger(__name__)

FAILS_TO_UNHEALTHY = 2
REPAIR_ACTIONS = {"Replace": "delete", "Restart": "restart", "Reimage": "reimage"}


class HealthMonitor:
    def __init__(
        self, store: Store, interval_s: float, on_change: Callable[[], None], clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.interval_s = interval_s
        self.on_change = on_change
        self.clock = clock
        self._fails: dict[tuple[str, int], int] = {}
        # When each instance was first seen unhealthy/unknown past Initializing. Only in memory:
        # after a daemon restart the grace simply starts again (a repair waits, never hurries).
        self._failing_since: dict[tuple[str, int], float] = {}

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.probe_pass()
            except Exception:
                log.exception("health pass failed")
            stop.wait(self.interval_s)

    def probe_pass(self) -> None:
        rows = {s.name: s for s in self.store.scale_sets() if not s.deleting}
        specs = {name: row.spec for name, row in rows.items()}
        targets = [
            i for i in self.store.instances() if i.scale_set in specs and lifecycle.to_probe(i, specs[i.scale_set])
        ]

        asked = []
        for inst in targets:
            model = specs[inst.scale_set].health_probe
            assert model is not None  # filtered above
            asked.append((inst.ip, model))
        recorded: set[int] = set()

        def became_healthy(index: int, result: ProbeResult) -> None:
            """An instance seen healthy for the first time is recorded (and the load balancer
            told) at once, not when the round's slowest probe ends: a guest still booting has
            no address on the wire, so its probe waits its whole timeout."""
            inst = targets[index]
            if result.healthy and inst.health != "healthy":
                recorded.add(index)
                if self.record_results([(inst, result)], specs):
                    self.on_change()

        try:
            # All at once from this thread (one selector; a probe that cannot be made is unknown).
            results = list(zip(targets, probe_many(asked, on_result=became_healthy), strict=True))
        except Exception as exc:  # noqa: BLE001 - a bug in probing must not stop the repairs below
            log.exception("health probes failed")
            unknown = ProbeResult("unknown", f"probe could not be made: {type(exc).__name__}: {exc}")
            results = [(inst, unknown) for inst in targets]
        changed = self.record_results([r for i, r in enumerate(results) if i not in recorded], specs)
        probed = {(i.scale_set, i.instance_id) for i in targets}
        for key in [k for k in self._failing_since if k not in probed]:
            del self._failing_since[key]  # no longer probed (stopped, being changed, gone)
        for name, row in rows.items():
            if repairs.applies(row.spec):
                try:
                    changed |= self._repair_set(row)
                except Exception:  # noqa: BLE001 - the other sets are still repaired
                    log.exception("automatic repairs of %s failed", name)
        if changed:
            self.on_change()

    # -- health ---------------------------------------------------------------------------
    def record_results(self, results: list[tuple[InstanceRow, ProbeResult]], specs: dict[str, ScaleSetSpec]) -> bool:
        """Record a round of probe results in one store transaction (one commit, not two per
        instance that became ready): each write is a savepoint of it, so one that fails is
        undone alone and the other instances are still recorded. A crash before the commit
        loses only observations, which the next round makes again. True if anything changed."""
        changed = False
        try:
            with self.store.transaction():
                for inst, result in results:
                    try:
                        changed |= self._record(inst, result, specs[inst.scale_set])
                    except Exception:  # noqa: BLE001 - the other instances are still recorded
                        log.exception("recording the health of %s failed", inst.domain_name)
        except StoreError as exc:
            log.warning("recording a round of health probes failed: %s", exc.message)
            return False
        return changed

    def _record(self, inst: InstanceRow, result: ProbeResult, spec: ScaleSetSpec) -> bool:
        key = (inst.scale_set, inst.instance_id)
        now = self.clock()
        if result.healthy:
            self._fails.pop(key, None)
            self._failing_since.pop(key, None)
            changes: dict[str, object] = {}
            if inst.health != "healthy":
                changes["health"] = "healthy"
            if inst.provisioning_state in (ProvisioningState.CREATING.value, ProvisioningState.UPDATING.value):
                changes.update(provisioning_state=ProvisioningState.SUCCEEDED.value, ready_at=now, message="")
            if not changes:
                return False
            # Only if nothing was asked of the instance since this probe's snapshot (a delete or
            # restart meanwhile must not be overwritten by "ready").
            if not self.store.record_status(inst.scale_set, inst.instance_id, inst.generation, **changes):
                return False
            if inst.origin == lifecycle.COLD_BOOT and inst.provisioning_state == ProvisioningState.CREATING.value:
                # Where it came from and how long it took, as the pool and clone paths say it.
                self.store.log_activity(
                    inst.scale_set,
                    "ready",
                    f"instance {inst.instance_id} (cold boot) healthy {now - lifecycle.boot_started(inst):.2f} s "
                    "after its record was made",
                    instances=[inst.instance_id],
                )
            return True
        fails = self._fails.get(key, 0) + 1
        self._fails[key] = fails
        if lifecycle.initializing(inst, spec, now):
            self._fails.pop(key, None)  # leaving Initializing takes FAILS_TO_UNHEALTHY more
            if inst.health == "initializing":
                return False
            return self.store.record_status(inst.scale_set, inst.instance_id, inst.generation, health="initializing")
        if inst.health in lifecycle.FAILING_HEALTH and key in self._failing_since:
            # Already failing: keep its first cause, except that an answer saying "unhealthy"
            # is more than "nothing answered".
            if inst.health == "unknown" and result.state == "unhealthy":
                return self.store.record_status(
                    inst.scale_set, inst.instance_id, inst.generation, health="unhealthy", message=result.seen[:500]
                )
            return False
        if inst.health == "unhealthy":
            # Recorded by someone else (the reconciler: the domain stopped outside localvmss).
            self._failing_since.setdefault(key, now)
            return False
        if fails < FAILS_TO_UNHEALTHY:
            return False
        if not self.store.record_status(
            inst.scale_set, inst.instance_id, inst.generation, health=result.state, message=result.seen[:500]
        ):
            return False
        self._failing_since[key] = now
        self.store.log_activity(
            inst.scale_set,
            "health",
            f"instance {inst.instance_id} {result.state}: {result.seen}",
            instances=[inst.instance_id],
        )
        return True

    # -- repairs --------------------------------------------------------------------------
    def _repair_set(self, row: ScaleSetRow) -> bool:
        now = self.clock()
        instances = self.store.instances(row.name)
        failing = {iid: since for (name, iid), since in self._failing_since.items() if name == row.name}
        state = self._count_successes(row.name, repairs.RepairsState.from_json(row.repairs_state), instances)
        decision = repairs.plan(row.spec, instances, failing, state, now)
        if decision.suspend is not None:
            reason = decision.suspend

            def suspend(stored: dict[str, Any]) -> tuple[dict[str, Any], str | None] | None:
                current = repairs.RepairsState.from_json(stored)
                if current.state != repairs.RUNNING:
                    return None  # suspended meanwhile (by a person)
                return repairs.suspended(current, reason, now).to_json(), f"automatic repairs suspended: {reason}"

            if self.store.change_repairs_state(row.name, suspend) is not None:
                log.warning("%s: automatic repairs suspended: %s", row.name, reason)
            return False
        if not decision.repairs:
            return False
        by_id = {i.instance_id: i for i in instances}
        done = 0
        for repair in decision.repairs:
            if self._apply(row, by_id[repair.instance_id], repair, now):
                done += 1
                self._failing_since.pop((row.name, repair.instance_id), None)
                self._fails.pop((row.name, repair.instance_id), None)
        if done:

            def count(stored: dict[str, Any]) -> tuple[dict[str, Any], str | None] | None:
                return repairs.after_repairs(repairs.RepairsState.from_json(stored), done, now).to_json(), None

            self.store.change_repairs_state(row.name, count)
        return done > 0

    def _count_successes(
        self, name: str, state: repairs.RepairsState, instances: list[InstanceRow]
    ) -> repairs.RepairsState:
        """A healthy instance that (re)booted after the set's last repair: the repairs work, and
        the count of failed ones starts again."""
        for inst in instances:
            new = repairs.after_healthy(state, inst) if inst.health == "healthy" else None
            if new is None:
                continue

            def change(stored: dict[str, Any], inst: InstanceRow = inst) -> tuple[dict[str, Any], str | None] | None:
                fresh = repairs.after_healthy(repairs.RepairsState.from_json(stored), inst)
                return None if fresh is None else (fresh.to_json(), None)

            self.store.change_repairs_state(name, change)
            return new
        return state

    def _apply(self, row: ScaleSetRow, inst: InstanceRow, repair: repairs.Repair, now: float) -> bool:
        """One repair, through the lifecycle table (its protection and state checks included)."""
        verb = REPAIR_ACTIONS[repair.action]
        try:
            changes = lifecycle.request(lifecycle.find_action(verb), inst, model_version=row.model_version, now=now)
            self.store.update_instance(row.name, inst.instance_id, **changes)
        except (Conflict, NotFound) as exc:
            log.info("%s: repair of instance %s skipped: %s", row.name, inst.instance_id, exc)
            return False
        what = {"Replace": "replacing it", "Restart": "restarting it", "Reimage": "reimaging it"}[repair.action]
        self.store.log_activity(
            row.name,
            "repair",
            f"instance {inst.instance_id} {repair.reason}: {repair.action}, {what}",
            details={"action": repair.action},
            instances=[inst.instance_id],
        )
        log.info("%s: repair (%s) of instance %s: %s", row.name, repair.action, inst.instance_id, repair.reason)
        return True
