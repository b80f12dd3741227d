"""Table-driven tests of the pure planner, plus hypothesis properties."""

from __future__ import annotations

from collections import Counter
from collections.abc import Set

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localvmss.errors import InvalidSpec
from localvmss.model import ScaleInPolicy
from localvmss.planner import (
    Placement,
    Slot,
    check_zone_balance,
    choose_scale_in,
    place_new,
    unhealthy_limit_exceeded,
    upgrade_batches,
    zone_counts,
)


def slots(spec: str, *, protected: Set[int] = frozenset(), unhealthy: Set[int] = frozenset()) -> list[Slot]:
    """Compact slot spec: space-separated ``zone:fd`` (zone '-' = regional); id = position,
    created_at = id (so higher ids are newer)."""
    out = []
    for i, item in enumerate(spec.split()):
        z, fd = item.split(":")
        out.append(
            Slot(
                instance_id=i,
                zone=None if z == "-" else z,
                fault_domain=int(fd),
                created_at=float(i),
                protected_from_scale_in=i in protected,
                healthy=i not in unhealthy,
            )
        )
    return out


def fmt(placements: list[Placement]) -> str:
    return " ".join(f"{p.zone or '-'}:{p.fault_domain}" for p in placements)


# ---------------------------------------------------------------------------------------- place_new
@pytest.mark.parametrize(
    "existing,count,zones,fds,expected",
    [
        # regional, 1 fault domain
        ("", 3, [], 1, "-:0 -:0 -:0"),
        # regional, spreads over fault domains round-robin
        ("", 5, [], 3, "-:0 -:1 -:2 -:0 -:1"),
        ("", 6, [], 5, "-:0 -:1 -:2 -:3 -:4 -:0"),
        ("", 2, [], 2, "-:0 -:1"),
        # regional uneven start fills the emptiest fault domain first
        ("-:0 -:0 -:1", 3, [], 3, "-:2 -:1 -:2"),
        ("-:4 -:4 -:3", 3, [], 5, "-:0 -:1 -:2"),
        # zero count
        ("-:0", 0, [], 2, ""),
        # three zones, empty start: zone order ties
        ("", 4, ["1", "2", "3"], 1, "1:0 2:0 3:0 1:0"),
        ("", 6, ["1", "2", "3"], 2, "1:0 2:0 3:0 1:1 2:1 3:1"),
        # uneven zones: the least populated zone first
        ("1:0 1:0 2:0", 3, ["1", "2", "3"], 1, "3:0 2:0 3:0"),
        ("1:0 1:1 2:0", 2, ["1", "2", "3"], 2, "3:0 2:1"),
        # two zones, 5 fault domains
        ("", 4, ["a", "b"], 5, "a:0 b:0 a:1 b:1"),
        # instances in an unlisted zone are ignored
        ("x:0 x:0", 2, ["a", "b"], 1, "a:0 b:0"),
        # out-of-range fault domains are ignored
        ("-:7 -:7", 2, [], 2, "-:0 -:1"),
        # one zone only
        ("1:0", 2, ["1"], 3, "1:1 1:2"),
    ],
)
def test_place_new(existing: str, count: int, zones: list[str], fds: int, expected: str) -> None:
    assert fmt(place_new(slots(existing), count, zones=zones, fault_domain_count=fds)) == expected


@pytest.mark.parametrize(
    "count,zones,fds,message",
    [
        (-1, [], 1, "count"),
        (1, [], 0, "fault_domain_count"),
        (1, ["1", "1"], 1, "repeat"),
        (True, [], 1, "count"),
    ],
)
def test_place_new_rejects(count: int, zones: list[str], fds: int, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        place_new([], count, zones=zones, fault_domain_count=fds)


# ---------------------------------------------------------------------------------- choose_scale_in
D, N, OLD = ScaleInPolicy.DEFAULT, ScaleInPolicy.NEWEST_VM, ScaleInPolicy.OLDEST_VM


@pytest.mark.parametrize(
    "existing,count,policy,protected,unhealthy,expected",
    [
        # --- Default, regional: fault domain with most, then highest id
        ("-:0 -:1 -:0 -:1 -:0", 2, D, set(), set(), [4, 3]),
        ("-:0 -:0 -:0", 3, D, set(), set(), [2, 1, 0]),
        ("-:0 -:1 -:2 -:0 -:1 -:2", 3, D, set(), set(), [5, 4, 3]),
        ("-:0 -:1 -:2 -:3 -:4 -:0", 1, D, set(), set(), [5]),
        ("-:0 -:1 -:2 -:3 -:4 -:0", 2, D, set(), set(), [5, 4]),
        # --- Default, zones: the zone with the most instances first
        ("1:0 2:0 3:0 1:0 2:0", 1, D, set(), set(), [4]),
        ("1:0 1:0 1:0 2:0 3:0", 2, D, set(), set(), [2, 1]),
        ("1:0 2:0 3:0 1:1 2:1 3:1", 3, D, set(), set(), [5, 4, 3]),
        # uneven fault domains within a zone: the fuller fault domain
        ("1:0 1:0 1:1 2:0 2:1", 1, D, set(), set(), [1]),
        # --- protected instances are never chosen, but still count as present
        ("-:0 -:0 -:0", 3, D, {2}, set(), [1, 0]),
        ("1:0 1:0 2:0", 1, D, {0, 1}, set(), [2]),
        ("-:0 -:1", 2, D, {0, 1}, set(), []),
        # zone 1 has the most instances but only protected ones: take from zone 2
        ("1:0 1:0 1:0 2:0 2:0", 1, D, {0, 1, 2}, set(), [4]),
        # protected counted as present: zone 1 has 3 (one protected) > zone 2 with 2
        ("1:0 1:0 1:0 2:0 2:0", 1, D, {2}, set(), [1]),
        # --- unhealthy first
        ("-:0 -:0 -:0 -:0", 1, D, set(), {0}, [0]),
        ("-:0 -:0 -:0 -:0", 2, D, set(), {0}, [0, 3]),
        ("1:0 2:0 1:0 2:0", 2, D, set(), {1, 3}, [3, 1]),
        ("-:0 -:0", 1, D, {0}, {0}, [1]),  # protected beats unhealthy
        ("-:0 -:0 -:0", 1, N, set(), {0}, [0]),
        ("-:0 -:0 -:0", 1, OLD, set(), {2}, [2]),
        # --- NewestVM: newest first, regional
        ("-:0 -:1 -:0 -:1", 2, N, set(), set(), [3, 2]),
        ("-:0 -:1 -:0 -:1", 2, N, {3}, set(), [2, 1]),
        # NewestVM keeps zones balanced: zone 1 has 3, zone 2 has 2 -> newest in zone 1 first
        ("1:0 1:0 1:0 2:0 2:0", 1, N, set(), set(), [2]),
        ("2:0 2:0 1:0 1:0 1:0", 2, N, set(), set(), [4, 3]),
        ("1:0 2:0 1:0 2:0 1:0 2:0", 3, N, set(), set(), [5, 4, 3]),
        # --- OldestVM: oldest first, balanced across zones
        ("-:0 -:1 -:0 -:1", 2, OLD, set(), set(), [0, 1]),
        ("-:0 -:1 -:0", 1, OLD, {0}, set(), [1]),
        ("2:0 1:0 1:0 1:0 2:0", 1, OLD, set(), set(), [1]),
        ("1:0 2:0 3:0 1:0 2:0 3:0", 4, OLD, set(), set(), [0, 1, 2, 3]),
        # --- more than removable: return what can be removed
        ("-:0 -:0", 5, D, set(), set(), [1, 0]),
        ("-:0 -:0", 5, N, {1}, set(), [0]),
        ("", 1, OLD, set(), set(), []),
        # --- 5 fault domains, 3 zones, count 0
        ("1:0 1:1 1:2 1:3 1:4", 0, D, set(), set(), []),
    ],
)
def test_choose_scale_in(
    existing: str,
    count: int,
    policy: ScaleInPolicy,
    protected: set[int],
    unhealthy: set[int],
    expected: list[int],
) -> None:
    s = slots(existing, protected=protected, unhealthy=unhealthy)
    assert choose_scale_in(s, count, policy=policy) == expected


def test_choose_scale_in_newest_by_created_at_not_id() -> None:
    s = [
        Slot(instance_id=1, zone=None, fault_domain=0, created_at=300.0),
        Slot(instance_id=2, zone=None, fault_domain=0, created_at=100.0),
        Slot(instance_id=3, zone=None, fault_domain=0, created_at=200.0),
        Slot(instance_id=4, zone=None, fault_domain=0, created_at=300.0),
    ]
    assert choose_scale_in(s, 4, policy=N) == [4, 1, 3, 2]
    assert choose_scale_in(s, 4, policy=OLD) == [2, 3, 1, 4]
    assert choose_scale_in(s, 2, policy="NewestVM") == [4, 1]


@pytest.mark.parametrize(
    "existing,count,policy,message",
    [
        ("-:0", 1, "Random", "scaleInPolicy"),
        ("-:0", -1, D, "count"),
    ],
)
def test_choose_scale_in_rejects(existing: str, count: int, policy: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        choose_scale_in(slots(existing), count, policy=policy)


def test_choose_scale_in_rejects_duplicate_ids() -> None:
    dup = [Slot(1, None, 0, 0.0), Slot(1, None, 0, 1.0)]
    with pytest.raises(InvalidSpec, match="duplicated"):
        choose_scale_in(dup, 1, policy=D)


# ------------------------------------------------------------------------------- zone balance
@pytest.mark.parametrize(
    "existing,zones,balanced",
    [
        ("", [], True),
        ("-:0 -:0", [], True),
        ("", ["1", "2"], True),
        ("1:0", ["1", "2"], True),
        ("1:0 1:0", ["1", "2"], False),
        ("1:0 2:0 3:0 1:0", ["1", "2", "3"], True),
        ("1:0 1:0 2:0 2:0", ["1", "2", "3"], False),
        ("x:0 x:0 x:0", ["1", "2"], True),
    ],
)
def test_check_zone_balance(existing: str, zones: list[str], balanced: bool) -> None:
    assert check_zone_balance(slots(existing), zones) is balanced


def test_zone_counts() -> None:
    assert zone_counts(slots("1:0 1:0 3:0"), ["1", "2", "3"]) == {"1": 2, "2": 0, "3": 1}
    assert zone_counts(slots("1:0 -:0"), []) == {None: 2}


# -------------------------------------------------------------------------------- upgrade batches
def vslots(specs: list[tuple[int, int, bool]]) -> list[Slot]:
    """(fault_domain, model_version, healthy) per instance; id = position."""
    return [
        Slot(instance_id=i, zone=None, fault_domain=fd, created_at=0.0, model_version=v, healthy=h)
        for i, (fd, v, h) in enumerate(specs)
    ]


@pytest.mark.parametrize(
    "specs,fds,batch_pct,prioritize,expected",
    [
        # 5 instances in 5 fault domains -> one update domain each, 20% of 5 = 1 per batch
        ([(f, 0, True) for f in range(5)], 5, 20, True, [[0], [1], [2], [3], [4]]),
        # 100% still never mixes update domains
        ([(f, 0, True) for f in range(5)], 5, 100, True, [[0], [1], [2], [3], [4]]),
        # 10 instances over 2 fault domains, 20% -> 2 per batch
        (
            [(i % 2, 0, True) for i in range(10)],
            2,
            20,
            True,
            [[0, 2], [4, 6], [8], [1, 3], [5, 7], [9]],
        ),
        # 1 fault domain -> round-robin update domains by instance id (10 instances, 5 UDs)
        (
            [(0, 0, True) for _ in range(10)],
            1,
            50,
            True,
            [[0, 5], [1, 6], [2, 7], [3, 8], [4, 9]],
        ),
        # already upgraded instances are skipped, but still count in the total
        ([(0, 1, True), (0, 0, True), (0, 0, True)], 3, 50, True, [[1, 2]]),
        ([(0, 1, True), (1, 1, True)], 2, 20, True, []),
        # unhealthy first, still one update domain per batch
        (
            [(0, 0, True), (1, 0, True), (0, 0, False), (1, 0, False), (2, 0, True)],
            3,
            100,
            True,
            [[2], [3], [0], [1], [4]],
        ),
        # not prioritized: plain update-domain order
        (
            [(0, 0, True), (1, 0, True), (0, 0, False), (1, 0, False), (2, 0, True)],
            3,
            100,
            False,
            [[0, 2], [1, 3], [4]],
        ),
        # tiny percent still gives batches of at least one
        ([(0, 0, True), (0, 0, True)], 1, 5, True, [[0], [1]]),
        # empty set
        ([], 2, 20, True, []),
        # 4 fault domains, 8 instances, 25% -> 2 per batch
        ([(i % 4, 0, True) for i in range(8)], 4, 25, True, [[0, 4], [1, 5], [2, 6], [3, 7]]),
    ],
)
def test_upgrade_batches(
    specs: list[tuple[int, int, bool]], fds: int, batch_pct: int, prioritize: bool, expected: list[list[int]]
) -> None:
    got = upgrade_batches(
        vslots(specs),
        target_version=1,
        fault_domain_count=fds,
        max_batch_instance_percent=batch_pct,
        prioritize_unhealthy=prioritize,
    )
    assert got == expected


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"max_batch_instance_percent": 4}, "maxBatchInstancePercent"),
        ({"max_batch_instance_percent": 101}, "maxBatchInstancePercent"),
        ({"max_batch_instance_percent": 20.0}, "maxBatchInstancePercent"),
        ({"max_unhealthy_instance_percent": 0}, "maxUnhealthyInstancePercent"),
        ({"max_unhealthy_instance_percent": True}, "maxUnhealthyInstancePercent"),
        ({"fault_domain_count": 0}, "fault_domain_count"),
    ],
)
def test_upgrade_batches_rejects(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"target_version": 1, "fault_domain_count": 1}
    args.update(kwargs)
    with pytest.raises(InvalidSpec, match=message):
        upgrade_batches(vslots([(0, 0, True)]), **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "healthy,pct,exceeded",
    [
        ([True] * 10, 20, False),
        ([False] * 2 + [True] * 8, 20, False),
        ([False] * 3 + [True] * 7, 20, True),
        ([False] + [True] * 3, 25, False),
        ([False] + [True] * 3, 20, True),
        ([], 20, False),
    ],
)
def test_unhealthy_limit_exceeded(healthy: list[bool], pct: int, exceeded: bool) -> None:
    s = vslots([(0, 0, h) for h in healthy])
    assert unhealthy_limit_exceeded(s, max_unhealthy_instance_percent=pct) is exceeded


# ------------------------------------------------------------------------------------- properties
zone_lists = st.sampled_from([[], ["1"], ["1", "2"], ["1", "2", "3"]])


@settings(max_examples=200, deadline=None)
@given(zones=zone_lists, fds=st.integers(1, 5), adds=st.lists(st.integers(0, 7), max_size=8))
def test_property_placement_keeps_zones_balanced(zones: list[str], fds: int, adds: list[int]) -> None:
    existing: list[Slot] = []
    for n in adds:
        for p in place_new(existing, n, zones=zones, fault_domain_count=fds):
            existing.append(Slot(len(existing), p.zone, p.fault_domain, float(len(existing))))
        assert check_zone_balance(existing, zones)
        # fault domains are balanced within each zone too
        zone_keys: list[str | None] = list(zones) or [None]
        for z in zone_keys:
            per_fd = Counter(s.fault_domain for s in existing if s.zone == z)
            counts = [per_fd[f] for f in range(fds)]
            assert max(counts) - min(counts) <= 1


slot_strategy = st.lists(
    st.tuples(
        st.sampled_from([None, "1", "2", "3"]),
        st.integers(0, 4),
        st.floats(0, 1000, allow_nan=False),
        st.booleans(),
        st.booleans(),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(raw=slot_strategy, count=st.integers(0, 30), policy=st.sampled_from(list(ScaleInPolicy)))
def test_property_scale_in_never_picks_protected(
    raw: list[tuple[str | None, int, float, bool, bool]], count: int, policy: ScaleInPolicy
) -> None:
    existing = [Slot(i, z, fd, c, protected_from_scale_in=p, healthy=h) for i, (z, fd, c, p, h) in enumerate(raw)]
    chosen = choose_scale_in(existing, count, policy=policy)
    protected = {s.instance_id for s in existing if s.protected_from_scale_in}
    removable = len(existing) - len(protected)
    assert not protected & set(chosen)
    assert len(chosen) == min(count, removable)
    assert len(set(chosen)) == len(chosen)
    # unhealthy removable instances always go before healthy ones
    health = {s.instance_id: s.healthy for s in existing}
    flags = [health[i] for i in chosen]
    assert flags == sorted(flags)


@settings(max_examples=200, deadline=None)
@given(zones=st.sampled_from([["1", "2"], ["1", "2", "3"]]), n=st.integers(0, 30), k=st.integers(0, 30))
def test_property_scale_in_keeps_balanced_sets_balanced(zones: list[str], n: int, k: int) -> None:
    existing: list[Slot] = []
    for p in place_new([], n, zones=zones, fault_domain_count=2):
        existing.append(Slot(len(existing), p.zone, p.fault_domain, float(len(existing))))
    for policy in list(ScaleInPolicy):
        gone = set(choose_scale_in(existing, k, policy=policy))
        assert check_zone_balance([s for s in existing if s.instance_id not in gone], zones)
