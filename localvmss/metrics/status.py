"""The status snapshot behind ``StatusCollector``: sets, instances and hosts as the store has them.

Read from the store only (no libvirt call), at a scrape after the store changed. The autoscale bounds are those of the
profile the autoscaler last evaluated (it records them in its state); before its first evaluation
they are the default profile's, read from the stored setting.
"""

from __future__ import annotations

from typing import Any

from localvmss import lifecycle
from localvmss.metrics.exporter import AutoscaleLimits, HostStatus, InstanceStatus, SetStatus, StatusSnapshot
from localvmss.model import ProvisioningState
from localvmss.store import Store


def _enum_value(value: Any) -> str:
    return str(getattr(value, "value", value))


def autoscale_limits(setting: dict[str, Any], state: dict[str, Any]) -> AutoscaleLimits | None:
    """The bounds in ``state["limits"]`` (written by the autoscaler), else the default profile's."""
    enabled = bool(setting.get("enabled", True))
    limits = state.get("limits")
    if isinstance(limits, dict):
        try:
            return AutoscaleLimits(
                str(limits["profile"]), int(limits["minimum"]), int(limits["maximum"]), int(limits["default"]), enabled
            )
        except (KeyError, TypeError, ValueError):
            pass
    for profile in setting.get("profiles") or ():
        if (
            not isinstance(profile, dict)
            or profile.get("fixedDate") is not None
            or profile.get("recurrence") is not None
        ):
            continue
        cap = profile.get("capacity") or {}
        try:
            return AutoscaleLimits(
                str(profile.get("name", "")), int(cap["minimum"]), int(cap["maximum"]), int(cap["default"]), enabled
            )
        except (KeyError, TypeError, ValueError):
            return None
    return None


class StatusSource:
    def __init__(self, store: Store) -> None:
        self.store = store
        # The last snapshot and the store revision it was made at: a function of the store's
        # rows only, so it is made again only after the store changed (scrapes every few
        # seconds, a store that changes less often).
        self._kept: tuple[int, StatusSnapshot] | None = None

    def snapshot(self) -> StatusSnapshot:
        revision = self.store.revision()  # before the rows: a change meanwhile makes it again next time
        kept = self._kept
        if kept is not None and kept[0] == revision:
            return kept[1]
        snapshot = self._snapshot()
        self._kept = (revision, snapshot)
        return snapshot

    def _snapshot(self) -> StatusSnapshot:
        sets = []
        for row in self.store.scale_sets():
            found = self.store.autoscale(row.name)
            sets.append(
                SetStatus(
                    scale_set=row.name,
                    mode=_enum_value(row.mode),
                    provisioning_state=_enum_value(row.provisioning_state),
                    automatic_repairs_enabled=bool(row.spec.automatic_repairs.enabled),
                    # Suspended by a person or by the repairs themselves (localvmss.repairs);
                    # only while repairs are on (a set without them has nothing to suspend).
                    automatic_repairs_suspended=bool(row.spec.automatic_repairs.enabled)
                    and row.repairs_state.get("state") == "Suspended",
                    autoscale=autoscale_limits(found[0], found[2]) if found is not None else None,
                )
            )
        deleting = ProvisioningState.DELETING.value
        instances = [
            InstanceStatus(i.scale_set, i.instance_id, i.host, i.health, state)
            for i in self.store.instances()
            if (state := _enum_value(i.provisioning_state)) != deleting and not lifecycle.in_pool(i)
        ]
        hosts = [HostStatus(h.name, h.zone or "", bool(h.available)) for h in self.store.hosts()]
        return StatusSnapshot(sets, instances, hosts)
