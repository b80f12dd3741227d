"""Rolling upgrades carried out: starts, cancels and steps the rollouts ``rollout`` decides.

The service starts and cancels rollouts (``rolling-upgrade start|cancel``); the reconciler
calls ``step`` once a pass for every Uniform set with Rolling policy or a rollout under way,
and every step is written to the store before anything acts on it, so a daemon restart
resumes a rollout where it was. A set with Rolling policy starts a rollout by itself when its
model changes; a version whose rollout ended (completed, faulted, cancelled or rolled back) is
not started again by itself, so a rollback never loops into a roll-forward.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from localvmss import lifecycle, rollout
from localvmss.allocation import Allocator
from localvmss.capacity import CapacityRule
from localvmss.errors import Conflict, LocalVMSSError, NotSupported
from localvmss.lifecycle import find_action
from localvmss.model import OrchestrationMode, ProvisioningState, UpgradeMode
from localvmss.plans import Plan
from localvmss.rollout import Decision, Member, State, Status, Step
from localvmss.spec import ScaleSetSpec, check_iso_duration
from localvmss.store import InstanceRow, RolloutRow, ScaleSetRow, Store

log = logging.getLogger(__name__)

POLICY_ACTOR = "upgradePolicy Rolling"


def members(instances: list[InstanceRow], spec: ScaleSetSpec, now: float) -> dict[int, Member]:
    return {
        i.instance_id: Member(
            i.instance_id,
            i.model_version,
            rollout.standing(i, spec, now),
            busy=lifecycle.changing(i),
            replaced_by=i.replaced_by,
        )
        for i in instances
        if i.provisioning_state != ProvisioningState.DELETING.value
    }


class Upgrades:
    def __init__(
        self,
        store: Store,
        allocator: Allocator,
        capacity: CapacityRule | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.alloc = allocator
        self.capacity = capacity
        self.clock = clock

    # -- what the service asks -------------------------------------------------------------
    def preview(self, name: str) -> Plan:
        """What ``start`` would do now (``rolling-upgrade start --what-if``)."""
        row = self._uniform(name)
        return self._plan(row)[0]

    def _plan(self, row: ScaleSetRow) -> tuple[Plan, list[list[int]]]:
        instances = self.store.instances(row.name)
        now = self.clock()
        standing = members(instances, row.spec, now)
        unhealthy = {i for i, m in standing.items() if m.standing is rollout.Standing.UNHEALTHY}
        return rollout.plan(row.name, instances, row.spec, row.model_version, unhealthy)

    def start(self, name: str, actor: str) -> RolloutRow:
        row = self._uniform(name)
        latest = self.store.latest_rollout(name)
        if latest is not None and Status(latest.status).active:
            raise Conflict(
                f"a rolling upgrade of {name!r} to model version {latest.to_version} is {latest.status}; "
                "cancel it first ('rolling-upgrade cancel')"
            )
        plan, batches = self._plan(row)
        outdated = [
            i
            for i in self.store.instances(name)
            if lifecycle.outdated(i, row.model_version) and not lifecycle.in_pool(i)  # the pool renews its own
        ]
        versions = [i.model_version for i in outdated]
        from_version = max(set(versions), key=versions.count) if versions else row.model_version
        state = State(batches=batches)
        status = Status.ROLLING_FORWARD if batches else Status.COMPLETED
        ro = self.store.insert_rollout(name, from_version, row.model_version, status.value, actor, state.to_json())
        if not batches:
            reason = f"nothing to upgrade: {'; '.join(c.reason for c in plan.changes) or 'no instances'}"
            self.store.update_rollout(ro.id, ended_at=self.clock(), reason=reason)
        self.store.log_activity(
            name,
            "rollingUpgrade",
            f"rolling upgrade to model version {row.model_version} started by {actor or 'unknown'}: "
            f"{len(batches)} batch(es) {batches}; " + "; ".join(plan.notes),
            instances=[i for b in batches for i in b],
        )
        return self.store.rollouts(name, rollout_id=ro.id)[0]

    def cancel(self, name: str, actor: str) -> RolloutRow:
        self._uniform(name)
        ro = self.store.latest_rollout(name)
        if ro is None or not Status(ro.status).active:
            raise Conflict(f"no rolling upgrade of {name!r} is running")
        if ro.status == Status.ROLLING_BACK.value:
            raise Conflict(f"the rolling upgrade of {name!r} is rolling back; a rollback cannot be cancelled")
        state = State.from_json(ro.state)
        state.cancel = True
        self.store.update_rollout(ro.id, state=state.to_json(), reason=f"cancel requested by {actor or 'unknown'}")
        self.store.log_activity(name, "rollingUpgrade", f"cancel of the rolling upgrade requested by {actor}")
        return self.store.rollouts(name, rollout_id=ro.id)[0]

    def _uniform(self, name: str) -> ScaleSetRow:
        row = self.store.scale_set(name)
        if row.mode != OrchestrationMode.UNIFORM.value:
            raise NotSupported("rolling upgrades are not supported in VM (Flexible) orchestration mode")
        if row.deleting:
            raise Conflict(f"scale set {name!r} is being deleted")
        return row

    def view(self, ro: RolloutRow, instances: list[InstanceRow], spec: ScaleSetSpec) -> dict[str, Any]:
        """Azure's RollingUpgradeStatusInfo, with what localvmss knows beyond it."""
        state = State.from_json(ro.state)
        policy = spec.upgrade_policy.rolling_upgrade_policy
        progress = rollout.progress(state, members(instances, spec, self.clock()), ro.to_version)
        running: dict[str, Any] = {
            "code": ro.status,
            "startTime": _iso(ro.started_at),
            "lastAction": "Cancel" if state.cancel else "Start",
        }
        if ro.ended_at is not None:
            running["endTime"] = _iso(ro.ended_at)
        props: dict[str, Any] = {
            "policy": policy.model_dump(by_alias=True),
            "runningStatus": running,
            "progress": progress,
            "fromModelVersion": ro.from_version,
            "toModelVersion": ro.to_version,
            "startedBy": ro.actor,
            "reason": ro.reason,
            "batches": [{"instanceIds": [str(i) for i in b]} for b in state.batches],
        }
        if state.rollback or state.rolled_back:
            props["rollbackInfo"] = {
                "successfullyRolledbackInstanceCount": len(state.rolled_back),
                "failedRolledbackInstanceCount": len(state.rollback_failed),
            }
        if ro.status in (Status.FAULTED.value, Status.ROLLED_BACK.value, Status.ROLLING_BACK.value):
            props["error"] = {"code": "RollingUpgradePolicyBreach", "message": ro.reason}
        return {"id": f"/scaleSets/{ro.scale_set}/rollingUpgrades/{ro.id}", "properties": props}

    # -- what the reconciler asks, once a pass ----------------------------------------------
    def step(self, row: ScaleSetRow, alive: dict[str, bool]) -> None:
        spec = row.spec
        latest = self.store.latest_rollout(row.name)
        if latest is None or not Status(latest.status).active:
            if spec.upgrade_policy.mode is not UpgradeMode.ROLLING:
                return
            if latest is not None and latest.to_version == row.model_version:
                return  # that version's rollout ended: only a new model or 'start' tries again
            if not any(
                lifecycle.outdated(i, row.model_version) and not lifecycle.in_pool(i)
                for i in self.store.instances(row.name)
            ):
                return
            latest = self.start(row.name, POLICY_ACTOR)
            if not Status(latest.status).active:
                return
        ro = latest
        state = State.from_json(ro.state)
        if ro.status == Status.ROLLING_FORWARD.value and ro.to_version != row.model_version and not state.cancel:
            state.cancel = True  # superseded: finish the batch in flight, then stop
            self.store.update_rollout(
                ro.id, state=state.to_json(), reason=f"superseded by model version {row.model_version}"
            )
        instances = self.store.instances(row.name)
        policy = spec.upgrade_policy.rolling_upgrade_policy
        now = self.clock()
        decision = rollout.decide(
            state,
            members(instances, spec, now),
            policy,
            status=Status(ro.status),
            to_version=ro.to_version,
            from_version=ro.from_version,
            pause_s=check_iso_duration(policy.pause_time_between_batches, "pauseTimeBetweenBatches"),
            bake_s=check_iso_duration(policy.bake_time, "bakeTime"),
            now=now,
        )
        self._apply(ro, row, decision, {i.instance_id: i for i in instances}, alive)

    def _apply(
        self,
        ro: RolloutRow,
        row: ScaleSetRow,
        d: Decision,
        by_id: dict[int, InstanceRow],
        alive: dict[str, bool],
    ) -> None:
        state, name = d.state, row.name
        batch_no = f"batch {state.next} of {len(state.batches)}"
        if d.step is Step.UPGRADE:
            self._reimage(name, [by_id[i] for i in d.ids], ro.to_version, state)
            self._log(
                name,
                f"rolling upgrade of instances {list(d.ids)} to model version {ro.to_version} ({batch_no}, in place)",
                d.ids,
            )
        elif d.step is Step.SURGE:
            in_place = self._surge(row, [by_id[i] for i in d.ids], ro.to_version, state, alive)
            if in_place:
                self._reimage(name, [by_id[i] for i in in_place], ro.to_version, state)
            made = {o: n for o, n in state.surge.items() if o in d.ids}
            self._log(
                name,
                f"rolling upgrade of instances {list(d.ids)} to model version {ro.to_version} ({batch_no}, "
                f"surge: new instances {made}"
                + (f"; {in_place} in place, no room for a surge instance" if in_place else "")
                + ")",
                [*d.ids, *made.values()],
            )
        elif d.step is Step.RETIRE:
            for iid in d.ids:
                self.store.update_instance(name, iid, provisioning_state=ProvisioningState.DELETING.value)
            for iid in d.restore:
                self.store.update_instance(name, iid, replaced_by=None)
            self._log(name, f"rolling upgrade: {d.reason}", [*d.ids, *d.restore])
        elif d.step is Step.REVERT:
            targets = [by_id[i] for i in d.ids]
            for inst in targets:
                version = state.previous.get(inst.instance_id, ro.from_version)
                self._reimage(name, [inst], version, None)
            self._log(name, f"rolling upgrade: {d.reason}", d.ids)
        elif d.step is Step.REVERT_MODEL:
            self.store.revert_model(
                name,
                ro.from_version,
                f"the model of {name} returns to version {ro.from_version}: {d.reason}",
            )
        changes: dict[str, Any] = {}
        if state.to_json() != ro.state:
            changes["state"] = state.to_json()
        if d.status is not None and d.status.value != ro.status:
            changes["status"] = d.status.value
            if not d.status.active:
                changes["ended_at"] = self.clock()
        if d.reason and d.reason != ro.reason:
            changes["reason"] = d.reason
        if changes:
            self.store.update_rollout(ro.id, **changes)
        if d.status is not None and d.status.value != ro.status:
            kind = "rollingUpgrade"
            message = f"rolling upgrade to model version {ro.to_version} {d.status.value}: {d.reason}"
            self.store.log_activity(name, kind, message, instances=[*state.succeeded, *state.failed])
            log.log(
                logging.INFO if d.status in (Status.COMPLETED, Status.ROLLING_BACK) else logging.WARNING,
                "%s: %s",
                name,
                message,
            )

    def _reimage(self, name: str, targets: list[InstanceRow], version: int, state: State | None) -> None:
        """A rollout's reimage: the action table's reimage, to ``version``; protection was
        checked when the plan was made."""
        action = find_action("reimage")
        now = self.clock()
        for inst in targets:
            changes = lifecycle.request(action, inst, model_version=version, now=now)
            self.store.update_instance(name, inst.instance_id, **changes)
            if state is not None:
                state.previous.setdefault(inst.instance_id, inst.model_version)

    def _surge(
        self, row: ScaleSetRow, olds: list[InstanceRow], version: int, state: State, alive: dict[str, bool]
    ) -> list[int]:
        """A new instance (new version, the same zone, fault and update domain) for each old one,
        admitted like any new instance; returns the ids that get no surge instance (no host, no
        room, no NAT port) and so are upgraded in place."""
        spec = row.spec
        in_place: list[int] = []
        try:
            if self.capacity is not None:
                self.capacity.admit(spec, len(olds))
        except LocalVMSSError as exc:
            log.warning("%s: no room for %d surge instance(s): %s", row.name, len(olds), exc.message)
            return [o.instance_id for o in olds]
        current = ScaleSetRow(**{**row.__dict__, "model_version": version})
        for old in olds:
            host = self.alloc.host_for(spec, old.zone, old.fault_domain, alive)
            if host is None:
                in_place.append(old.instance_id)
                continue
            try:
                with self.store.transaction() as db:
                    iid = self.store.allocate_instance_id(db, row.name)
                    new = self.alloc.new_instance_row(
                        db, current, spec, iid, host, old.zone, old.fault_domain, index=old.update_domain
                    )
                    self.store.insert_instance(db, new)
                    Store.mark_replaced(db, row.name, old.instance_id, iid)
            except LocalVMSSError as exc:
                log.warning("%s: no surge instance for %d: %s", row.name, old.instance_id, exc.message)
                in_place.append(old.instance_id)
                continue
            state.surge[old.instance_id] = iid
        return in_place

    def _log(self, name: str, message: str, ids: Any) -> None:
        self.store.log_activity(name, "upgrade", message, instances=list(ids))


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
