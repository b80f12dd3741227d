"""Automatic instance repairs, decided: which instances are due, how many at a time, and when the
repairs of a set suspend themselves. Pure: the health monitor gives it rows, its own memory of
when each instance began failing, the set's stored repairs state and ``now``; it applies what
comes back.

The rules (Azure's automatic instance repairs, with its suspension made explicit):

* **Due**: an instance of a Uniform set with repairs on, not protected from scale-set actions,
  nothing under way on it, unhealthy or unknown (probe unreachable) for the whole grace period
  after it left Initializing (``lifecycle.to_repair``).
* **Rate**: at most 5 % of the set's instances are in repair at a time, at least one. In repair
  means: being deleted, a reimage/restart asked and not yet done, or Initializing again after a
  (re)boot. Repairs therefore wait while the set itself is changing more than that.
* **Suspension**: a repair counts as failed until an instance that (re)booted after it becomes
  healthy. When ``FAILED_REPAIRS_TO_SUSPEND`` repairs in a row failed and another instance is
  due, the set's repairs suspend themselves instead (serviceState Suspended, with the reason in
  the activity log and the set's instance view) until someone resumes them
  (``set-orchestration-service-state --action Resume``): repairs that keep producing broken
  instances only churn the set (a bad image, a dependency that is down).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from localvmss import lifecycle
from localvmss.model import OrchestrationMode, ProvisioningState

if TYPE_CHECKING:
    from localvmss.spec import ScaleSetSpec
    from localvmss.store import InstanceRow

SERVICE_NAME = "AutomaticRepairs"
RUNNING, SUSPENDED, NOT_RUNNING = "Running", "Suspended", "NotRunning"
MAX_IN_REPAIR_PERCENT = 5
FAILED_REPAIRS_TO_SUSPEND = 3


@dataclass(frozen=True)
class RepairsState:
    """A set's repairs service, as stored (JSON in the store; survives a daemon restart)."""

    state: str = RUNNING  # Running | Suspended (NotRunning is not stored: it means repairs are off)
    reason: str = ""
    since: float | None = None
    failed_in_row: int = 0  # repairs since the last one that yielded a healthy instance
    last_repair_at: float | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> RepairsState:
        data = data or {}
        return cls(
            state=SUSPENDED if data.get("state") == SUSPENDED else RUNNING,
            reason=str(data.get("reason") or ""),
            since=_float(data.get("since")),
            failed_in_row=int(data.get("failedInRow") or 0),
            last_repair_at=_float(data.get("lastRepairAt")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "reason": self.reason,
            "since": self.since,
            "failedInRow": self.failed_in_row,
            "lastRepairAt": self.last_repair_at,
        }


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def applies(spec: ScaleSetSpec) -> bool:
    """Automatic repairs exist for the set: enabled, and Uniform (a Flexible VM is on its own)."""
    return spec.automatic_repairs.enabled and spec.mode is OrchestrationMode.UNIFORM


def service_state(spec: ScaleSetSpec, state: RepairsState) -> str:
    """Azure's orchestrationServices serviceState of AutomaticRepairs."""
    return state.state if applies(spec) else NOT_RUNNING


def max_in_repair(total: int) -> int:
    """At most 5 % of the set in repair at a time, at least one."""
    return max(1, total * MAX_IN_REPAIR_PERCENT // 100)


def in_repair(inst: InstanceRow, spec: ScaleSetSpec, now: float) -> bool:
    """Counts against the rate: being deleted, a reimage/restart pending, or Initializing."""
    return (
        inst.provisioning_state == ProvisioningState.DELETING.value
        or lifecycle.changing(inst)
        or lifecycle.initializing(inst, spec, now)
    )


@dataclass(frozen=True)
class Repair:
    instance_id: int
    action: str  # Replace | Restart | Reimage
    reason: str


@dataclass(frozen=True)
class Decision:
    repairs: list[Repair] = field(default_factory=list)
    suspend: str | None = None  # the reason, when repairs suspend themselves instead
    waiting: list[int] = field(default_factory=list)  # due, over the rate cap: a later pass


def plan(
    spec: ScaleSetSpec,
    instances: list[InstanceRow],
    failing_since: dict[int, float],
    state: RepairsState,
    now: float,
) -> Decision:
    """What the monitor does for one set now. ``failing_since``: instance id -> when it was
    first seen unhealthy or unknown after Initializing (the monitor's memory)."""
    if service_state(spec, state) != RUNNING:
        return Decision()
    grace = spec.automatic_repairs.grace_s()
    due = sorted(
        (
            i
            for i in instances
            if i.instance_id in failing_since
            and lifecycle.to_repair(i, spec, now - failing_since[i.instance_id], grace)
        ),
        key=lambda i: (failing_since[i.instance_id], i.instance_id),
    )
    if not due:
        return Decision()
    if state.failed_in_row >= FAILED_REPAIRS_TO_SUSPEND:
        ids = ", ".join(str(i.instance_id) for i in due)
        return Decision(
            suspend=f"{state.failed_in_row} repairs in a row did not yield a healthy instance "
            f"and instance(s) {ids} are due again"
        )
    live = [i for i in instances if i.provisioning_state != ProvisioningState.DELETING.value]
    busy = sum(1 for i in instances if in_repair(i, spec, now))
    room = max(0, min(max_in_repair(len(live)) - busy, FAILED_REPAIRS_TO_SUSPEND - state.failed_in_row))
    action = spec.automatic_repairs.repair_action.value
    chosen = due[:room]
    repairs = [
        Repair(
            i.instance_id,
            action,
            f"{i.health} for {now - failing_since[i.instance_id]:.0f} s (grace {grace:.0f} s)"
            + (f": {i.message}" if i.message else ""),
        )
        for i in chosen
    ]
    return Decision(repairs=repairs, waiting=[i.instance_id for i in due[room:]])


def after_repairs(state: RepairsState, count: int, now: float) -> RepairsState:
    """``count`` repairs were made now: each counts as failed until it yields a healthy instance."""
    return replace(state, failed_in_row=state.failed_in_row + count, last_repair_at=now)


def after_healthy(state: RepairsState, inst: InstanceRow) -> RepairsState | None:
    """An instance became healthy: if it (re)booted after the last repair, the repairs worked
    and the count of failed ones starts again (None: nothing to change)."""
    if state.failed_in_row == 0 or state.last_repair_at is None:
        return None
    if lifecycle.boot_started(inst) < state.last_repair_at:
        return None
    return replace(state, failed_in_row=0)


def suspended(state: RepairsState, reason: str, now: float) -> RepairsState:
    return replace(state, state=SUSPENDED, reason=reason, since=now)


def resumed(state: RepairsState, now: float) -> RepairsState:
    """Running again, with a clean count: the person who resumed them looked at the cause."""
    return replace(state, state=RUNNING, reason="", since=now, failed_in_row=0)
