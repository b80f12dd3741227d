"""What happens before an instance is deleted: the one rule for Azure's terminate notification.

Before the reconciler deletes an instance (a scale-in, delete-instances, a repair that replaces
it, the set's deletion) of a set whose ``terminateNotificationProfile`` is enabled, the instance
is taken out of rotation, a Terminate scheduled event is recorded (the guest reads it from the
instance metadata service), and the deletion waits until the guest acknowledges it or its
NotBefore passes. ``scaleInPolicy.forceDeletion`` skips the notice and the wait for instances a
scale-in chose. Pure: the reconciler passes the stored notice and the clock; it sends the
notice, waits or deletes as ``before_delete`` says, so a daemon restart mid-notice resumes from
the stored event and its NotBefore.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import formatdate
from enum import StrEnum

EVENT_TYPE = "Terminate"
SCALE_IN = "scale-in"  # the delete reason a scale-in records (forceDeletion applies to it only)
OVERPROVISION = "overprovision"  # an overprovisioned extra: never in rotation, deleted without a notice
STANDBY = "standby"  # a standby-pool instance the pool replaces: not serving, deleted without a notice


class Step(StrEnum):
    DELETE = "delete"  # go ahead with the deletion
    NOTIFY = "notify"  # drain, then record the Terminate event (NotBefore = now + timeout)
    WAIT = "wait"  # a notice is out: look again on a later pass


@dataclass(frozen=True)
class Notice:
    """A Terminate event as the rule needs it (from the store's row)."""

    created_at: float
    not_before: float
    acknowledged_at: float | None = None


@dataclass(frozen=True)
class Decision:
    step: Step
    outcome: str = ""  # for the activity log once the wait is over ("" if nothing to tell)


def before_delete(
    *,
    enabled: bool,
    force_deletion: bool,
    scale_in: bool,
    notice: Notice | None,
    now: float,
    guest_running: bool = True,
    overprovisioned: bool = False,
) -> Decision:
    """The next step for an instance marked for deletion. A notice already sent is judged by its
    stored NotBefore only: a changed profile or a restarted daemon never extends it. A guest
    that does not run (never booted, stopped, crashed) cannot read a notice: nothing is waited for.
    An overprovisioned extra (never took traffic, part of the scale-out that made it) gets none."""
    if overprovisioned:
        return Decision(Step.DELETE)
    if force_deletion and scale_in:
        return Decision(Step.DELETE, "forceDeletion: deleted without a terminate notice" if enabled else "")
    if notice is None and enabled and not guest_running:
        return Decision(Step.DELETE, "the guest is not running: deleted without a terminate notice")
    if notice is None:
        return Decision(Step.NOTIFY) if enabled else Decision(Step.DELETE)
    if notice.acknowledged_at is not None:
        return Decision(Step.DELETE, f"acknowledged after {max(0.0, notice.acknowledged_at - notice.created_at):.1f} s")
    if now >= notice.not_before:
        return Decision(
            Step.DELETE,
            f"not acknowledged within notBeforeTimeout ({notice.not_before - notice.created_at:.0f} s)",
        )
    if not enabled:
        return Decision(Step.DELETE, "terminate notification disabled meanwhile: not waiting any longer")
    if not guest_running:
        return Decision(Step.DELETE, "not acknowledged: the guest stopped running meanwhile")
    return Decision(Step.WAIT)


def not_before(now: float, timeout_s: float) -> float:
    return now + max(0.0, timeout_s)


def rfc1123(ts: float) -> str:
    """Azure's NotBefore format: ``Mon, 19 Sep 2016 18:29:47 GMT``."""
    return formatdate(ts, usegmt=True)
