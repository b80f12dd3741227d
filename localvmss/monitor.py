"""Health monitor: probes running instances and records their health; automatic repair.

Readiness: an instance in Creating/Updating becomes Succeeded on its first healthy probe.
Health: ``healthy`` after one good probe, ``unhealthy`` after ``FAILS_TO_UNHEALTHY`` bad ones.
Repair (Azure's automatic instance repairs): an instance unhealthy for longer than the set's
grace period is reimaged (a fresh disk from the base image, same id and address).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from localvmss import lifecycle
from localvmss.health import probe_once
from localvmss.model import ProvisioningState
from localvmss.spec import ScaleSetSpec, check_iso_duration
from localvmss.store import InstanceRow, Store

log = logging.getLogger(__name__)

FAILS_TO_UNHEALTHY = 2


class HealthMonitor:
    def __init__(self, store: Store, interval_s: float, on_change: Callable[[], None]) -> None:
        self.store = store
        self.interval_s = interval_s
        self.on_change = on_change
        self._fails: dict[tuple[str, int], int] = {}
        self._unhealthy_since: dict[tuple[str, int], float] = {}
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="probe")

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.probe_pass()
            except Exception:
                log.exception("health pass failed")
            stop.wait(self.interval_s)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def probe_pass(self) -> None:
        specs = {s.name: s.spec for s in self.store.scale_sets() if not s.deleting}
        targets = [
            i for i in self.store.instances() if i.scale_set in specs and lifecycle.to_probe(i, specs[i.scale_set])
        ]

        def probe(inst: InstanceRow) -> tuple[InstanceRow, tuple[bool, str]]:
            model = specs[inst.scale_set].health_probe
            assert model is not None  # filtered above
            try:
                return inst, probe_once(inst.ip, model)
            except Exception as exc:  # noqa: BLE001 - one instance's probe must not end the pass
                return inst, (False, f"probe could not be made: {type(exc).__name__}: {exc}")

        results = self._pool.map(probe, targets)
        changed = False
        for inst, (ok, seen) in results:
            try:
                changed |= self._record(inst, ok, seen, specs[inst.scale_set])
            except Exception:  # noqa: BLE001 - the other instances are still recorded
                log.exception("recording the health of %s failed", inst.domain_name)
        if changed:
            self.on_change()

    def _record(self, inst: InstanceRow, ok: bool, seen: str, spec: ScaleSetSpec) -> bool:
        key = (inst.scale_set, inst.instance_id)
        now = time.time()
        if ok:
            self._fails.pop(key, None)
            self._unhealthy_since.pop(key, None)
            changes: dict[str, object] = {}
            if inst.health != "healthy":
                changes["health"] = "healthy"
            if inst.provisioning_state in (ProvisioningState.CREATING.value, ProvisioningState.UPDATING.value):
                changes.update(provisioning_state=ProvisioningState.SUCCEEDED.value, ready_at=now, message="")
            if changes:
                # Only if nothing was asked of the instance since this probe's snapshot (a
                # delete or restart meanwhile must not be overwritten by "ready").
                return self.store.record_status(inst.scale_set, inst.instance_id, inst.generation, **changes)
            return False
        fails = self._fails.get(key, 0) + 1
        self._fails[key] = fails
        if inst.provisioning_state != ProvisioningState.SUCCEEDED.value:
            return False  # still booting: not ready is not unhealthy
        if fails >= FAILS_TO_UNHEALTHY and inst.health != "unhealthy":
            self._unhealthy_since[key] = now
            if not self.store.record_status(
                inst.scale_set, inst.instance_id, inst.generation, health="unhealthy", message=seen[:500]
            ):
                return False
            self.store.log_activity(
                inst.scale_set, "health", f"instance {inst.instance_id} unhealthy: {seen}", instances=[inst.instance_id]
            )
            return True
        since = self._unhealthy_since.setdefault(key, now) if inst.health == "unhealthy" else None
        if since is not None:
            grace = check_iso_duration(spec.automatic_repairs.grace_period, "gracePeriod")
            if lifecycle.to_repair(inst, spec, now - since, grace):
                self._unhealthy_since.pop(key, None)
                self._fails.pop(key, None)
                self.store.update_instance(
                    inst.scale_set, inst.instance_id, reimage_generation=inst.reimage_generation + 1
                )
                self.store.log_activity(
                    inst.scale_set,
                    "repair",
                    f"instance {inst.instance_id} unhealthy for {now - since:.0f} s ({seen}): reimaging it",
                    instances=[inst.instance_id],
                )
                return True
        return False
