"""Automatic repairs decided (localvmss.repairs), as tables: which instances are due, the rate cap
(5 % of the set in repair, at least one), protection, and self-suspension after repairs that
did not yield a healthy instance; and the policy's validation."""

from __future__ import annotations

from typing import Any

import pytest

from localvmss import lifecycle, repairs
from localvmss.errors import InvalidSpec
from localvmss.repairs import RepairsState
from localvmss.spec import ScaleSetSpec, parse_scale_set_body
from tests.unit.servicefake import instance_row

NOW = 1_000_000.0
GRACE = 60.0


def spec(enabled: bool = True, action: str = "Replace", mode: str = "Uniform") -> ScaleSetSpec:
    return ScaleSetSpec.model_validate(
        {
            "mode": mode,
            "automatic_repairs": {"enabled": enabled, "gracePeriod": f"PT{GRACE:.0f}S", "repairAction": action},
        }
    )


def inst(iid: int, health: str = "healthy", **values: Any) -> Any:
    values.setdefault("created_at", NOW - 3600)
    return instance_row("web", iid, health=health, **values)


def failing(n: int, since: float = NOW - 120) -> tuple[list[Any], dict[int, float]]:
    return [inst(i, "unhealthy") for i in range(n)], {i: since for i in range(n)}


@pytest.mark.parametrize(
    ("total", "cap"),
    [(1, 1), (3, 1), (19, 1), (20, 1), (39, 1), (40, 2), (100, 5), (1000, 50)],
)
def test_at_most_five_percent_in_repair_at_least_one(total: int, cap: int) -> None:
    assert repairs.max_in_repair(total) == cap


@pytest.mark.parametrize(
    ("case", "instance", "since", "due"),
    [
        ("unhealthy for the whole grace", inst(0, "unhealthy"), NOW - GRACE, True),
        ("unknown (unreachable) for the whole grace", inst(0, "unknown"), NOW - 61, True),
        ("inside the grace", inst(0, "unhealthy"), NOW - 59, False),
        ("never seen failing by the monitor", inst(0, "unhealthy"), None, False),
        ("healthy", inst(0, "healthy"), NOW - 120, False),
        ("initializing", inst(0, "initializing"), NOW - 120, False),
        ("protected from scale-set actions", inst(0, "unhealthy", protect_actions=True), NOW - 120, False),
        ("protected from scale-in only: repaired", inst(0, "unhealthy", protect_scale_in=True), NOW - 120, True),
        ("being deleted", inst(0, "unhealthy", provisioning_state="Deleting"), NOW - 120, False),
        ("a restart already pending", inst(0, "unhealthy", restart_generation=1), NOW - 120, False),
        (
            "still Creating but failing past its grace",
            inst(0, "unknown", provisioning_state="Creating"),
            NOW - 61,
            True,
        ),
    ],
)
def test_which_instance_is_due(case: str, instance: Any, since: float | None, due: bool) -> None:
    failing_since = {} if since is None else {0: since}
    decision = repairs.plan(spec(), [instance], failing_since, RepairsState(), NOW)
    assert [r.instance_id for r in decision.repairs] == ([0] if due else []), case


@pytest.mark.parametrize(
    ("case", "the_spec", "state"),
    [
        ("repairs off", spec(enabled=False), RepairsState()),
        ("a Flexible set's VMs are on their own", spec(mode="Flexible"), RepairsState()),
        ("suspended", spec(), RepairsState(state=repairs.SUSPENDED)),
    ],
)
def test_nothing_is_repaired(case: str, the_spec: ScaleSetSpec, state: RepairsState) -> None:
    instances, since = failing(3)
    assert repairs.plan(the_spec, instances, since, state, NOW) == repairs.Decision(), case


@pytest.mark.parametrize(
    ("case", "instances", "repaired", "waiting"),
    [
        ("one at a time in a small set", [inst(0, "unhealthy"), inst(1, "unhealthy"), inst(2)], [0], [1]),
        (
            "another already in repair (restart pending)",
            [inst(0, "unhealthy"), inst(1, restart_generation=1), inst(2)],
            [],
            [0],
        ),
        (
            "another Initializing after its reboot",
            [inst(0, "unhealthy"), inst(1, "initializing", boot_started_at=NOW - 5), inst(2)],
            [],
            [0],
        ),
        (
            "Initializing ends with the grace",
            [inst(0, "unhealthy"), inst(1, "initializing", boot_started_at=NOW - GRACE - 1), inst(2)],
            [0],
            [],
        ),
        ("a replaced one still being deleted", [inst(0, "unhealthy"), inst(1, provisioning_state="Deleting")], [], [0]),
        (
            "40 instances: two at a time, longest failing first",
            [inst(i, "unhealthy" if i in (7, 8, 9) else "healthy") for i in range(40)],
            [9, 8],
            [7],
        ),
    ],
)
def test_rate_cap(case: str, instances: list[Any], repaired: list[int], waiting: list[int]) -> None:
    since = {7: NOW - 100, 8: NOW - 110, 9: NOW - 120, 0: NOW - 120, 1: NOW - 110}
    decision = repairs.plan(spec(), instances, since, RepairsState(), NOW)
    assert ([r.instance_id for r in decision.repairs], decision.waiting) == (repaired, waiting), case


@pytest.mark.parametrize("action", ["Replace", "Restart", "Reimage"])
def test_the_repair_names_its_action_and_reason(action: str) -> None:
    instances = [inst(0, "unhealthy", message="the domain stopped outside localvmss")]
    (repair,) = repairs.plan(spec(action=action), instances, {0: NOW - 90}, RepairsState(), NOW).repairs
    assert repair.action == action
    assert repair.reason == "unhealthy for 90 s (grace 60 s): the domain stopped outside localvmss"


@pytest.mark.parametrize(
    ("failed_in_row", "repaired", "suspends"),
    [(0, [0], False), (2, [0], False), (3, [], True), (7, [], True)],
)
def test_suspension_after_repairs_in_a_row_that_did_not_yield_a_healthy_instance(
    failed_in_row: int, repaired: list[int], suspends: bool
) -> None:
    instances, since = failing(1)
    decision = repairs.plan(spec(), instances, since, RepairsState(failed_in_row=failed_in_row), NOW)
    assert [r.instance_id for r in decision.repairs] == repaired
    assert (decision.suspend is not None) == suspends
    if suspends:
        assert f"{failed_in_row} repairs in a row did not yield a healthy instance" in str(decision.suspend)


def test_no_suspension_while_nothing_is_due() -> None:
    assert repairs.plan(spec(), [inst(0)], {}, RepairsState(failed_in_row=5), NOW) == repairs.Decision()


def test_one_decision_never_goes_past_the_suspension_threshold() -> None:
    instances = [inst(i, "unhealthy" if i < 5 else "healthy") for i in range(100)]
    since = {i: NOW - 120 for i in range(5)}
    decision = repairs.plan(spec(), instances, since, RepairsState(failed_in_row=2), NOW)
    assert [r.instance_id for r in decision.repairs] == [0], "cap 5, but only one more before suspension"


@pytest.mark.parametrize(
    ("case", "state", "instance", "reset"),
    [
        (
            "restarted by the repair, now healthy",
            RepairsState(failed_in_row=2, last_repair_at=NOW),
            inst(0, boot_started_at=NOW),
            True,
        ),
        (
            "a replacement made after it",
            RepairsState(failed_in_row=1, last_repair_at=NOW),
            inst(5, created_at=NOW + 30),
            True,
        ),
        (
            "booted before the last repair",
            RepairsState(failed_in_row=2, last_repair_at=NOW),
            inst(1, boot_started_at=NOW - 1),
            False,
        ),
        ("nothing failed", RepairsState(failed_in_row=0, last_repair_at=NOW), inst(0, boot_started_at=NOW), False),
        ("never repaired", RepairsState(), inst(0), False),
    ],
)
def test_a_healthy_instance_after_the_last_repair_clears_the_count(
    case: str, state: RepairsState, instance: Any, reset: bool
) -> None:
    new = repairs.after_healthy(state, instance)
    assert (new is not None and new.failed_in_row == 0) == reset, case
    if not reset:
        assert new is None


def test_state_round_trip_and_transitions() -> None:
    state = repairs.after_repairs(RepairsState(), 2, NOW)
    assert (state.failed_in_row, state.last_repair_at) == (2, NOW)
    assert RepairsState.from_json(state.to_json()) == state
    assert RepairsState.from_json({}) == RepairsState() == RepairsState.from_json(None)
    down = repairs.suspended(state, "why", NOW + 1)
    assert (down.state, down.reason, down.since) == ("Suspended", "why", NOW + 1)
    up = repairs.resumed(down, NOW + 2)
    assert (up.state, up.reason, up.failed_in_row) == ("Running", "", 0)
    assert repairs.service_state(spec(), down) == "Suspended"
    assert repairs.service_state(spec(enabled=False), down) == "NotRunning"


@pytest.mark.parametrize(
    ("health", "boot_age", "initializing"),
    [
        ("unknown", 10, True),  # just (re)booted, not yet seen
        ("initializing", 59, True),
        ("initializing", 61, False),  # the grace is over
        ("healthy", 10, False),  # healthy once: no longer initializing
        ("unhealthy", 10, False),
    ],
)
def test_initializing(health: str, boot_age: float, initializing: bool) -> None:
    assert lifecycle.initializing(inst(0, health, boot_started_at=NOW - boot_age), spec(), NOW) is initializing


def body(policy: dict[str, Any]) -> dict[str, Any]:
    return {
        "sku": {"capacity": 1},
        "properties": {
            "virtualMachineProfile": {"storageProfile": {"imageReference": {"id": "base"}}},
            "automaticRepairsPolicy": policy,
        },
    }


@pytest.mark.parametrize(
    ("policy", "grace", "action"),
    [
        ({"enabled": True}, "PT10M", "Replace"),  # Azure's defaults
        ({"enabled": True, "gracePeriod": "PT0S", "repairAction": "restart"}, "PT0S", "Restart"),
        ({"enabled": True, "gracePeriod": "PT90M", "repairAction": "REIMAGE"}, "PT90M", "Reimage"),
    ],
)
def test_policy_accepted(policy: dict[str, Any], grace: str, action: str) -> None:
    parsed, _ = parse_scale_set_body("web", body(policy), {"base"})
    assert (parsed.automatic_repairs.grace_period, parsed.automatic_repairs.repair_action.value) == (grace, action)


@pytest.mark.parametrize(
    ("policy", "words"),
    [
        ({"gracePeriod": "PT91M"}, "must be between PT0S and PT90M"),
        ({"gracePeriod": "-PT1M"}, "must be between PT0S and PT90M"),
        ({"gracePeriod": "ten minutes"}, "is not an ISO-8601 duration"),
        ({"repairAction": "Redeploy"}, "is not one of Replace, Restart, Reimage"),
        ({"repairAction": 3}, "repairAction"),
    ],
)
def test_policy_refused_in_one_line(policy: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidSpec) as exc:
        parse_scale_set_body("web", body({"enabled": True, **policy}), {"base"})
    assert words in exc.value.message and "\n" not in exc.value.message
