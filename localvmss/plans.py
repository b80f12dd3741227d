"""What an action will do, as data: the one object both ``--what-if`` prints and the controller
carries out, so a preview can never drift from what really happens.

A plan is made by a pure function (``planner`` for scale-out/in, ``rollout`` for rolling
upgrades) from the store's rows; the reconciler applies the same plan it would have shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Change(StrEnum):
    CREATE = "create"
    REMOVE = "remove"
    UPGRADE = "upgrade"  # reimaged in place to the target model version
    REPLACE = "replace"  # a surge: a new instance first, this one removed once it is healthy
    KEEP = "keep"  # named so a preview can say why it is left alone (protection, ...)
    ADOPT = "adopt"  # overprovisioning: an extra that became healthy in time joins the set as a member
    TAKE = "take"  # a standby-pool instance becomes a member (instead of a CREATE)
    RETURN = "return"  # reuseOnScaleIn: a scale-in victim goes back to the standby pool (instead of a REMOVE)


@dataclass(frozen=True)
class PlannedChange:
    """One instance's part in a plan. ``instance_id`` is None for an instance yet to be made."""

    change: Change
    reason: str
    instance_id: int | None = None
    batch: int | None = None  # rolling upgrades: 0-based batch number
    zone: str | None = None
    fault_domain: int | None = None
    host: str | None = None  # CREATE: the host allocation chose (None: no host answers)
    overprovisioned: bool = False  # an overprovisioning candidate: kept only if among the first healthy
    extra: bool = False  # CREATE: beyond the count asked for (made only if admitted)
    standby_state: str | None = None  # TAKE: the state it waits in; RETURN: the state it will wait in

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"change": self.change.value, "reason": self.reason}
        if self.instance_id is not None:
            out["instanceId"] = str(self.instance_id)
        if self.batch is not None:
            out["batch"] = self.batch
        if self.zone is not None:
            out["zone"] = self.zone
        if self.fault_domain is not None:
            out["platformFaultDomain"] = self.fault_domain
        if self.host is not None:
            out["host"] = self.host
        if self.overprovisioned:
            out["overprovisioned"] = True
        if self.extra:
            out["extra"] = True
        if self.standby_state is not None:
            out["standbyState"] = self.standby_state
        return out


@dataclass(frozen=True)
class Plan:
    """What an action on a scale set would do, in order; ``notes`` say what it would not do and why."""

    action: str  # "scale" | "rollingUpgrade"
    scale_set: str
    changes: tuple[PlannedChange, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    capacity: int | None = None  # scale: the capacity the plan reaches

    def of(self, change: Change) -> list[PlannedChange]:
        return [c for c in self.changes if c.change is change]

    def instance_ids(self, change: Change) -> list[int]:
        return [c.instance_id for c in self.changes if c.change is change and c.instance_id is not None]

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "scaleSet": self.scale_set,
            "changes": [c.to_json() for c in self.changes],
            "notes": list(self.notes),
            **({"capacity": self.capacity} if self.capacity is not None else {}),
        }
