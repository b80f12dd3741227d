"""The rolling-upgrade state machine's decisions as tables: batches, surge, limits that are at
least one instance, breaches and both kinds of rollback, pause and bake time, cancel."""

from __future__ import annotations

import pytest

from localvmss import rollout
from localvmss.rollout import Member, Standing, State, Status, Step
from localvmss.spec import RollingUpgradePolicy

H, P, U = Standing.HEALTHY, Standing.PENDING, Standing.UNHEALTHY
NOW = 1000.0


def members(spec: str, version: int = 1) -> dict[int, Member]:
    """One letter per instance id: h healthy, p pending, u unhealthy (all on ``version``)."""
    return {i: Member(i, version, {"h": H, "p": P, "u": U}[c]) for i, c in enumerate(spec)}


def decide(
    state: State,
    m: dict[int, Member],
    status: Status = Status.ROLLING_FORWARD,
    *,
    pause_s: float = 0.0,
    bake_s: float = 0.0,
    now: float = NOW,
    **policy: object,
) -> rollout.Decision:
    return rollout.decide(
        state,
        m,
        RollingUpgradePolicy(**policy),
        status=status,
        to_version=2,
        from_version=1,
        pause_s=pause_s,
        bake_s=bake_s,
        now=now,
    )


@pytest.mark.parametrize(
    ("total", "percent", "allowed"),
    [(3, 20, 1), (4, 20, 1), (10, 20, 2), (10, 5, 1), (100, 20, 20), (1, 100, 1)],
)
def test_the_unhealthy_limit_is_at_least_one_instance(total: int, percent: int, allowed: int) -> None:
    assert rollout.allowed_unhealthy(total, percent) == allowed


@pytest.mark.parametrize(
    ("total", "percent", "allowed"),
    [(3, 20, 0), (4, 20, 0), (5, 20, 1), (10, 20, 2), (4, 0, 0), (4, 50, 2)],
)
def test_failed_upgrades_allowed_are_a_share_of_the_set(total: int, percent: int, allowed: int) -> None:
    assert rollout.allowed_failed_upgrades(total, percent) == allowed


@pytest.mark.parametrize(
    ("surge", "step"),
    [(False, Step.UPGRADE), (True, Step.SURGE)],
)
def test_the_first_batch_starts(surge: bool, step: Step) -> None:
    d = decide(State(batches=[[0], [1], [2]]), members("hhh"), maxSurge=surge)
    assert (d.step, d.ids, d.state.current, d.state.next) == (step, (0,), [0], 1)


@pytest.mark.parametrize(
    ("health", "step", "succeeded", "failed"),
    [
        ("p", Step.WAIT, [], []),  # booting or inside the grace: neither success nor failure
        ("h", Step.WAIT, [0], []),
        ("u", Step.WAIT, [], [0]),
    ],
)
def test_an_in_place_batch_ends_when_each_instance_stands(
    health: str, step: Step, succeeded: list[int], failed: list[int]
) -> None:
    upgraded = Member(0, 2, {"h": H, "p": P, "u": U}[health])
    d = decide(State(batches=[[0], [1]], next=1, current=[0]), {0: upgraded, 1: Member(1, 1, H)})
    assert d.step is step
    assert (d.state.succeeded, d.state.failed) == (succeeded, failed)
    assert d.state.current == ([0] if health == "p" else [])


def test_a_slow_instance_in_a_set_of_three_is_waited_for_not_counted() -> None:
    """The defaults (20 %) and one instance 3x slower: pending until healthy, never a breach."""
    state = State(batches=[[0], [1], [2]], next=1, current=[0])
    slow = {0: Member(0, 2, P), 1: Member(1, 1, H), 2: Member(2, 1, H)}
    for _ in range(3):
        d = decide(state, slow)
        assert d.step is Step.WAIT and d.status is None
        state = d.state
    d = decide(state, {**slow, 0: Member(0, 2, H)})
    assert d.state.succeeded == [0]
    d = decide(d.state, {**slow, 0: Member(0, 2, H)})
    assert d.step is Step.UPGRADE and d.ids == (1,)


def test_an_unhealthy_instance_outside_the_rollout_is_tolerated_once() -> None:
    state = State(batches=[[1], [2]])
    assert decide(state, members("uhh")).step is Step.UPGRADE, "one unhealthy of 3: allowed (at least one)"
    d = decide(state, members("uuh"))
    assert (d.step, d.status) == (Step.FINISH, Status.FAULTED)
    assert "maxUnhealthyInstancePercent" in d.reason


@pytest.mark.parametrize(
    ("policy", "step", "status", "rollback"),
    [
        ({}, Step.FINISH, Status.FAULTED, []),
        ({"rollbackFailedInstancesOnPolicyBreach": True}, Step.WAIT, Status.ROLLING_BACK, [0]),
        ({"rollbackAllInstancesOnPolicyBreach": True}, Step.REVERT_MODEL, Status.ROLLING_BACK, [0, 1]),
    ],
)
def test_a_failed_upgrade_breaches_and_rolls_back_as_configured(
    policy: dict[str, object], step: Step, status: Status, rollback: list[int]
) -> None:
    """Set of 4, 20 % upgraded-failure limit (none allowed): instance 0 failed, 1 succeeded."""
    state = State(batches=[[0, 1], [2, 3]], next=1, succeeded=[1], failed=[0])
    m = {0: Member(0, 2, U), 1: Member(1, 2, H), 2: Member(2, 1, H), 3: Member(3, 1, H)}
    d = decide(state, m, **policy)
    assert (d.step, d.status, d.state.rollback) == (step, status, rollback)
    assert "maxUnhealthyUpgradedInstancePercent" in d.reason


def test_a_rollback_reverts_in_batches_and_never_loops() -> None:
    state = State(batches=[[0], [1]], next=2, failed=[0], succeeded=[1], rollback=[0, 1])
    m = {0: Member(0, 2, U), 1: Member(1, 2, H)}
    d = decide(state, m, Status.ROLLING_BACK, maxBatchInstancePercent=50)
    assert (d.step, d.ids) == (Step.REVERT, (0,))
    m[0] = Member(0, 1, P)
    d = decide(d.state, m, Status.ROLLING_BACK, maxBatchInstancePercent=50)
    assert d.step is Step.WAIT, "the reverted instance boots"
    m[0] = Member(0, 1, U)  # the old version fails too: reported, not retried
    d = decide(d.state, m, Status.ROLLING_BACK, maxBatchInstancePercent=50)
    assert (d.step, d.ids) == (Step.REVERT, (1,))
    m[1] = Member(1, 1, H)
    d = decide(d.state, m, Status.ROLLING_BACK, maxBatchInstancePercent=50)
    assert (d.step, d.status) == (Step.FINISH, Status.FAULTED)
    assert (d.state.rolled_back, d.state.rollback_failed) == ([1], [0])


def test_a_clean_rollback_ends_rolled_back() -> None:
    state = State(rollback=[0], current=[0], failed=[0])
    d = decide(state, {0: Member(0, 1, H)}, Status.ROLLING_BACK)
    assert (d.step, d.status, d.state.rolled_back) == (Step.FINISH, Status.ROLLED_BACK, [0])


@pytest.mark.parametrize(
    ("new", "step", "deleted", "restored"),
    [
        (P, Step.WAIT, (), ()),
        (H, Step.RETIRE, (0,), ()),  # the replacement is healthy: the old one goes
        (U, Step.RETIRE, (7,), (0,)),  # it failed: it goes, the old one stays
    ],
)
def test_a_surge_batch_keeps_the_old_instance_until_its_replacement_is_healthy(
    new: Standing, step: Step, deleted: tuple[int, ...], restored: tuple[int, ...]
) -> None:
    state = State(batches=[[0]], next=1, current=[0], surge={0: 7})
    m = {0: Member(0, 1, H, replaced_by=7), 7: Member(7, 2, new)}
    d = decide(state, m, maxSurge=True)
    if new is H:
        assert (d.step, d.state.serving_since) == (Step.WAIT, NOW), "both serve side by side first"
        assert decide(d.state, m, maxSurge=True, now=NOW + rollout.SURGE_OVERLAP_S - 1).step is Step.WAIT
        d = decide(d.state, m, maxSurge=True, now=NOW + rollout.SURGE_OVERLAP_S)
    assert (d.step, d.ids, d.restore) == (step, deleted, restored)


def test_a_surge_batch_with_an_instance_upgraded_in_place_waits_for_both() -> None:
    """No room for a second surge instance: instance 1 was upgraded in place instead."""
    state = State(batches=[[0, 1]], next=1, current=[0, 1], surge={0: 7})
    m = {0: Member(0, 1, H, replaced_by=7), 1: Member(1, 2, P), 7: Member(7, 2, H)}
    assert decide(state, m, maxSurge=True).step is Step.WAIT
    m[1] = Member(1, 2, H)
    d = decide(decide(state, m, maxSurge=True).state, m, maxSurge=True, now=NOW + rollout.SURGE_OVERLAP_S)
    assert (d.step, d.ids, d.state.succeeded) == (Step.RETIRE, (0,), [7, 1])


def test_pause_between_batches_then_the_next() -> None:
    state = State(batches=[[0], [1]], next=1, succeeded=[0], batch_done_at=NOW - 5)
    m = {0: Member(0, 2, H), 1: Member(1, 1, H)}
    d = decide(state, m, pause_s=10)
    assert d.step is Step.WAIT and "pausing 5 s" in d.reason
    d = decide(state, m, pause_s=10, now=NOW + 5)
    assert (d.step, d.ids) == (Step.UPGRADE, (1,))


def test_bake_time_then_completed_and_a_breach_while_baking_stops() -> None:
    state = State(batches=[[0]], next=1, succeeded=[0])
    d = decide(state, {0: Member(0, 2, H)}, bake_s=30)
    assert d.step is Step.WAIT and d.state.bake_until == NOW + 30
    d2 = decide(d.state, {0: Member(0, 2, H)}, bake_s=30, now=NOW + 30)
    assert (d2.step, d2.status) == (Step.FINISH, Status.COMPLETED)
    d3 = decide(d.state, {0: Member(0, 2, U)}, bake_s=30, now=NOW + 10)
    assert d3.status is Status.FAULTED, "an upgraded instance failing while baking is a breach"


def test_cancel_starts_no_further_batch() -> None:
    d = decide(State(batches=[[0], [1]], next=1, succeeded=[0], cancel=True), {0: Member(0, 2, H), 1: Member(1, 1, H)})
    assert (d.step, d.status) == (Step.FINISH, Status.CANCELLED)


def test_instances_gone_or_already_current_are_skipped() -> None:
    state = State(batches=[[0], [1], [2]])
    m = {1: Member(1, 2, H), 2: Member(2, 1, H)}  # 0 scaled in, 1 updated by hand
    d = decide(state, m)
    assert (d.step, d.ids, d.state.next) == (Step.UPGRADE, (2,), 3)


def test_busy_instances_are_waited_for() -> None:
    d = decide(State(batches=[[0]]), {0: Member(0, 1, H, busy=True)})
    assert d.step is Step.WAIT and "busy" in d.reason


def test_state_survives_its_json() -> None:
    state = State(batches=[[0, 1]], next=1, current=[0], surge={0: 5}, previous={0: 1}, failed=[3])
    assert State.from_json(state.to_json()) == state
