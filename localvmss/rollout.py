"""Rolling upgrades as a pure state machine: the plan, each next step, breaches and rollback.

The reconciler reads the set's instances, asks ``decide`` for one step, carries it out and
stores the rollout's new state; nothing here does I/O or reads a clock (``now`` is passed in),
so every decision is a table-tested function. ``plan`` is what ``rolling-upgrade start
--what-if`` prints and what a started rollout stores and then executes batch by batch, so the
preview cannot drift from the real thing.

The rules, and why:

* **Batches** come from ``planner.upgrade_batches``: one update domain per batch, at most
  ``maxBatchInstancePercent`` of the set (at least one), unhealthy instances first when
  ``prioritizeUnhealthyInstances``.
* **How an instance stands** (``standing``): healthy (serving on its model), pending (booting,
  being changed, or still inside the health grace period: Azure's *Initializing*), or
  unhealthy (not healthy once the grace period is over, or its boot failed). Pending counts as
  neither success nor failure, so one slow instance never aborts a rollout; it is waited for.
* **Limits are at least one instance**: before each batch, the instances outside the rollout
  that are unhealthy may number ``max(1, floor(maxUnhealthyInstancePercent% of the set))``. A
  set of 3 with the 20 % defaults therefore tolerates one unhealthy instance (Azure's 20 % of 3
  rounds to none and aborts). Failed *upgraded* instances may number
  ``floor(maxUnhealthyUpgradedInstancePercent% of the set)`` (Azure's 0-100): a failure of the
  new version is evidence against it, and with the defaults a small set stops at its first.
* **maxSurge**: a batch first gets new instances (new version, same zone and fault domain as
  the ones they replace); the old ones keep serving and leave (drained, deleted) only once
  their replacement is healthy and both have served side by side for ``SURGE_OVERLAP_S``. A
  replacement that fails is deleted and its old instance stays: no serving capacity is lost.
* **Rollback** on a breach: ``rollbackFailedInstancesOnPolicyBreach`` (Azure) reimages the
  failed instances back to the version the rollout started from; ``rollbackAllInstancesOnPolicyBreach``
  (beyond Azure, as AWS instance refresh) returns the whole set's model to that version and
  reimages every instance the rollout upgraded. A rolled-back version is never retried by
  itself: only a new model change or ``rolling-upgrade start`` starts a rollout again.
* **Bake time** after the last batch: the upgraded instances are watched that long; a breach
  meanwhile still stops and rolls back the rollout.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from localvmss import lifecycle, planner
from localvmss.allocation import slot
from localvmss.model import ProvisioningState
from localvmss.plans import Change, Plan, PlannedChange

if TYPE_CHECKING:
    from localvmss.spec import RollingUpgradePolicy, ScaleSetSpec
    from localvmss.store import InstanceRow


# A surge batch's new and old instances serve side by side at least this long before the old
# ones drain: the load balancer has the new servers in rotation (and their checks passed) first.
SURGE_OVERLAP_S = 5.0


class Status(StrEnum):
    """Azure's RollingUpgradeStatusCode, and two of ours for a rollback under way and done."""

    ROLLING_FORWARD = "RollingForward"
    CANCELLED = "Cancelled"
    COMPLETED = "Completed"
    FAULTED = "Faulted"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"

    @property
    def active(self) -> bool:
        return self in (Status.ROLLING_FORWARD, Status.ROLLING_BACK)


class Standing(StrEnum):
    HEALTHY = "healthy"
    PENDING = "pending"
    UNHEALTHY = "unhealthy"


def standing(inst: InstanceRow, spec: ScaleSetSpec, now: float) -> Standing:
    """How an instance stands for a rollout (see the module docstring); the grace period is
    the set's health grace (``automaticRepairsPolicy.gracePeriod``), as for repairs."""
    settled = inst.provisioning_state == ProvisioningState.SUCCEEDED.value and not lifecycle.busy(inst)
    if settled and (spec.health_probe is None or inst.health == "healthy"):
        return Standing.HEALTHY
    if inst.provisioning_state == ProvisioningState.FAILED.value:
        return Standing.UNHEALTHY
    if lifecycle.changing(inst):
        return Standing.PENDING
    if now - lifecycle.boot_started(inst) < spec.automatic_repairs.grace_s():
        return Standing.PENDING
    return Standing.UNHEALTHY


@dataclass(frozen=True)
class Member:
    """One instance as a rollout sees it."""

    instance_id: int
    model_version: int
    standing: Standing
    busy: bool = False  # an action asked of it is not yet done (lifecycle.changing)
    replaced_by: int | None = None


@dataclass
class State:
    """A rollout's progress, stored as JSON in its row."""

    batches: list[list[int]] = field(default_factory=list)  # the plan, made at the start
    next: int = 0  # the next batch to start
    current: list[int] = field(default_factory=list)  # the batch in flight (old ids)
    surge: dict[int, int] = field(default_factory=dict)  # old id -> its new instance (maxSurge)
    batch_done_at: float | None = None
    succeeded: list[int] = field(default_factory=list)  # now on the new version, healthy
    failed: list[int] = field(default_factory=list)
    bake_until: float | None = None
    previous: dict[int, int] = field(default_factory=dict)  # id -> the version it ran before
    rollback: list[int] = field(default_factory=list)  # to return to the old version
    rolled_back: list[int] = field(default_factory=list)
    rollback_failed: list[int] = field(default_factory=list)
    cancel: bool = False
    breach: str = ""  # why it stopped rolling forward
    serving_since: float | None = None  # when this surge batch's replacements joined the rotation

    def to_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["surge"] = {str(k): v for k, v in self.surge.items()}
        out["previous"] = {str(k): v for k, v in self.previous.items()}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> State:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        state = cls(**known)
        state.surge = {int(k): int(v) for k, v in dict(data.get("surge") or {}).items()}
        state.previous = {int(k): int(v) for k, v in dict(data.get("previous") or {}).items()}
        return state


class Step(StrEnum):
    WAIT = "wait"
    UPGRADE = "upgrade"  # reimage ``ids`` in place to the target version
    SURGE = "surge"  # create a new instance for each of ``ids``
    RETIRE = "retire"  # delete ``ids`` (replaced old ones, failed new ones); ``restore``: old ones that stay
    REVERT = "revert"  # reimage ``ids`` back to the rollout's from-version
    REVERT_MODEL = "revert_model"  # the set's model returns to the from-version (rollback of all)
    FINISH = "finish"


@dataclass(frozen=True)
class Decision:
    step: Step
    state: State
    reason: str = ""
    ids: tuple[int, ...] = ()
    restore: tuple[int, ...] = ()
    status: Status | None = None  # the rollout's status after this step


def allowed_unhealthy(total: int, percent: int) -> int:
    """Instances outside the rollout that may be unhealthy: at least one."""
    return max(1, math.floor(percent * total / 100))


def allowed_failed_upgrades(total: int, percent: int) -> int:
    return math.floor(percent * total / 100)


def plan(
    scale_set: str,
    instances: Sequence[InstanceRow],
    spec: ScaleSetSpec,
    target_version: int,
    unhealthy: set[int] | None = None,
) -> tuple[Plan, list[list[int]]]:
    """The batches a rollout to ``target_version`` would run, and the same as a ``Plan``."""
    policy = spec.upgrade_policy.rolling_upgrade_policy
    present = [i for i in instances if lifecycle.counts_toward_capacity(i)]
    # Azure: an instance protected from scale-set actions is left out of upgrades.
    members = [i for i in present if not i.protect_actions]
    unhealthy = unhealthy or set()
    slots = [replace(slot(i), healthy=i.instance_id not in unhealthy) for i in members]
    batches = planner.upgrade_batches(
        slots,
        target_version=target_version,
        fault_domain_count=spec.platform_fault_domain_count,
        max_batch_instance_percent=policy.max_batch_instance_percent,
        max_unhealthy_instance_percent=policy.max_unhealthy_instance_percent,
        prioritize_unhealthy=policy.prioritize_unhealthy_instances,
    )
    by_id = {i.instance_id: i for i in members}
    change = Change.REPLACE if policy.max_surge else Change.UPGRADE
    how = "a new instance first, this one removed once it is healthy (maxSurge)" if policy.max_surge else "in place"
    changes: list[PlannedChange] = []
    for n, batch in enumerate(batches):
        for iid in batch:
            inst = by_id[iid]
            why = f"model version {inst.model_version} -> {target_version}, update domain {inst.update_domain}, {how}"
            if iid in unhealthy and policy.prioritize_unhealthy_instances:
                why += "; unhealthy, so first (prioritizeUnhealthyInstances)"
            changes.append(
                PlannedChange(change, why, instance_id=iid, batch=n, zone=inst.zone, fault_domain=inst.fault_domain)
            )
    for inst in present:
        if inst.protect_actions and inst.model_version != target_version:
            changes.append(PlannedChange(Change.KEEP, "protected from scale-set actions", inst.instance_id))
        elif inst.model_version == target_version:
            changes.append(PlannedChange(Change.KEEP, f"already on model version {target_version}", inst.instance_id))
    batch_max = max(1, math.ceil(policy.max_batch_instance_percent * len(members) / 100))
    notes = [
        f"{len(batches)} batch(es) of at most {batch_max} instance(s); pause {policy.pause_time_between_batches} "
        f"between batches; bake time {policy.bake_time}",
        f"stops when more than {allowed_unhealthy(len(present), policy.max_unhealthy_instance_percent)} other "
        f"instance(s) are unhealthy or more than "
        f"{allowed_failed_upgrades(len(present), policy.max_unhealthy_upgraded_instance_percent)} upgraded ones fail",
        "on a breach: "
        + (
            "the whole set returns to its current version (rollbackAllInstancesOnPolicyBreach)"
            if policy.rollback_all_instances_on_policy_breach
            else "failed instances return to their current version (rollbackFailedInstancesOnPolicyBreach)"
            if policy.rollback_failed_instances_on_policy_breach
            else "the rollout stops where it is (no rollback configured)"
        ),
    ]
    return Plan("rollingUpgrade", scale_set, tuple(changes), tuple(notes)), batches


def decide(
    state: State,
    members: Mapping[int, Member],
    policy: RollingUpgradePolicy,
    *,
    status: Status,
    to_version: int,
    from_version: int,
    pause_s: float,
    bake_s: float,
    now: float,
) -> Decision:
    """The rollout's next step, from its state and the instances as they stand now."""
    st = State.from_json(state.to_json())  # never change the caller's copy
    total = sum(1 for m in members.values() if m.replaced_by is None) or 1
    if status is Status.ROLLING_BACK:
        return _roll_back(st, members, policy, from_version, now)
    if st.current:
        return _finish_batch(st, members, now)
    breach = _breach(st, members, policy, total)
    if breach:
        return _on_breach(st, members, policy, breach, to_version)
    if st.cancel:
        return Decision(Step.FINISH, st, "cancelled: no further batches were started", status=Status.CANCELLED)
    if st.batch_done_at is not None and now - st.batch_done_at < pause_s:
        return Decision(Step.WAIT, st, f"pausing {pause_s - (now - st.batch_done_at):.0f} s between batches")
    while st.next < len(st.batches):
        batch = [
            i
            for i in st.batches[st.next]
            if i in members and members[i].model_version != to_version and members[i].replaced_by is None
        ]
        if not batch:
            st.next += 1  # gone meanwhile (a scale-in) or already current
            continue
        busy = [i for i in batch if members[i].busy or members[i].standing is Standing.PENDING]
        if busy:
            return Decision(Step.WAIT, st, f"batch {st.next + 1}: instances {busy} are busy")
        st.current = batch
        st.next += 1
        st.batch_done_at = None
        step = Step.SURGE if policy.max_surge else Step.UPGRADE
        return Decision(step, st, f"batch {st.next} of {len(st.batches)}: instances {batch}", ids=tuple(batch))
    if bake_s > 0:
        if st.bake_until is None:
            st.bake_until = now + bake_s
            return Decision(Step.WAIT, st, f"baking for {bake_s:.0f} s after the last batch")
        if now < st.bake_until:
            return Decision(Step.WAIT, st, f"baking: {st.bake_until - now:.0f} s left")
    return Decision(
        Step.FINISH,
        st,
        f"every instance runs model version {to_version} ({len(st.succeeded)} upgraded)",
        status=Status.COMPLETED,
    )


def _finish_batch(st: State, members: Mapping[int, Member], now: float) -> Decision:
    """The batch in flight is done when each of its instances (or, with a surge, its
    replacement) stands healthy or unhealthy. Healthy replacements retire their old instances;
    failed ones are deleted and their old instances stay."""
    pairs = {old: st.surge.get(old) for old in st.current}

    def watched(old: int) -> int:
        new = pairs[old]
        return old if new is None else new

    stands: dict[int, Standing] = {}
    for old in st.current:
        if watched(old) in members:
            stands[old] = members[watched(old)].standing
        elif pairs[old] is not None:
            stands[old] = Standing.UNHEALTHY  # its replacement is gone
        # else: removed meanwhile (a scale-in): neither success nor failure
    pending = [watched(o) for o, s in stands.items() if s is Standing.PENDING]
    if pending:
        return Decision(Step.WAIT, st, f"instances {pending} are not healthy yet")
    # Healthy replacements join the load balancer at its next sync (the end of this pass); the
    # old instances leave only after both have served side by side for SURGE_OVERLAP_S.
    joining = [n for o, s in stands.items() if s is Standing.HEALTHY and (n := pairs[o]) is not None]
    if joining:
        if st.serving_since is None:
            st.serving_since = now
        if now - st.serving_since < SURGE_OVERLAP_S:
            return Decision(Step.WAIT, st, f"new instances {joining} in rotation beside the old ones")
        st.serving_since = None
    ok = [o for o, s in stands.items() if s is Standing.HEALTHY]
    bad = [o for o, s in stands.items() if s is Standing.UNHEALTHY]
    st.succeeded += [watched(o) for o in ok]
    st.failed += [watched(o) for o in bad]
    retire = [o for o in ok if pairs[o] is not None]
    discard = [o for o in bad if pairs[o] is not None]
    delete = [*retire, *(pairs[o] for o in discard)]
    for old in st.current:
        st.surge.pop(old, None)
    st.current, st.batch_done_at = [], now
    told = [f"batch done: {len(ok)} healthy, {len(bad)} unhealthy"]
    if retire:
        told.append(f"instances {retire} replaced by healthy new instances, removed")
    if discard:
        told.append(f"new instances {[pairs[o] for o in discard]} did not become healthy: deleted, {discard} kept")
    step = Step.RETIRE if delete else Step.WAIT
    return Decision(step, st, "; ".join(told), ids=tuple(i for i in delete if i is not None), restore=tuple(discard))


def _breach(st: State, members: Mapping[int, Member], policy: RollingUpgradePolicy, total: int) -> str:
    """Why the rollout must stop now, or ""."""
    upgraded = set(st.succeeded) | set(st.failed)
    failed = {i for i in st.failed} | {
        i for i in st.succeeded if i in members and members[i].standing is Standing.UNHEALTHY
    }
    limit = allowed_failed_upgrades(total, policy.max_unhealthy_upgraded_instance_percent)
    if len(failed) > limit:
        return (
            f"{len(failed)} upgraded instance(s) {sorted(failed)} unhealthy, more than the {limit} that "
            f"maxUnhealthyUpgradedInstancePercent={policy.max_unhealthy_upgraded_instance_percent} allows"
        )
    others = [
        i
        for i, m in members.items()
        if i not in upgraded and m.replaced_by is None and m.standing is Standing.UNHEALTHY
    ]
    limit = allowed_unhealthy(total, policy.max_unhealthy_instance_percent)
    if len(others) > limit:
        return (
            f"{len(others)} instance(s) {sorted(others)} unhealthy, more than the {limit} that "
            f"maxUnhealthyInstancePercent={policy.max_unhealthy_instance_percent} allows"
        )
    return ""


def _on_breach(
    st: State, members: Mapping[int, Member], policy: RollingUpgradePolicy, breach: str, to_version: int
) -> Decision:
    st.breach = breach
    if policy.rollback_all_instances_on_policy_breach:
        st.rollback = sorted(i for i in set(st.succeeded) | set(st.failed) if i in members)
        return Decision(
            Step.REVERT_MODEL,
            st,
            f"{breach}: rolling the whole set back",
            ids=tuple(st.rollback),
            status=Status.ROLLING_BACK,
        )
    if policy.rollback_failed_instances_on_policy_breach:
        st.rollback = sorted(i for i in st.failed if i in members and members[i].model_version == to_version)
        if st.rollback:
            return Decision(Step.WAIT, st, f"{breach}: rolling the failed instances back", status=Status.ROLLING_BACK)
    return Decision(Step.FINISH, st, f"stopped: {breach}", status=Status.FAULTED)


def _roll_back(
    st: State, members: Mapping[int, Member], policy: RollingUpgradePolicy, from_version: int, now: float
) -> Decision:
    """Reimage the rollback's instances to the from-version, a batch at a time (the same batch
    size; no breach check: going back is the remedy). A reverted instance that still fails is
    reported, not retried, so a rollback never loops."""
    in_flight = [i for i in st.current if i in members]
    if in_flight:
        pending = [i for i in in_flight if members[i].standing is Standing.PENDING]
        if pending:
            return Decision(Step.WAIT, st, f"rolling back: instances {pending} are not healthy yet")
        st.rolled_back += [i for i in in_flight if members[i].standing is Standing.HEALTHY]
        st.rollback_failed += [i for i in in_flight if members[i].standing is Standing.UNHEALTHY]
        st.current = []
    done = set(st.rolled_back) | set(st.rollback_failed)
    todo = [i for i in st.rollback if i in members and i not in done]
    if todo:
        size = max(1, math.ceil(policy.max_batch_instance_percent * max(len(members), 1) / 100))
        batch = todo[:size]
        if any(members[i].busy for i in batch):
            return Decision(Step.WAIT, st, f"rolling back: instances {batch} are busy")
        st.current = batch
        return Decision(Step.REVERT, st, f"rolling back instances {batch} to version {from_version}", ids=tuple(batch))
    status = Status.ROLLED_BACK if not st.rollback_failed else Status.FAULTED
    told = f"rolled back {len(st.rolled_back)} instance(s) to model version {from_version} ({st.breach})"
    if st.rollback_failed:
        told += f"; {st.rollback_failed} still unhealthy after the rollback"
    return Decision(Step.FINISH, st, told, status=status)


def progress(state: State, members: Mapping[int, Member], to_version: int) -> dict[str, int]:
    """Azure's RollingUpgradeProgressInfo counts."""
    planned = {i for b in state.batches for i in b}
    in_progress = set(state.current) | set(state.surge.values())
    done = set(state.succeeded) | set(state.failed)
    pending = {
        i
        for i in planned
        if i in members and i not in done and i not in in_progress and members[i].model_version != to_version
    }
    return {
        "successfulInstanceCount": len(state.succeeded),
        "failedInstanceCount": len(state.failed),
        "inProgressInstanceCount": len(in_progress),
        "pendingInstanceCount": len(pending),
    }
