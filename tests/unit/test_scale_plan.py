"""The scale plan (planner.plan_scale): which instances a scale creates, removes, adopts or keeps,
in order and why. The reconciler carries out this very object and --what-if prints it, so these
tables pin both the preview and the action."""

from __future__ import annotations

import re

import pytest

from localvmss import lifecycle
from localvmss.errors import InvalidSpec
from localvmss.model import ScaleInPolicy
from localvmss.planner import HostFor, Slot, overprovision_extra, plan_scale
from localvmss.plans import Change, Plan
from localvmss.spec import parse_scale_set_body, spec_to_azure
from localvmss.store import InstanceRow
from tests.unit.test_planner import slots

D, N, OLD = ScaleInPolicy.DEFAULT, ScaleInPolicy.NEWEST_VM, ScaleInPolicy.OLDEST_VM


def hosts(table: dict[str | None, list[str]]) -> HostFor:
    """host_for over a table zone -> hosts that answer, fault domain n -> n-th host (as allocation)."""

    def host_for(zone: str | None, fd: int) -> str | None:
        candidates = sorted(table.get(zone, [])) if zone is not None else sorted(h for hs in table.values() for h in hs)
        return candidates[fd % len(candidates)] if candidates else None

    return host_for


def summary(plan: Plan) -> list[tuple[str, int | None, str | None, int | None, str | None]]:
    return [(c.change.value, c.instance_id, c.zone, c.fault_domain, c.host) for c in plan.changes]


REGIONAL = hosts({None: ["h1", "h2"]})


# -- scale-out ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("existing", "capacity", "zones", "fds", "table", "zone_balance", "expected", "notes"),
    [
        # regional, two fault domains on two hosts: the emptier fault domain first
        ("-:0", 3, [], 2, {None: ["h1", "h2"]}, False, [(None, 1, "h2"), (None, 0, "h1")], []),
        ("", 2, [], 1, {None: ["h1", "h2"]}, False, [(None, 0, "h1"), (None, 0, "h1")], []),
        # zones: the least-populated zone first, ties by listed order
        ("1:0", 3, ["1", "2", "3"], 1, {"1": ["a"], "2": ["b"], "3": ["c"]}, False, [("2", 0, "b"), ("3", 0, "c")], []),
        # zone 3 has no host that answers, zoneBalance=false: the first zone that has one
        ("1:0 2:0", 3, ["1", "2", "3"], 1, {"1": ["a"], "2": ["b"]}, False, [("1", 0, "a")], []),
        # ... zoneBalance=true: it waits instead, and the plan says so
        (
            "1:0 2:0",
            3,
            ["1", "2", "3"],
            1,
            {"1": ["a"], "2": ["b"]},
            True,
            [],
            ["1 instance(s) wait for an available host in zone(s) ['3']"],
        ),
        # no host answers at all
        ("", 2, [], 1, {}, False, [], ["2 instance(s) wait for an available host in zone(s) ['None']"]),
    ],
)
def test_scale_out(
    existing: str,
    capacity: int,
    zones: list[str],
    fds: int,
    table: dict[str | None, list[str]],
    zone_balance: bool,
    expected: list[tuple[str | None, int, str]],
    notes: list[str],
) -> None:
    plan = plan_scale(
        "web",
        slots(existing),
        capacity,
        zones=zones,
        fault_domain_count=fds,
        policy=D,
        zone_balance=zone_balance,
        host_for=hosts(table),
    )
    assert [(c.zone, c.fault_domain, c.host) for c in plan.changes] == expected
    assert all(c.change is Change.CREATE and c.instance_id is None and not c.overprovisioned for c in plan.changes)
    assert list(plan.notes) == notes
    assert plan.capacity == capacity and plan.action == "scale" and plan.scale_set == "web"


def test_scale_out_reasons_name_the_balance_rule() -> None:
    plan = plan_scale(
        "web",
        slots("1:0 2:0"),
        3,
        zones=["1", "2", "3"],
        fault_domain_count=1,
        policy=D,
        host_for=hosts({"1": ["a"], "2": ["b"]}),
    )
    (create,) = plan.changes
    assert "zone 3 has no host that answers; zone 1 instead (zoneBalance=false)" in create.reason
    plan = plan_scale("web", slots("-:0"), 2, zones=[], fault_domain_count=2, policy=D, host_for=REGIONAL)
    assert plan.changes[0].reason == "fault domain 1 holds the fewest instances"


def test_without_host_for_the_host_is_left_to_allocation_and_said_so() -> None:
    plan = plan_scale("web", [], 1, zones=[], fault_domain_count=1, policy=D)
    assert summary(plan) == [("create", None, None, 0, None)]
    assert plan.notes == ("hosts are chosen by allocation when the instances are created",)


# -- scale-in ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("existing", "capacity", "policy", "protected", "unhealthy", "prioritize", "removed", "kept", "notes"),
    [
        # Default: fault domain with the most, then the highest id
        ("-:0 -:1 -:0 -:1 -:0", 3, D, [], [], False, [4, 3], [], []),
        # NewestVM / OldestVM by creation time
        ("-:0 -:0 -:0", 2, N, [], [], False, [2], [], []),
        ("-:0 -:0 -:0", 2, OLD, [], [], False, [0], [], []),
        # zones are balanced first, whatever the policy
        ("1:0 1:0 1:0 2:0 2:0", 4, OLD, [], [], False, [0], [], []),
        # protected instances are kept and said so
        ("-:0 -:0 -:0", 2, N, [2], [], False, [1], [2], []),
        (
            "-:0 -:0 -:0",
            1,
            OLD,
            [0, 1],
            [],
            False,
            [2],
            [0, 1],
            ["1 instance(s) could not be removed: protected from scale-in"],
        ),
        # prioritizeUnhealthyVMs off (the default): unhealthy instances get no precedence
        ("-:0 -:0 -:0", 2, OLD, [], [2], False, [0], [], []),
        ("-:0 -:0 -:0", 2, D, [], [0], False, [2], [], []),
        # ... on: unhealthy first, then the policy
        ("-:0 -:0 -:0", 2, OLD, [], [2], True, [2], [], []),
        ("-:0 -:0 -:0 -:0", 2, D, [], [0, 1], True, [1, 0], [], []),
        # protection beats unhealthiness
        ("-:0 -:0", 1, D, [0], [0], True, [1], [0], []),
        # nothing to do
        ("-:0 -:0", 2, D, [], [], False, [], [], []),
    ],
)
def test_scale_in(
    existing: str,
    capacity: int,
    policy: ScaleInPolicy,
    protected: list[int],
    unhealthy: list[int],
    prioritize: bool,
    removed: list[int],
    kept: list[int],
    notes: list[str],
) -> None:
    plan = plan_scale(
        "web",
        slots(existing, protected=protected, unhealthy=unhealthy),
        capacity,
        zones=sorted({z for z in (s.split(":")[0] for s in existing.split()) if z != "-"}),
        fault_domain_count=2,
        policy=policy,
        prioritize_unhealthy=prioritize,
        host_for=REGIONAL,
    )
    assert plan.instance_ids(Change.REMOVE) == removed
    assert plan.instance_ids(Change.KEEP) == kept
    assert all(c.reason == "protected from scale-in" for c in plan.of(Change.KEEP))
    assert plan.of(Change.CREATE) == []
    assert list(plan.notes) == notes


@pytest.mark.parametrize(
    ("existing", "policy", "unhealthy", "prioritize", "reason"),
    [
        ("-:0 -:1 -:0", D, [], False, "Default: fault domain 0 holds the most (2), the highest instance id in it"),
        ("-:0 -:0", N, [], False, "NewestVM: the newest removable instance"),
        ("-:0 -:0", OLD, [], False, "OldestVM: the oldest removable instance"),
        (
            "1:0 1:0 2:0",
            OLD,
            [],
            False,
            "zone 1 holds the most instances (2); OldestVM: the oldest removable instance there",
        ),
        ("1:0 2:0", N, [], False, "zones balanced; NewestVM: the newest removable instance there"),
        ("-:0 -:0", N, [0], True, "unhealthy or inactive (prioritizeUnhealthyVMs): removed before healthy instances"),
    ],
)
def test_scale_in_reasons(
    existing: str, policy: ScaleInPolicy, unhealthy: list[int], prioritize: bool, reason: str
) -> None:
    s = slots(existing, unhealthy=unhealthy)
    plan = plan_scale(
        "web",
        s,
        len(s) - 1,
        zones=sorted({x.zone for x in s if x.zone}),
        fault_domain_count=2,
        policy=policy,
        prioritize_unhealthy=prioritize,
    )
    assert plan.of(Change.REMOVE)[0].reason == reason


def test_a_host_that_just_came_back_holds_the_scale_in() -> None:
    plan = plan_scale("web", slots("-:0 -:0"), 1, zones=[], fault_domain_count=1, policy=D, hold_scale_in="wait")
    assert plan.changes == () and plan.notes == ("wait",)
    # ... but never a scale-out
    plan = plan_scale("web", slots("-:0"), 2, zones=[], fault_domain_count=1, policy=D, hold_scale_in="wait")
    assert [c.change for c in plan.changes] == [Change.CREATE]


# -- overprovisioning --------------------------------------------------------------------------
@pytest.mark.parametrize(("new", "extra"), [(0, 0), (1, 1), (2, 1), (5, 1), (6, 2), (10, 2), (11, 3), (100, 20)])
def test_overprovision_extra(new: int, extra: int) -> None:
    assert overprovision_extra(new) == extra


def test_overprovisioned_scale_out_creates_extras_all_as_candidates() -> None:
    plan = plan_scale(
        "web", slots("-:0"), 3, zones=[], fault_domain_count=2, policy=D, overprovision=True, host_for=REGIONAL
    )
    creates = plan.of(Change.CREATE)
    assert len(creates) == 3  # 2 new + ceil(20 %) = 1 extra
    assert all(c.overprovisioned for c in creates)
    assert [c.fault_domain for c in creates] == [1, 0, 1]
    assert creates[-1].reason.startswith("overprovisioned extra (1 for 2 new")
    assert plan.to_json()["changes"][0] == {
        "change": "create",
        "reason": "fault domain 1 holds the fewest instances",
        "platformFaultDomain": 1,
        "host": "h2",
        "overprovisioned": True,
    }


def cand(iid: int, ready_at: float | None, *, fd: int = 0) -> Slot:
    return Slot(instance_id=iid, zone=None, fault_domain=fd, created_at=float(iid), candidate=True, ready_at=ready_at)


def member(iid: int) -> Slot:
    return Slot(instance_id=iid, zone=None, fault_domain=0, created_at=float(iid))


@pytest.mark.parametrize(
    ("existing", "capacity", "expected"),
    [
        # 1 member, 2 candidates for capacity 2: none healthy yet -> both wait, nothing new
        ([member(0), cand(1, None), cand(2, None)], 2, [("keep", 1), ("keep", 2)]),
        # the first to become healthy is adopted, the other removed before it took traffic
        ([member(0), cand(1, None), cand(2, 50.0)], 2, [("adopt", 2), ("remove", 1)]),
        ([member(0), cand(1, 60.0), cand(2, 50.0)], 2, [("adopt", 2), ("remove", 1)]),
        # capacity 3 from 1: two adopted in the order they became healthy, the third removed
        ([member(0), cand(1, 70.0), cand(2, 50.0), cand(3, 60.0)], 3, [("adopt", 2), ("adopt", 3), ("remove", 1)]),
        # one adopted, one more still needed: the rest keep booting
        ([member(0), cand(1, None), cand(2, 50.0), cand(3, None)], 3, [("adopt", 2), ("keep", 1), ("keep", 3)]),
        # capacity lowered meanwhile to what the members are: every candidate goes
        ([member(0), cand(1, 50.0), cand(2, None)], 1, [("remove", 1), ("remove", 2)]),
        # ... below it: candidates go, then the policy chooses among members
        ([member(0), member(1), cand(2, 50.0)], 1, [("remove", 2), ("remove", 1)]),
        # capacity raised beyond what the candidates cover: the shortfall is created too
        ([member(0), cand(1, None)], 3, [("keep", 1), ("create", None)]),
    ],
)
def test_candidates_are_resolved_by_the_first_to_become_healthy(
    existing: list[Slot], capacity: int, expected: list[tuple[str, int | None]]
) -> None:
    plan = plan_scale("web", existing, capacity, zones=[], fault_domain_count=1, policy=D, host_for=REGIONAL)
    assert [(c.change.value, c.instance_id) for c in plan.changes] == expected
    candidates = {s.instance_id for s in existing if s.candidate}
    for c in plan.changes:
        if c.instance_id is not None:
            assert c.overprovisioned is (c.instance_id in candidates), "a member is never treated as an extra"


def test_the_scale_in_policy_never_chooses_a_candidate() -> None:
    # NewestVM would pick the newest (the candidate, id 2): candidates are the overprovision rule's.
    existing = [member(0), member(1), cand(2, 50.0)]
    plan = plan_scale("web", existing, 2, zones=[], fault_domain_count=1, policy=N)
    assert [(c.change.value, c.instance_id) for c in plan.changes] == [("remove", 2)]
    assert plan.of(Change.REMOVE)[0].reason.startswith("overprovisioned extra, never in rotation")


@pytest.mark.parametrize(
    ("capacity", "message"),
    [(-1, "capacity"), (True, "capacity")],
)
def test_plan_scale_rejects(capacity: int, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        plan_scale("web", [], capacity, zones=[], fault_domain_count=1, policy=D)


def test_plan_scale_rejects_an_unknown_policy() -> None:
    with pytest.raises(InvalidSpec, match="scaleInPolicy"):
        plan_scale("web", [], 1, zones=[], fault_domain_count=1, policy="Random")


# -- the lifecycle predicates the plan is built on ----------------------------------------------
def inst(**kw: object) -> InstanceRow:
    base: dict[str, object] = {
        "scale_set": "web",
        "instance_id": 0,
        "host": "h1",
        "fault_domain": 0,
        "update_domain": 0,
        "mac": "52:54:00:00:00:01",
        "ip": "198.18.0.10",
        "model_version": 1,
        "desired_power": "running",
        "provisioning_state": "Succeeded",
        "created_at": 0.0,
        "health": "healthy",
        "ready_at": 10.0,
    }
    base.update(kw)
    return InstanceRow(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "unhealthy"),
    [
        ({}, False),
        ({"health": "unhealthy"}, True),
        ({"health": "initializing"}, False),  # inside its grace period: not unhealthy
        ({"health": "unknown"}, False),
        ({"provisioning_state": "Failed"}, True),
        ({"desired_power": "stopped"}, True),  # inactive
        ({"desired_power": "deallocated"}, True),
        ({"provisioning_state": "Creating", "health": "unknown", "ready_at": None}, False),
    ],
)
def test_unhealthy_for_scale_in(changes: dict[str, object], unhealthy: bool) -> None:
    assert lifecycle.unhealthy_for_scale_in(inst(**changes)) is unhealthy


@pytest.mark.parametrize(
    ("changes", "ready", "in_rotation"),
    [
        ({}, True, True),
        ({"overprovisioned": True}, True, False),  # an extra is never in rotation until adopted
        ({"overprovisioned": True, "ready_at": None}, False, False),
        ({"ready_at": None}, False, False),
        ({"provisioning_state": "Deleting"}, False, False),
    ],
)
def test_ready_and_in_rotation(changes: dict[str, object], ready: bool, in_rotation: bool) -> None:
    row = inst(**changes)
    assert lifecycle.ready(row) is ready
    assert lifecycle.in_rotation(row) is in_rotation


# -- the spec fields the plan follows -----------------------------------------------------------
def body(mode: str = "Uniform", **props: object) -> dict[str, object]:
    vmp = {"storageProfile": {"imageReference": {"id": "base"}}} if mode == "Uniform" else None
    return {"properties": {"orchestrationMode": mode, **({"virtualMachineProfile": vmp} if vmp else {}), **props}}


@pytest.mark.parametrize(
    ("props", "prioritize", "overprovision"),
    [
        ({}, False, False),  # Azure's default for prioritizeUnhealthyVMs; localvmss's for overprovision
        ({"scaleInPolicy": {"rules": ["OldestVM"], "prioritizeUnhealthyVMs": True}}, True, False),
        ({"scaleInPolicy": {"prioritizeUnhealthyVMs": False}}, False, False),
        ({"overprovision": True}, False, True),
        ({"overprovision": False}, False, False),
    ],
)
def test_spec_fields(props: dict[str, object], prioritize: bool, overprovision: bool) -> None:
    spec, _ = parse_scale_set_body("web", body(**props), {"base"})
    assert (spec.prioritize_unhealthy_vms, spec.overprovision) == (prioritize, overprovision)
    shown = spec_to_azure("web", spec, 0)["properties"]
    assert shown["scaleInPolicy"]["prioritizeUnhealthyVMs"] is prioritize
    assert shown["overprovision"] is overprovision
    again, _ = parse_scale_set_body(
        "web",
        {"properties": {**shown, "virtualMachineProfile": body()["properties"]["virtualMachineProfile"]}},
        {"base"},
    )  # type: ignore[index]
    assert (again.prioritize_unhealthy_vms, again.overprovision) == (prioritize, overprovision), "round trip"


@pytest.mark.parametrize(
    ("b", "message"),
    [
        (body("Flexible", overprovision=True), "overprovision is not supported in VM (Flexible) orchestration mode"),
        (body(overprovision="often"), "overprovision"),
        (body(scaleInPolicy={"prioritizeUnhealthyVMs": "maybe"}), "prioritizeUnhealthyVMs"),
    ],
)
def test_spec_refuses(b: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidSpec, match=re.escape(message)):
        parse_scale_set_body("web", b, {"base"})
