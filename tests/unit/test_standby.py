"""Standby pools as pure decisions (localvmss.standby) and their policy (localvmss.spec): how big
a pool is, which state each instance waits in, what the pool removes and refills, which pool
instances a scale-out takes and what a scale-in may return; and which policies are refused."""

from __future__ import annotations

from typing import Any

import pytest

from localvmss import standby
from localvmss.errors import InvalidSpec
from localvmss.spec import StandbyPoolPolicy, StandbyState, parse_scale_set_body, parse_standby_pool, spec_to_azure
from localvmss.standby import FAILED, OUTDATED, SURPLUS, PoolSlot, Take

R, P, S = StandbyState.RUNNING, StandbyState.PAUSED, StandbyState.SAVED
_LETTER = {"R": R, "P": P, "S": S}


def policy(
    max_ready: int = 3,
    min_ready: int = 0,
    state: str = "Paused",
    dist: tuple[int, int, int] | None = None,
    dynamic: bool = False,
    reuse: bool = False,
) -> StandbyPoolPolicy:
    """A policy; ``dist`` is (running, paused, saved) percent."""
    body: dict[str, Any] = {
        "maxReadyCapacity": max_ready,
        "minReadyCapacity": min_ready,
        "virtualMachineState": state,
        "dynamicSizing": {"enabled": dynamic},
        "reuseOnScaleIn": reuse,
    }
    if dist is not None:
        body["vmStateDistribution"] = dict(zip(("runningPercent", "pausedPercent", "savedPercent"), dist, strict=True))
    return parse_standby_pool(body)


def pool(text: str) -> list[PoolSlot]:
    """``"1:P 2:S- 3:Rx 4:Po 5:P!@2 6:R@1/z2"``: id:state, ``-`` not standing by yet, ``o``
    outdated, ``x`` failed, ``!`` standing by but not usable (something pending), ``@fd``, ``/zone``.
    A plain one is standing by and usable."""
    out = []
    for word in text.split():
        iid, rest = word.split(":")
        zone = None
        if "/" in rest:
            rest, zone = rest.split("/")
        fd = 0
        if "@" in rest:
            rest, fd_text = rest.split("@")
            fd = int(fd_text)
        state, flags = _LETTER[rest[0]], rest[1:]
        standing = "-" not in flags and "x" not in flags
        out.append(
            PoolSlot(
                instance_id=int(iid),
                state=state,
                zone=zone,
                fault_domain=fd,
                standing_by=standing,
                usable=standing and not flags,
                outdated="o" in flags,
                failed="x" in flags,
            )
        )
    return out


def letters(states: list[StandbyState] | tuple[StandbyState, ...]) -> str:
    return "".join(s.value[0] for s in states)


# -- target_size ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pol", "capacity", "expected"),
    [
        pytest.param(None, 5, 0, id="no-pool"),
        pytest.param(policy(3), 0, 3, id="fixed-empty-set"),
        pytest.param(policy(3), 10, 3, id="fixed-ignores-capacity"),
        pytest.param(policy(0), 2, 0, id="fixed-zero"),
        pytest.param(policy(10, dynamic=True), 4, 6, id="dynamic-max-minus-capacity"),
        pytest.param(policy(10, dynamic=True), 10, 0, id="dynamic-capacity-at-max"),
        pytest.param(policy(10, dynamic=True), 15, 0, id="dynamic-capacity-beyond-max-never-negative"),
        pytest.param(policy(10, min_ready=2, dynamic=True), 9, 2, id="dynamic-min-floor"),
        pytest.param(policy(10, min_ready=2, dynamic=True), 7, 3, id="dynamic-above-floor"),
        pytest.param(policy(10, min_ready=2, dynamic=True), 50, 2, id="dynamic-floor-when-far-beyond"),
        pytest.param(policy(4, min_ready=2), 50, 4, id="min-ignored-without-dynamic"),
    ],
)
def test_target_size(pol: StandbyPoolPolicy | None, capacity: int, expected: int) -> None:
    assert standby.target_size(pol, capacity) == expected


# -- desired_counts ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pol", "size", "expected"),
    [
        pytest.param(policy(state="Paused"), 3, (0, 3, 0), id="single-state-paused"),
        pytest.param(policy(state="Running"), 2, (2, 0, 0), id="single-state-running"),
        pytest.param(policy(state="Saved"), 4, (0, 0, 4), id="single-state-saved"),
        pytest.param(policy(dist=(20, 50, 30)), 10, (2, 5, 3), id="exact"),
        pytest.param(policy(dist=(20, 50, 30)), 0, (0, 0, 0), id="size-zero"),
        # 3 x 1/3 each: 1 each
        pytest.param(policy(dist=(34, 33, 33)), 3, (1, 1, 1), id="thirds"),
        # 1 seat: running's remainder .34 beats .33
        pytest.param(policy(dist=(34, 33, 33)), 1, (1, 0, 0), id="largest-remainder-wins"),
        # ties: Paused before Running before Saved
        pytest.param(policy(dist=(50, 50, 0)), 1, (0, 1, 0), id="tie-paused-over-running"),
        pytest.param(policy(dist=(50, 0, 50)), 1, (1, 0, 0), id="tie-running-over-saved"),
        pytest.param(policy(dist=(0, 50, 50)), 1, (0, 1, 0), id="tie-paused-over-saved"),
        pytest.param(policy(dist=(50, 25, 25)), 2, (1, 1, 0), id="tie-two-states-paused-first"),
        # 1.5, .75, .75: floors 1, 0, 0; the two seats left go to the largest remainders (.75), not Running
        pytest.param(policy(dist=(50, 25, 25)), 3, (1, 1, 1), id="largest-remainders-over-order"),
        # 7 x (10, 60, 30) = 0.7, 4.2, 2.1: floors 0,4,2; the seat left goes to running (.7)
        pytest.param(policy(dist=(10, 60, 30)), 7, (1, 4, 2), id="remainder-to-largest-fraction"),
        # 5 x (33, 33, 34) = 1.65, 1.65, 1.7: floors 1,1,1; two seats: saved (.7), then paused (tie .65)
        pytest.param(policy(dist=(33, 33, 34)), 5, (1, 2, 2), id="two-seats-then-tie"),
    ],
)
def test_desired_counts(pol: StandbyPoolPolicy, size: int, expected: tuple[int, int, int]) -> None:
    counts = standby.desired_counts(pol, size)
    assert (counts[R], counts[P], counts[S]) == expected


@pytest.mark.parametrize("dist", [(100, 0, 0), (34, 33, 33), (10, 60, 30), (1, 1, 98), (33, 34, 33), (50, 50, 0)])
@pytest.mark.parametrize("size", [0, 1, 2, 3, 7, 11, 97, 1000])
def test_desired_counts_always_add_up_to_the_size(dist: tuple[int, int, int], size: int) -> None:
    counts = standby.desired_counts(policy(dist=dist), size)
    assert sum(counts.values()) == size
    for state, percent in zip((R, P, S), dist, strict=True):
        assert abs(counts[state] - size * percent / 100) < 1, "each within one seat of its exact share"


# -- states_for_new ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pol", "current", "count", "expected"),
    [
        pytest.param(policy(state="Saved"), "", 3, "SSS", id="single-state"),
        pytest.param(policy(state="Running"), "PP", 1, "R", id="after-a-state-change-the-new-state"),
        pytest.param(policy(dist=(0, 50, 50)), "", 2, "PS", id="alternates-paused-first"),
        pytest.param(policy(dist=(0, 50, 50)), "P", 1, "S", id="fills-the-missing-state"),
        pytest.param(policy(dist=(0, 50, 50)), "S", 1, "P", id="fills-the-missing-state-paused"),
        pytest.param(policy(dist=(0, 50, 50)), "PPP", 3, "SSS", id="furthest-below-gets-all"),
        pytest.param(policy(dist=(20, 50, 30)), "", 10, "PSRPPSPRSP", id="grows-by-the-distribution"),
        pytest.param(policy(dist=(20, 50, 30)), "PPPPP", 5, "SRRSS", id="completes-the-distribution"),
        pytest.param(policy(), "PP", 0, "", id="none"),
    ],
)
def test_states_for_new(pol: StandbyPoolPolicy, current: str, count: int, expected: str) -> None:
    got = standby.states_for_new(pol, [_LETTER[c] for c in current], count)
    assert letters(got) == expected


@pytest.mark.parametrize("dist", [(20, 50, 30), (34, 33, 33), (0, 10, 90)])
def test_states_for_new_from_empty_matches_desired_counts(dist: tuple[int, int, int]) -> None:
    pol = policy(dist=dist)
    for size in range(12):
        got = standby.states_for_new(pol, [], size)
        want = standby.desired_counts(pol, size)
        assert {s: got.count(s) for s in StandbyState} == want, size


# -- upkeep --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pol", "capacity", "slots", "create", "remove"),
    [
        pytest.param(policy(3), 2, "", "PPP", [], id="fill-empty"),
        pytest.param(policy(3), 2, "1:P 2:P 3:P", "", [], id="full-nothing"),
        pytest.param(policy(3), 2, "1:P 2:P- 3:P-", "", [], id="booting-count-as-there"),
        pytest.param(policy(3), 2, "1:P", "PP", [], id="refill-the-rest"),
        pytest.param(policy(3, dist=(0, 50, 50)), 2, "1:P", "SP", [], id="refill-furthest-below-first"),
        pytest.param(policy(2), 2, "1:Px 2:P", "P", [(1, FAILED)], id="failed-removed-and-replaced"),
        pytest.param(policy(2), 2, "1:Po 2:Po", "PP", [(1, OUTDATED), (2, OUTDATED)], id="outdated-replaced"),
        pytest.param(policy(1), 2, "1:Po 2:Px", "P", [(1, OUTDATED), (2, FAILED)], id="both-reasons"),
        pytest.param(None, 2, "1:P 2:S-", "", [(2, SURPLUS), (1, SURPLUS)], id="no-policy-removes-all"),
        pytest.param(None, 2, "", "", [], id="no-policy-no-pool"),
        pytest.param(policy(0), 2, "1:Po 2:R", "", [(1, OUTDATED), (2, SURPLUS)], id="size-zero"),
        pytest.param(policy(10, dynamic=True), 9, "1:P 2:P 3:P", "", [(3, SURPLUS), (2, SURPLUS)], id="dynamic-shrink"),
        pytest.param(policy(10, dynamic=True), 7, "1:P", "PP", [], id="dynamic-grow"),
        # surplus: what is not standing by yet goes first, even if older
        pytest.param(policy(2), 2, "1:P- 2:P 3:P", "", [(1, SURPLUS)], id="surplus-not-ready-first"),
        pytest.param(policy(2), 2, "1:P 2:P 3:P", "", [(3, SURPLUS)], id="surplus-newest-first"),
        # surplus: then the state the distribution has too many of (here Saved: want P1 S1)
        pytest.param(policy(2, dist=(0, 50, 50)), 2, "1:S 2:P 3:S", "", [(3, SURPLUS)], id="surplus-over-state"),
        pytest.param(policy(2, dist=(0, 50, 50)), 2, "1:S 2:S 3:P", "", [(2, SURPLUS)], id="surplus-over-state-older"),
        # a policy changed to Running: the Paused ones are over their share of 0
        pytest.param(policy(2, state="Running"), 2, "1:P 2:R 3:P", "", [(3, SURPLUS)], id="surplus-old-state"),
        pytest.param(
            policy(1, state="Running"),
            2,
            "1:R 2:P 3:P 4:R",
            "",
            [(3, SURPLUS), (2, SURPLUS), (4, SURPLUS)],
            id="surplus-to-one",
        ),
        # the failed ones do not count toward the size, surplus is judged on what is left
        pytest.param(policy(1), 2, "1:Px 2:P 3:P", "", [(1, FAILED), (3, SURPLUS)], id="failed-then-surplus"),
    ],
)
def test_upkeep(
    pol: StandbyPoolPolicy | None, capacity: int, slots: str, create: str, remove: list[tuple[int, str]]
) -> None:
    work = standby.upkeep(pol, capacity, pool(slots))
    assert letters(work.create) == create
    assert list(work.remove) == remove


@pytest.mark.parametrize(
    ("pol", "slots", "removed"),
    [
        # Per the docstring "loses first what is not ready yet, then what its distribution has too
        # many of": the booting Paused one (2) goes before the standing-by Running one (3).
        pytest.param(policy(2), "1:P 2:P- 3:R", 2, id="not-ready-before-over-state"),
        # Per the docstring "(slowest state first)": of two states equally over their share, the
        # Saved (slowest) goes, not the Running one that serves soonest.
        pytest.param(policy(3), "1:P 2:P 4:R 3:S", 3, id="slowest-state-first"),
        # among the not ready ones, a state over its share first
        pytest.param(policy(2), "1:P- 2:R- 3:P", 2, id="not-ready-over-state-first"),
        # among equals, the newest id
        pytest.param(policy(2, state="Saved"), "1:S 2:S 3:S", 3, id="then-newest"),
    ],
)
def test_upkeep_surplus_order_as_documented(pol: StandbyPoolPolicy, slots: str, removed: int) -> None:
    work = standby.upkeep(pol, 2, pool(slots))
    assert [iid for iid, _ in work.remove] == [removed]


# -- choose_takes --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("wanted", "slots", "zonal", "expected"),
    [
        pytest.param([(None, 0)], "", False, [None], id="empty-pool"),
        pytest.param([], "1:P", False, [], id="nothing-wanted"),
        pytest.param([(None, 0)], "1:S 2:P 3:R", False, [(3, R)], id="running-first"),
        pytest.param([(None, 0)] * 2, "1:S 2:P", False, [(2, P), (1, S)], id="paused-then-saved"),
        pytest.param([(None, 0)] * 4, "1:S 2:P 3:R", False, [(3, R), (2, P), (1, S), None], id="pool-runs-out"),
        pytest.param([(None, 0)] * 2, "5:P 2:P", False, [(2, P), (5, P)], id="same-state-lowest-id"),
        # unusable: not standing by, outdated, failed, pending
        pytest.param([(None, 0)], "1:R- 2:Ro 3:Rx 4:R!", False, [None], id="unusable-never"),
        pytest.param([(None, 0)], "1:R- 2:S", False, [(2, S)], id="usable-slower-over-unusable"),
        # same fault domain preferred (over speed), else any
        pytest.param([(None, 1)], "1:R@0 2:S@1", False, [(2, S)], id="same-fd-preferred"),
        pytest.param([(None, 2)], "1:S@0 2:R@1", False, [(2, R)], id="no-same-fd-fastest"),
        pytest.param([(None, 1), (None, 0)], "1:R@0 2:R@1", False, [(2, R), (1, R)], id="each-its-fd"),
        # zonal: the same zone always
        pytest.param([("2", 0)], "1:R/z1", True, [None], id="zonal-other-zone-never"),
        pytest.param([("z2", 0)], "1:R/z1 2:S/z2", True, [(2, S)], id="zonal-same-zone"),
        pytest.param(
            [("z1", 0), ("z1", 0), ("z2", 0)],
            "1:R/z1 2:P/z1 3:R/z2",
            True,
            [(1, R), (2, P), (3, R)],
            id="zonal-each",
        ),
        pytest.param([("z2", 0)], "1:R/z1", False, [(1, R)], id="regional-ignores-zone"),
        pytest.param([("z1", 1)], "1:R@0/z1 2:S@1/z2 3:P@1/z1", True, [(3, P)], id="zone-then-fd"),
    ],
)
def test_choose_takes(
    wanted: list[tuple[str | None, int]], slots: str, zonal: bool, expected: list[tuple[int, StandbyState] | None]
) -> None:
    got = standby.choose_takes(wanted, pool(slots), zonal)
    assert got == [None if e is None else Take(*e) for e in expected]
    taken = [t.instance_id for t in got if t is not None]
    assert len(taken) == len(set(taken)), "each pool instance is taken once"


# -- reuse_on_scale_in ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pol", "new_capacity", "slots", "victims", "expected"),
    [
        pytest.param(policy(3), 2, "", [(7, True)], {}, id="off-without-reuse"),
        pytest.param(None, 2, "", [(7, True)], {}, id="no-policy"),
        pytest.param(policy(3, reuse=True), 2, "", [(7, True), (8, True)], {7: P, 8: P}, id="room-for-both"),
        pytest.param(policy(3, reuse=True), 2, "1:P 2:P", [(7, True), (8, True)], {7: P}, id="room-for-one"),
        pytest.param(policy(2, reuse=True), 2, "1:P 2:P", [(7, True)], {}, id="pool-full"),
        pytest.param(policy(3, reuse=True), 2, "", [(7, False), (8, True)], {8: P}, id="only-reusable"),
        pytest.param(policy(3, reuse=True), 2, "", [(7, False)], {}, id="none-reusable"),
        # failed and outdated pool instances leave room (they are replaced anyway)
        pytest.param(policy(2, reuse=True), 2, "1:Px 2:Po", [(7, True), (8, True)], {7: P, 8: P}, id="bad-make-room"),
        # not-ready pool instances take room
        pytest.param(policy(2, reuse=True), 2, "1:P-", [(7, True), (8, True)], {7: P}, id="booting-take-room"),
        # the size after the scale-in: dynamic sizing grows the pool as the set shrinks
        pytest.param(policy(5, dynamic=True, reuse=True), 4, "", [(7, True), (8, True)], {7: P}, id="dynamic-after"),
        pytest.param(
            policy(5, dynamic=True, reuse=True),
            2,
            "1:P",
            [(7, True), (8, True), (9, True)],
            {7: P, 8: P},
            id="dynamic-after-with-pool",
        ),
        pytest.param(
            policy(4, dist=(0, 50, 50), reuse=True),
            2,
            "1:P",
            [(7, True), (8, True), (9, True)],
            {7: S, 8: P, 9: S},
            id="states-by-distribution",
        ),
        pytest.param(policy(3, state="Running", reuse=True), 2, "1:S", [(7, True)], {7: R}, id="state-of-the-policy"),
    ],
)
def test_reuse_on_scale_in(
    pol: StandbyPoolPolicy | None,
    new_capacity: int,
    slots: str,
    victims: list[tuple[int, bool]],
    expected: dict[int, StandbyState],
) -> None:
    assert standby.reuse_on_scale_in(pol, new_capacity, pool(slots), victims) == expected


# -- the policy ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({"maxReadyCapacity": 3}, (3, 0, P, None, False, False), id="defaults-paused"),
        pytest.param(
            {"properties": {"maxReadyCapacity": 2}, "name": "x", "type": "t"},
            (2, 0, P, None, False, False),
            id="azure-envelope",
        ),
        pytest.param(
            {"maxReadyCapacity": 5, "minReadyCapacity": 1, "dynamicSizing": {"enabled": True}, "reuseOnScaleIn": True},
            (5, 1, P, None, True, True),
            id="all-flags",
        ),
        pytest.param({"maxReadyCapacity": 0}, (0, 0, P, None, False, False), id="zero"),
        pytest.param({"maxReadyCapacity": 1000}, (1000, 0, P, None, False, False), id="max"),
        pytest.param({"maxReadyCapacity": 2, "minReadyCapacity": 2}, (2, 2, P, None, False, False), id="min-eq-max"),
        pytest.param({"maxReadyCapacity": 1, "virtualMachineState": "Running"}, (1, 0, R, None, False, False), id="R"),
        pytest.param({"maxReadyCapacity": 1, "virtualMachineState": "saved"}, (1, 0, S, None, False, False), id="s"),
        pytest.param({"maxReadyCapacity": 1, "virtualMachineState": "PAUSED"}, (1, 0, P, None, False, False), id="P"),
        pytest.param(
            {"maxReadyCapacity": 1, "virtualMachineState": " running "}, (1, 0, R, None, False, False), id="spaces"
        ),
        pytest.param(
            {"maxReadyCapacity": 1, "virtualMachineState": "Hibernated"},
            (1, 0, S, None, False, False),
            id="hibernated-is-saved",
        ),
        pytest.param(
            {"maxReadyCapacity": 1, "virtualMachineState": "hibernated"},
            (1, 0, S, None, False, False),
            id="hibernated-any-case",
        ),
        pytest.param(
            {"maxReadyCapacity": 4, "vmStateDistribution": {"runningPercent": 25, "savedPercent": 75}},
            (4, 0, P, (25, 0, 75), False, False),
            id="distribution-missing-is-zero",
        ),
        pytest.param(
            {"maxReadyCapacity": 4, "vmStateDistribution": None}, (4, 0, P, None, False, False), id="distribution-null"
        ),
    ],
)
def test_policy_accepted(body: dict[str, Any], expected: tuple[Any, ...]) -> None:
    pol = parse_standby_pool(body)
    dist = pol.vm_state_distribution
    got = (
        pol.max_ready_capacity,
        pol.min_ready_capacity,
        pol.virtual_machine_state,
        None if dist is None else (dist.running_percent, dist.paused_percent, dist.saved_percent),
        pol.dynamic_sizing.enabled,
        pol.reuse_on_scale_in,
    )
    assert got == expected
    if expected[3] is not None:
        want = dict(zip((R, P, S), expected[3], strict=True))
    else:
        want = {s: 100 * (s is expected[2]) for s in StandbyState}
    assert pol.distribution() == want


BAD_POLICIES = [
    pytest.param({}, "maxReadyCapacity", id="max-missing"),
    pytest.param({"maxReadyCapacity": "3"}, "maxReadyCapacity: Input should be a valid integer", id="max-string"),
    pytest.param({"maxReadyCapacity": 3.0}, "maxReadyCapacity", id="max-float"),
    pytest.param({"maxReadyCapacity": True}, "maxReadyCapacity", id="max-bool"),
    pytest.param({"maxReadyCapacity": -1}, "maxReadyCapacity", id="max-negative"),
    pytest.param({"maxReadyCapacity": 1001}, "less than or equal to 1000", id="max-too-big"),
    pytest.param({"maxReadyCapacity": 3, "minReadyCapacity": "1"}, "minReadyCapacity", id="min-string"),
    pytest.param(
        {"maxReadyCapacity": 2, "minReadyCapacity": 3},
        "minReadyCapacity 3 exceeds maxReadyCapacity 2",
        id="min-over-max",
    ),
    pytest.param(
        {"maxReadyCapacity": 3, "virtualMachineState": "Deallocated"}, "'Deallocated' is not offered", id="deallocated"
    ),
    pytest.param({"maxReadyCapacity": 3, "virtualMachineState": "deallocated"}, "boots cold", id="deallocated-lower"),
    pytest.param(
        {"maxReadyCapacity": 3, "virtualMachineState": "Sleeping"},
        "not one of Running, Paused, Saved",
        id="unknown-state",
    ),
    pytest.param({"maxReadyCapacity": 3, "virtualMachineState": 1}, "virtualMachineState", id="state-int"),
    pytest.param(
        {"maxReadyCapacity": 3, "vmStateDistribution": {"runningPercent": 50, "pausedPercent": 40}},
        "add up to 90, not 100",
        id="distribution-90",
    ),
    pytest.param(
        {"maxReadyCapacity": 3, "vmStateDistribution": {"runningPercent": 60, "pausedPercent": 60}},
        "add up to 120",
        id="distribution-120",
    ),
    pytest.param({"maxReadyCapacity": 3, "vmStateDistribution": {}}, "add up to 0", id="distribution-empty"),
    pytest.param(
        {"maxReadyCapacity": 3, "vmStateDistribution": {"runningPercent": "100"}},
        "runningPercent",
        id="percent-string",
    ),
    pytest.param(
        {"maxReadyCapacity": 3, "vmStateDistribution": {"runningPercent": 101, "pausedPercent": -1}},
        "Percent",
        id="percent-out-of-range",
    ),
    pytest.param(
        {"maxReadyCapacity": 3, "vmStateDistribution": {"deallocatedPercent": 100}},
        "deallocatedPercent",
        id="percent-unknown",
    ),
    pytest.param({"maxReadyCapacity": 3, "reuseOnScaleIn": "true"}, "reuseOnScaleIn", id="reuse-string"),
    pytest.param({"maxReadyCapacity": 3, "dynamicSizing": {"enabled": 1}}, "dynamicSizing.enabled", id="dyn-int"),
    pytest.param({"maxReadyCapacity": 3, "dynamicSizing": {"on": True}}, "dynamicSizing.on", id="dyn-unknown"),
    pytest.param({"maxReadyCapacity": 3, "standbyCount": 2}, "standbyCount", id="unknown-field"),
    pytest.param({"name": "x"}, "maxReadyCapacity: Field required", id="envelope-without-properties"),
    pytest.param(
        {"properties": {"maxReadyCapacity": 3}, "location": "x"},
        "maxReadyCapacity: Field required",
        id="envelope-other-keys",
    ),
]


@pytest.mark.parametrize(("body", "words"), BAD_POLICIES)
def test_policy_refused(body: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidSpec) as exc:
        parse_standby_pool(body)
    assert words in exc.value.message and "\n" not in exc.value.message, exc.value.message


@pytest.mark.parametrize("body", [[], "x", None, 3])
def test_policy_body_not_an_object(body: Any) -> None:
    with pytest.raises(InvalidSpec, match="must be a JSON object"):
        parse_standby_pool(body)


def set_body(pool_body: Any, mode: str = "Uniform") -> dict[str, Any]:
    props: dict[str, Any] = {"orchestrationMode": mode, "standbyPool": pool_body}
    if mode == "Uniform":
        props["virtualMachineProfile"] = {"storageProfile": {"imageReference": {"id": "base"}}, "osProfile": {}}
        return {"sku": {"name": "Standard_B1ls", "capacity": 2}, "properties": props}
    return {"properties": props}


@pytest.mark.parametrize(
    ("pool_body", "expected"),
    [
        pytest.param(None, None, id="none"),
        pytest.param({"maxReadyCapacity": 3}, (3, P), id="plain"),
        pytest.param({"maxReadyCapacity": 3, "virtualMachineState": "hibernated"}, (3, S), id="hibernated"),
        pytest.param({"maxReadyCapacity": 1, "virtualMachineState": "RUNNING"}, (1, R), id="any-case"),
    ],
)
def test_set_body_with_a_pool(pool_body: Any, expected: tuple[int, StandbyState] | None) -> None:
    spec, capacity = parse_scale_set_body("web", set_body(pool_body), {"base"})
    assert capacity == 2
    got = spec.standby_pool
    assert (None if got is None else (got.max_ready_capacity, got.virtual_machine_state)) == expected
    echoed = spec_to_azure("web", spec, capacity)["properties"]["standbyPool"]
    if got is None:
        assert echoed is None
    else:
        assert echoed == got.model_dump(by_alias=True, mode="json")
        assert echoed["virtualMachineState"] == expected[1].value  # type: ignore[index]
        # the echo is a valid body again, and the same policy
        assert parse_standby_pool(echoed) == got
        assert parse_scale_set_body("web", set_body(echoed), {"base"})[0].standby_pool == got


@pytest.mark.parametrize(
    ("pool_body", "mode", "words"),
    [
        pytest.param({"maxReadyCapacity": "3"}, "Uniform", "properties.standbyPool.maxReadyCapacity", id="strict"),
        pytest.param(
            {"maxReadyCapacity": 2, "minReadyCapacity": 3}, "Uniform", "exceeds maxReadyCapacity 2", id="min-over-max"
        ),
        pytest.param(
            {"maxReadyCapacity": 3, "virtualMachineState": "Deallocated"}, "Uniform", "not offered", id="deallocated"
        ),
        pytest.param(
            {"maxReadyCapacity": 3, "vmStateDistribution": {"savedPercent": 99}},
            "Uniform",
            "add up to 99",
            id="distribution",
        ),
        pytest.param({"maxReadyCapacity": 3, "extra": 1}, "Uniform", "standbyPool.extra", id="unknown-field"),
        pytest.param({"maxReadyCapacity": 1}, "Flexible", "not supported in VM (Flexible)", id="flexible"),
    ],
)
def test_set_body_with_a_bad_pool_is_refused(pool_body: Any, mode: str, words: str) -> None:
    with pytest.raises(InvalidSpec) as exc:
        parse_scale_set_body("web", set_body(pool_body, mode), {"base"})
    assert words in exc.value.message and "\n" not in exc.value.message, exc.value.message


@pytest.mark.parametrize(
    ("state", "holds"), [(StandbyState.RUNNING, True), (StandbyState.PAUSED, True), (StandbyState.SAVED, False)]
)
def test_which_states_hold_memory(state: StandbyState, holds: bool) -> None:
    assert state.holds_memory is holds
