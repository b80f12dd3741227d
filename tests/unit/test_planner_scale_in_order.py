"""``planner.choose_scale_in`` picks each victim among the heads of a few (health, zone, fault
domain) groups instead of rescanning every candidate: the same victims, in the same order, as
the rescan it replaced (kept here as the reference), on random sets of every policy."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

import pytest

from localvmss.model import ScaleInPolicy
from localvmss.planner import Slot, choose_scale_in


def rescan(existing: Sequence[Slot], count: int, pol: ScaleInPolicy, prioritize_unhealthy: bool) -> list[int]:
    """The order as it was decided before: the largest key among all candidates, each time."""
    zc: Counter[str | None] = Counter(s.zone for s in existing)
    fdc: Counter[tuple[str | None, int]] = Counter((s.zone, s.fault_domain) for s in existing)
    candidates = {s.instance_id: s for s in existing if not s.protected_from_scale_in}

    def key(s: Slot) -> tuple[float, ...]:
        head = (float(prioritize_unhealthy and not s.healthy), float(zc[s.zone]))
        if pol is ScaleInPolicy.NEWEST_VM:
            return head + (s.created_at, float(s.instance_id))
        if pol is ScaleInPolicy.OLDEST_VM:
            return head + (-s.created_at, -float(s.instance_id))
        return head + (float(fdc[(s.zone, s.fault_domain)]), float(s.instance_id))

    chosen: list[int] = []
    while len(chosen) < count and candidates:
        victim = max(candidates.values(), key=key)
        chosen.append(victim.instance_id)
        del candidates[victim.instance_id]
        zc[victim.zone] -= 1
        fdc[(victim.zone, victim.fault_domain)] -= 1
    return chosen


@pytest.mark.parametrize("policy", list(ScaleInPolicy))
@pytest.mark.parametrize("prioritize_unhealthy", [True, False])
@pytest.mark.parametrize("seed", range(15))
def test_the_same_victims_in_the_same_order_as_the_rescan(
    policy: ScaleInPolicy, prioritize_unhealthy: bool, seed: int
) -> None:
    rnd = random.Random(seed)
    zones: list[str | None] = rnd.choice([[None], ["1", "2"], ["1", "2", "3"]])
    ids = rnd.sample(range(500), rnd.randint(0, 60))
    slots = [
        Slot(
            instance_id=iid,
            zone=rnd.choice(zones),
            fault_domain=rnd.randint(0, 4),
            created_at=float(rnd.randint(0, 20)),  # ties in created_at are common
            protected_from_scale_in=rnd.random() < 0.1,
            healthy=rnd.random() < 0.8,
        )
        for iid in ids
    ]
    count = rnd.randint(0, len(slots) + 3)
    assert choose_scale_in(slots, count, policy=policy, prioritize_unhealthy=prioritize_unhealthy) == rescan(
        slots, count, policy, prioritize_unhealthy
    )
