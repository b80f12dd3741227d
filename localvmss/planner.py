"""Pure placement, scale-in and rolling-upgrade planning.

Everything here is a function of its arguments: no I/O and no clock (times are passed in as
numbers), so the reconciler can call it anywhere and tests can table-drive it.

Azure rules this module follows:

* New instances are spread evenly over the availability zones first (least-populated zone,
  ties by the order the zones were listed), then over the fault domains inside that zone
  (least-populated, ties by lowest fault domain number). No zones means a regional set.
* Scale-in never removes an instance that is protected from scale-in. With
  ``prioritizeUnhealthyVMs`` (Azure: "prioritize the deletion of unhealthy and inactive VMs";
  off unless set) unhealthy instances are removed before healthy ones, because removing them
  costs no serving capacity. Within each group the scale-in policy decides:

  - ``Default``: take from the zone with the most instances, then the fault domain with the
    most instances in that zone, then the highest instance id there.
  - ``NewestVM``: newest ``created_at`` first (ties: highest id), but zones are kept balanced
    first ("NewestVM ... will balance across zones").
  - ``OldestVM``: oldest ``created_at`` first (ties: lowest id), zones balanced first too.

  Protected and unhealthy instances still count as present when balancing, since they occupy
  their zone and fault domain just the same.
* ``plan_scale`` turns all of this into one ``plans.Plan``: what a scale to a capacity would
  create (zone, fault domain, host) or remove, in order and why. The reconciler carries out
  exactly that plan and ``--what-if`` prints it, so the preview cannot drift from the action.
* Overprovisioning (Azure's ``overprovision``): a scale-out makes ``overprovision_extra(n)``
  more instances than it needs; they are candidates, out of rotation, and the first ones to
  become healthy are adopted as members; the rest are removed before they ever take traffic.
  Azure does not document how many extras it makes; localvmss makes ceil(20 %) of the new
  ones, at least one. The scale-in policy never chooses among candidates.
* Rolling upgrades run in batches that never mix update domains; update domains come from
  fault domains (``model.update_domain_for``), as the seed documents say.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from localvmss.errors import InvalidSpec
from localvmss.model import ScaleInPolicy, update_domain_for
from localvmss.plans import Change, Plan, PlannedChange

__all__ = [
    "Placement",
    "Slot",
    "check_zone_balance",
    "choose_scale_in",
    "overprovision_extra",
    "place_new",
    "plan_scale",
    "unhealthy_limit_exceeded",
    "upgrade_batches",
    "zone_counts",
]

# Azure's rollingUpgradePolicy accepts 5-100 for both percentages.
PERCENT_RANGE = (5, 100)
OVERPROVISION_PERCENT = 20  # extras per scale-out: ceil(20 % of the new instances), at least 1


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
    candidate: bool = False  # an overprovisioning extra not yet adopted
    ready_at: float | None = None  # healthy since (None: not healthy since its last start)


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


def choose_scale_in(
    existing: Sequence[Slot], count: int, *, policy: ScaleInPolicy | str, prioritize_unhealthy: bool = True
) -> list[int]:
    """Instance ids to remove, in removal order; fewer than ``count`` if not enough are removable.

    The caller reports any shortfall (e.g. everything left is protected).
    """
    return [s.instance_id for s, _why in _scale_in_order(existing, count, policy, prioritize_unhealthy)]


def _policy(policy: ScaleInPolicy | str) -> ScaleInPolicy:
    try:
        return ScaleInPolicy(policy)
    except ValueError:
        known = ", ".join(p.value for p in ScaleInPolicy)
        raise InvalidSpec(f"scaleInPolicy {policy!r} is not one of {known}") from None


def _scale_in_order(
    existing: Sequence[Slot], count: int, policy: ScaleInPolicy | str, prioritize_unhealthy: bool
) -> list[tuple[Slot, str]]:
    """The victims in removal order, each with the reason it was chosen."""
    _check_count(count, "count")
    _check_unique_ids(existing)
    pol = _policy(policy)

    zc: Counter[str | None] = Counter(s.zone for s in existing)
    fdc: Counter[tuple[str | None, int]] = Counter((s.zone, s.fault_domain) for s in existing)

    def own(s: Slot) -> tuple[float, ...]:
        # The part of the order that never changes as victims go. Larger = removed sooner.
        if pol is ScaleInPolicy.NEWEST_VM:
            return (s.created_at, float(s.instance_id))
        if pol is ScaleInPolicy.OLDEST_VM:
            return (-s.created_at, -float(s.instance_id))
        return (float(s.instance_id),)

    def key(group: tuple[bool, str | None, int], s: Slot) -> tuple[float, ...]:
        unhealthy, zone, fd = group
        head: tuple[float, ...] = (float(unhealthy), float(zc[zone]))
        if pol is ScaleInPolicy.DEFAULT:
            head += (float(fdc[(zone, fd)]),)
        return head + own(s)

    # Within one (unhealthy, zone, fault domain) group the counts are the same for everyone, so
    # its members go in their own order: each victim is the best head of a group, found among
    # the few groups rather than by rescanning every candidate (linear in the victims).
    groups: dict[tuple[bool, str | None, int], list[Slot]] = {}
    for s in existing:
        if not s.protected_from_scale_in:
            groups.setdefault((prioritize_unhealthy and not s.healthy, s.zone, s.fault_domain), []).append(s)
    for members in groups.values():
        members.sort(key=own)  # the next victim of the group last
    chosen: list[tuple[Slot, str]] = []
    while len(chosen) < count and groups:
        group = max(groups, key=lambda g: key(g, groups[g][-1]))
        victim = groups[group].pop()
        if not groups[group]:
            del groups[group]
        chosen.append((victim, _scale_in_reason(victim, pol, prioritize_unhealthy, zc, fdc)))
        zc[victim.zone] -= 1
        fdc[(victim.zone, victim.fault_domain)] -= 1
    return chosen


def _scale_in_reason(
    victim: Slot,
    pol: ScaleInPolicy,
    prioritize_unhealthy: bool,
    zc: Counter[str | None],
    fdc: Counter[tuple[str | None, int]],
) -> str:
    """Why ``victim`` goes now, in the words of the rule that decided it."""
    if prioritize_unhealthy and not victim.healthy:
        return "unhealthy or inactive (prioritizeUnhealthyVMs): removed before healthy instances"
    parts: list[str] = []
    zones = [z for z in zc if z is not None]
    if len(zones) > 1 and victim.zone is not None:
        if len({zc[z] for z in zones}) > 1:
            parts.append(f"zone {victim.zone} holds the most instances ({zc[victim.zone]})")
        else:
            parts.append("zones balanced")
    if pol is ScaleInPolicy.NEWEST_VM:
        parts.append("NewestVM: the newest removable instance" + (" there" if parts else ""))
    elif pol is ScaleInPolicy.OLDEST_VM:
        parts.append("OldestVM: the oldest removable instance" + (" there" if parts else ""))
    else:
        parts.append(
            f"Default: fault domain {victim.fault_domain} holds the most ({fdc[(victim.zone, victim.fault_domain)]}), "
            "the highest instance id in it"
        )
    return "; ".join(parts)


def overprovision_extra(new: int) -> int:
    """How many extras a scale-out of ``new`` instances makes when overprovisioning."""
    _check_count(new, "count")
    return 0 if new == 0 else max(1, math.ceil(new * OVERPROVISION_PERCENT / 100))


HostFor = Callable[[str | None, int], str | None]


def plan_scale(
    scale_set: str,
    existing: Sequence[Slot],
    capacity: int,
    *,
    zones: Sequence[str],
    fault_domain_count: int,
    policy: ScaleInPolicy | str,
    prioritize_unhealthy: bool = False,
    zone_balance: bool = False,
    overprovision: bool = False,
    host_for: HostFor | None = None,
    hold_scale_in: str | None = None,
) -> Plan:
    """What bringing a Uniform set of ``existing`` instances to ``capacity`` does, as a Plan.

    ``existing`` are the instances that count (not being deleted, host not lost). Candidates
    (overprovisioning extras) are resolved first: the ones that became healthy earliest are
    adopted (ADOPT) while members are missing; once the set is full, the rest are removed.
    Then the shortfall is created (CREATE, balanced by ``place_new``; plus extras when
    ``overprovision``) or the surplus removed (REMOVE, by ``policy``; protected instances are
    listed as KEEP). ``host_for(zone, fault_domain)`` is allocation's rule for the host of a new
    instance among the hosts that answer (None: none does); without it hosts are left to
    allocation. With ``zone_balance`` false, an instance whose zone has no host goes to the
    first listed zone that has one. ``hold_scale_in`` (a reason) postpones any removal.
    Notes say what the plan cannot do and why (protection, no host).
    """
    _check_count(capacity, "capacity")
    _check_unique_ids(existing)
    _policy(policy)
    changes: list[PlannedChange] = []
    notes: list[str] = []
    members = [s for s in existing if not s.candidate]
    candidates = [s for s in existing if s.candidate]
    need = capacity - len(members)

    if need < 0 or (need == 0 and candidates):
        if hold_scale_in:
            return Plan("scale", scale_set, (), (hold_scale_in,), capacity)
        for c in sorted(candidates, key=lambda s: s.instance_id):
            changes.append(_remove_extra(c, f"the set already has its {capacity} instance(s)"))
    elif candidates:
        ready = sorted((c for c in candidates if c.ready_at is not None), key=lambda s: (s.ready_at, s.instance_id))
        adopted = ready[:need]
        for c in adopted:
            changes.append(
                PlannedChange(
                    Change.ADOPT,
                    "overprovisioned: among the first to become healthy, kept as a member",
                    c.instance_id,
                    zone=c.zone,
                    fault_domain=c.fault_domain,
                    overprovisioned=True,
                )
            )
        need -= len(adopted)
        rest = sorted((c for c in candidates if c not in adopted), key=lambda s: s.instance_id)
        for c in rest:
            if need == 0:
                changes.append(_remove_extra(c, f"{len(adopted)} other(s) became healthy first"))
            else:
                changes.append(
                    PlannedChange(
                        Change.KEEP,
                        "overprovisioned, not healthy yet: kept if among the first to become healthy",
                        c.instance_id,
                        zone=c.zone,
                        fault_domain=c.fault_domain,
                        overprovisioned=True,
                    )
                )
        if need:
            need = max(0, need - len(rest))

    if need > 0:
        extra = overprovision_extra(need) if overprovision else 0
        changes.extend(_creates(existing, need, extra, zones, fault_domain_count, zone_balance, host_for, notes))
    elif need < 0:
        victims = _scale_in_order(members, -need, policy, prioritize_unhealthy)
        for victim, why in victims:
            changes.append(
                PlannedChange(
                    Change.REMOVE, why, victim.instance_id, zone=victim.zone, fault_domain=victim.fault_domain
                )
            )
        for s in sorted(members, key=lambda s: s.instance_id):
            if s.protected_from_scale_in:
                changes.append(
                    PlannedChange(
                        Change.KEEP, "protected from scale-in", s.instance_id, zone=s.zone, fault_domain=s.fault_domain
                    )
                )
        if len(victims) < -need:
            notes.append(f"{-need - len(victims)} instance(s) could not be removed: protected from scale-in")
    return Plan("scale", scale_set, tuple(changes), tuple(notes), capacity)


def _remove_extra(c: Slot, why: str) -> PlannedChange:
    return PlannedChange(
        Change.REMOVE,
        f"overprovisioned extra, never in rotation: {why}",
        c.instance_id,
        zone=c.zone,
        fault_domain=c.fault_domain,
        overprovisioned=True,
    )


def _creates(
    existing: Sequence[Slot],
    count: int,
    extra: int,
    zones: Sequence[str],
    fault_domain_count: int,
    zone_balance: bool,
    host_for: HostFor | None,
    notes: list[str],
) -> list[PlannedChange]:
    """CREATE changes for ``count`` members plus ``extra`` overprovisioned ones, balanced."""
    placements = place_new(existing, count + extra, zones=zones, fault_domain_count=fault_domain_count)
    zc = zone_counts(existing, zones)
    out: list[PlannedChange] = []
    waiting: list[str | None] = []
    for n, p in enumerate(placements):
        zone, host = p.zone, None
        if zones:
            why = f"zone {zone} holds the fewest instances ({zc[zone]}), then fault domain {p.fault_domain} in it"
        else:
            why = f"fault domain {p.fault_domain} holds the fewest instances"
        if host_for is not None:
            host = host_for(zone, p.fault_domain)
            if host is None and zones and not zone_balance:
                # Best-effort balance (zoneBalance=false): use a zone that has a host now.
                for other in zones:
                    host = host_for(other, p.fault_domain)
                    if host is not None:
                        why = f"zone {zone} has no host that answers; zone {other} instead (zoneBalance=false)"
                        zone = other
                        break
            if host is None:
                waiting.append(p.zone)
                continue
        if zone in zc:
            zc[zone] += 1
        if extra and n >= count:
            why = (
                f"overprovisioned extra ({extra} for {count} new: ceil({OVERPROVISION_PERCENT} %), at least 1); " + why
            )
        out.append(
            PlannedChange(
                Change.CREATE,
                why,
                zone=zone,
                fault_domain=p.fault_domain,
                host=host,
                overprovisioned=extra > 0,
                extra=bool(extra) and n >= count,
            )
        )
    if host_for is None and out:
        notes.append("hosts are chosen by allocation when the instances are created")
    if waiting:
        notes.append(
            f"{len(waiting)} instance(s) wait for an available host in zone(s) {sorted(set(map(str, waiting)))}"
        )
    return out


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
