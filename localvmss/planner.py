"""Pure placement, scale-in and rolling-upgrade planning.

Everything here is a function of its arguments: no I/O and no clock (times are passed in as
numbers), so the reconciler can call it anywhere and tests can table-drive it.

Azure rules this module follows:

* New instances are spread evenly over the availability zones first (least-populated zone,
  ties by the order the zones were listed), then over the fault domains inside that zone
  (least-populated, ties by lowest fault domain number). No zones means a regional set.
* Scale-in never removes an instance that is protected from scale-in. Unhealthy instances
  are removed before healthy ones: Azure deletes failed/unhealthy VMs first, because removing
  them costs no serving capacity. Within each group the scale-in policy decides:

  - ``Default``: take from the zone with the most instances, then the fault domain with the
    most instances in that zone, then the highest instance id there.
  - ``NewestVM``: newest ``created_at`` first (ties: highest id), but zones are kept balanced
    first ("NewestVM ... will balance across zones").
  - ``OldestVM``: oldest ``created_at`` first (ties: lowest id), zones balanced first too.

  Protected and unhealthy instances still count as present when balancing, since they occupy
  their zone and fault domain just the same.
* Rolling upgrades run in batches that never mix update domains; update domains come from
  fault domains (``model.update_domain_for``), as the seed documents say.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from localvmss.errors import InvalidSpec
from localvmss.model import ScaleInPolicy, update_domain_for

__all__ = [
    "Placement",
    "Slot",
    "check_zone_balance",
    "choose_scale_in",
    "place_new",
    "unhealthy_limit_exceeded",
    "upgrade_batches",
    "zone_counts",
]

# Azure's rollingUpgradePolicy accepts 5-100 for both percentages.
PERCENT_RANGE = (5, 100)


@dataclass(frozen=True)
class Slot:
    """What the planner needs to know about one existing instance."""

    instance_id: int
    zone: str | None
    fault_domain: int
    created_at: float
    protected_from_scale_in: bool = False
    healthy: bool = True
    model_version: int = 0
    host: str | None = None


@dataclass(frozen=True)
class Placement:
    """Where one new instance goes."""

    zone: str | None
    fault_domain: int


def _check_count(count: object, what: str) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise InvalidSpec(f"{what} {count!r} must be a non-negative integer")
    return count


def _check_fd_count(count: object) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InvalidSpec(f"fault_domain_count {count!r} must be a positive integer")
    return count


def _check_unique_ids(slots: Sequence[Slot]) -> None:
    dupes = sorted(i for i, n in Counter(s.instance_id for s in slots).items() if n > 1)
    if dupes:
        raise InvalidSpec(f"instance ids must be unique; duplicated: {dupes}")


def zone_counts(existing: Sequence[Slot], zones: Sequence[str]) -> dict[str | None, int]:
    """Instances per listed zone (zero for empty zones); regional sets count everything under None."""
    if not zones:
        return {None: len(existing)}
    counts: dict[str | None, int] = {z: 0 for z in zones}
    for s in existing:
        if s.zone in counts:
            counts[s.zone] += 1
    return counts


def place_new(
    existing: Sequence[Slot], count: int, *, zones: Sequence[str], fault_domain_count: int
) -> list[Placement]:
    """Placements for ``count`` new instances, balancing zones first and fault domains second.

    Each placement is chosen as if the previous ones already existed, so a batch of adds ends up
    exactly as balanced as adding one at a time would. Existing instances in zones that are not
    listed, or in fault domains outside ``0..fault_domain_count-1``, are ignored when counting.
    """
    _check_count(count, "count")
    _check_fd_count(fault_domain_count)
    if len(set(zones)) != len(zones):
        raise InvalidSpec(f"zones {list(zones)!r} must not repeat")

    zc = zone_counts(existing, zones)
    order = {z: i for i, z in enumerate(zc)}
    fdc: Counter[tuple[str | None, int]] = Counter()
    for s in existing:
        key_zone = s.zone if zones else None
        if key_zone in zc and 0 <= s.fault_domain < fault_domain_count:
            fdc[(key_zone, s.fault_domain)] += 1

    out: list[Placement] = []
    for _ in range(count):
        zone = min(zc, key=lambda z: (zc[z], order[z]))
        fd = min(range(fault_domain_count), key=lambda f: (fdc[(zone, f)], f))
        zc[zone] += 1
        fdc[(zone, fd)] += 1
        out.append(Placement(zone=zone, fault_domain=fd))
    return out


def choose_scale_in(existing: Sequence[Slot], count: int, *, policy: ScaleInPolicy | str) -> list[int]:
    """Instance ids to remove, in removal order; fewer than ``count`` if not enough are removable.

    The caller reports any shortfall (e.g. everything left is protected).
    """
    _check_count(count, "count")
    _check_unique_ids(existing)
    try:
        pol = ScaleInPolicy(policy)
    except ValueError:
        known = ", ".join(p.value for p in ScaleInPolicy)
        raise InvalidSpec(f"scaleInPolicy {policy!r} is not one of {known}") from None

    zc: Counter[str | None] = Counter(s.zone for s in existing)
    fdc: Counter[tuple[str | None, int]] = Counter((s.zone, s.fault_domain) for s in existing)
    candidates = {s.instance_id: s for s in existing if not s.protected_from_scale_in}

    def key(s: Slot) -> tuple[float, ...]:
        # Larger key = removed sooner.
        head = (float(not s.healthy), float(zc[s.zone]))
        if pol is ScaleInPolicy.NEWEST_VM:
            return head + (s.created_at, float(s.instance_id))
        if pol is ScaleInPolicy.OLDEST_VM:
            return head + (-s.created_at, -float(s.instance_id))
        return head + (float(fdc[(s.zone, s.fault_domain)]), float(s.instance_id))

    chosen: list[int] = []
    while len(chosen) < count and candidates:
        victim = max(candidates.values(), key=key)
        del candidates[victim.instance_id]
        zc[victim.zone] -= 1
        fdc[(victim.zone, victim.fault_domain)] -= 1
        chosen.append(victim.instance_id)
    return chosen


def check_zone_balance(existing: Sequence[Slot], zones: Sequence[str]) -> bool:
    """Strict zone balance: the instance counts of the listed zones differ by at most one.

    Regional sets (no zones) are always balanced; instances in unlisted zones are not counted.
    """
    counts = zone_counts(existing, zones).values()
    return max(counts) - min(counts) <= 1


def _check_percent(value: object, what: str) -> int:
    low, high = PERCENT_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidSpec(f"{what} {value!r} must be an integer from {low} to {high}")
    return value


def upgrade_batches(
    instances: Sequence[Slot],
    *,
    target_version: int,
    fault_domain_count: int,
    max_batch_instance_percent: int = 20,
    max_unhealthy_instance_percent: int = 20,
    prioritize_unhealthy: bool = True,
) -> list[list[int]]:
    """Rolling-upgrade batches of the instances whose ``model_version`` is not ``target_version``.

    A batch holds instances of one update domain only (so a batch never takes down two update
    domains at once) and at most ``ceil(max_batch_instance_percent * total / 100)`` instances
    (at least one), where ``total`` is every instance in the set. Unhealthy instances come first
    when ``prioritize_unhealthy`` (Azure's prioritizeUnhealthyInstances: they serve nothing, so
    upgrading them costs nothing), then update domains in ascending order, ids ascending inside.
    The update domain of an instance uses its instance id as the index. The unhealthy
    percentage is validated here; checking it before each batch is ``unhealthy_limit_exceeded``.
    """
    _check_percent(max_batch_instance_percent, "maxBatchInstancePercent")
    _check_percent(max_unhealthy_instance_percent, "maxUnhealthyInstancePercent")
    _check_fd_count(fault_domain_count)
    _check_unique_ids(instances)

    total = len(instances)
    batch_max = max(1, math.ceil(max_batch_instance_percent * total / 100))
    groups: dict[tuple[int, int], list[int]] = {}
    for s in instances:
        if s.model_version == target_version:
            continue
        ud = update_domain_for(s.fault_domain, s.instance_id, fault_domain_count)
        first = 0 if (prioritize_unhealthy and not s.healthy) else 1
        groups.setdefault((first, ud), []).append(s.instance_id)

    batches: list[list[int]] = []
    for group_key in sorted(groups):
        ids = sorted(groups[group_key])
        batches.extend(ids[i : i + batch_max] for i in range(0, len(ids), batch_max))
    return batches


def unhealthy_limit_exceeded(instances: Sequence[Slot], *, max_unhealthy_instance_percent: int) -> bool:
    """True when more than the allowed share of the set is unhealthy: stop the rolling upgrade.

    Azure checks this before starting each batch and aborts the upgrade when it is exceeded.
    """
    _check_percent(max_unhealthy_instance_percent, "maxUnhealthyInstancePercent")
    unhealthy = sum(1 for s in instances if not s.healthy)
    return unhealthy * 100 > max_unhealthy_instance_percent * len(instances)
