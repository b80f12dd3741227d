"""Standby pools, as pure decisions: how big a set's pool should be, which state each of its
instances waits in, which pool instances a scale-out takes, what a scale-in may return to the
pool, and what the pool replaces in the background.

A pool instance is a real instance of the set, created with its final identity (instance id,
computer name, address and NAT port reserved at creation, see docs/STANDBY-POOLS.md), booted
from the set's current model until healthy and then brought to its standby state: Running
(booted, no traffic), Paused (libvirt suspend) or Saved (libvirt managed save). It is outside
the set's capacity, load balancer, metrics and instance counts until a scale-out takes it.

Azure's sizing: the pool holds ``maxReadyCapacity`` instances; with ``dynamicSizing`` it holds
``maxReadyCapacity`` minus the set's capacity, never fewer than ``minReadyCapacity``.

Pure: no I/O and no clock; the reconciler passes rows in and carries the decisions out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from localvmss.spec import StandbyPoolPolicy, StandbyState

# Which state a scale-out takes first: the one that serves soonest.
SPEED_ORDER = (StandbyState.RUNNING, StandbyState.PAUSED, StandbyState.SAVED)
# A remainder seat of the distribution goes to the state listed first here.
_REMAINDER_ORDER = (StandbyState.PAUSED, StandbyState.RUNNING, StandbyState.SAVED)

FAILED = "failed to become ready (it is replaced)"
OUTDATED = "made from an older model version (the pool is refilled from the current one)"
SURPLUS = "beyond the pool's size"


@dataclass(frozen=True)
class PoolSlot:
    """What pool decisions need to know of one pool instance."""

    instance_id: int
    state: StandbyState
    zone: str | None = None
    fault_domain: int = 0
    standing_by: bool = False  # reached its standby state
    usable: bool = False  # standing by, current model, nothing pending: a scale-out may take it
    outdated: bool = False
    failed: bool = False


@dataclass(frozen=True)
class Take:
    """A scale-out's new member comes from the pool: ``instance_id`` instead of a new instance
    in ``zone``/``fault_domain``."""

    instance_id: int
    state: StandbyState


@dataclass(frozen=True)
class Upkeep:
    """The pool's background work: states of the instances to create, instances to remove."""

    create: tuple[StandbyState, ...] = ()
    remove: tuple[tuple[int, str], ...] = ()


def target_size(policy: StandbyPoolPolicy | None, capacity: int) -> int:
    """How many instances the pool holds for a set of ``capacity``."""
    if policy is None:
        return 0
    if policy.dynamic_sizing.enabled:
        return max(policy.min_ready_capacity, policy.max_ready_capacity - capacity)
    return policy.max_ready_capacity


def desired_counts(policy: StandbyPoolPolicy, size: int) -> dict[StandbyState, int]:
    """Instances per state for a pool of ``size``: the distribution's percentages, rounded by
    largest remainder (ties: Paused, Running, Saved), so the counts always add up to ``size``."""
    percents = policy.distribution()
    exact = {s: size * percents[s] / 100 for s in StandbyState}
    counts = {s: int(exact[s]) for s in StandbyState}
    left = size - sum(counts.values())
    by_remainder = sorted(_REMAINDER_ORDER, key=lambda s: (-(exact[s] - counts[s]), _REMAINDER_ORDER.index(s)))
    for state in by_remainder[:left]:
        counts[state] += 1
    return counts


def states_for_new(policy: StandbyPoolPolicy, current: Sequence[StandbyState], count: int) -> list[StandbyState]:
    """The states of ``count`` new pool instances, added to ``current`` ones: each goes to the
    state furthest below its share of the grown pool."""
    have = {s: 0 for s in StandbyState}
    for state in current:
        have[state] += 1
    out: list[StandbyState] = []
    for _ in range(count):
        want = desired_counts(policy, sum(have.values()) + 1)
        state = max(_REMAINDER_ORDER, key=lambda s: (want[s] - have[s], -_REMAINDER_ORDER.index(s)))
        have[state] += 1
        out.append(state)
    return out


def upkeep(policy: StandbyPoolPolicy | None, capacity: int, pool: Sequence[PoolSlot]) -> Upkeep:
    """What the pool does in the background: failed and outdated instances are removed (never
    handed out) and replaced; a pool beyond its size loses first what is not ready yet, then
    what its distribution has too many of (slowest state first); a pool below it is refilled."""
    size = target_size(policy, capacity)
    remove: list[tuple[int, str]] = []
    kept: list[PoolSlot] = []
    for inst in pool:
        if inst.failed:
            remove.append((inst.instance_id, FAILED))
        elif inst.outdated:
            remove.append((inst.instance_id, OUTDATED))
        else:
            kept.append(inst)
    if policy is None or len(kept) > size:
        want = desired_counts(policy, size) if policy is not None else {s: 0 for s in StandbyState}
        have = {s: sum(1 for i in kept if i.state is s) for s in StandbyState}
        surplus = len(kept) - size
        left = list(kept)
        while surplus > 0:
            # Not ready first; among those, a state over its share; then the slowest state,
            # then the newest id.
            group = [i for i in left if not i.standing_by] or left
            group = [i for i in group if have[i.state] > want[i.state]] or group
            victim = max(group, key=lambda i: (SPEED_ORDER.index(i.state), i.instance_id))
            left.remove(victim)
            have[victim.state] -= 1
            remove.append((victim.instance_id, SURPLUS))
            surplus -= 1
        return Upkeep(remove=tuple(remove))
    create = states_for_new(policy, [i.state for i in kept], size - len(kept))
    return Upkeep(create=tuple(create), remove=tuple(remove))


def choose_takes(wanted: Sequence[tuple[str | None, int]], pool: Sequence[PoolSlot], zonal: bool) -> list[Take | None]:
    """For each new member a scale-out wants (its zone and fault domain, as placement chose
    them), the pool instance it takes, or None for a new instance. The fastest state first;
    the same zone always when the set has zones (zone balance stays placement's), the same
    fault domain when there is one."""
    free = sorted((i for i in pool if i.usable), key=lambda i: (SPEED_ORDER.index(i.state), i.instance_id))
    out: list[Take | None] = []
    for zone, fault_domain in wanted:
        same_zone = [i for i in free if not zonal or i.zone == zone]
        best = next((i for i in same_zone if i.fault_domain == fault_domain), None) or next(iter(same_zone), None)
        if best is None:
            out.append(None)
            continue
        free.remove(best)
        out.append(Take(best.instance_id, best.state))
    return out


def reuse_on_scale_in(
    policy: StandbyPoolPolicy | None,
    new_capacity: int,
    pool: Sequence[PoolSlot],
    victims: Sequence[tuple[int, bool]],
) -> dict[int, StandbyState]:
    """Scale-in victims (id, reusable: current model and healthy) that go back to the pool
    instead of being deleted, and the state each waits in: only with ``reuseOnScaleIn``, and
    only as many as the pool has room for at its size after the scale-in."""
    if policy is None or not policy.reuse_on_scale_in:
        return {}
    room = target_size(policy, new_capacity) - sum(1 for i in pool if not i.failed and not i.outdated)
    chosen = [iid for iid, reusable in victims if reusable][: max(room, 0)]
    current = [i.state for i in pool if not i.failed and not i.outdated]
    return dict(zip(chosen, states_for_new(policy, current, len(chosen)), strict=True))
