"""Overprovisioning through the reconciler, over recording fake hosts: a scale-out makes extras
(candidates, never in rotation), the first to become healthy are adopted, the rest are removed
before they take traffic, and the activity log says which were kept and which removed."""

from __future__ import annotations

from localvmss import lifecycle
from localvmss.errors import CapacityError
from localvmss.model import ProvisioningState
from tests.unit.test_reconciler import Env, all_running, env  # noqa: F401 (env: the fixture)


class Watch:
    """Converges pass by pass and records every instance that was ever in rotation (what the
    load balancer sends traffic to, lifecycle.in_rotation) after each pass and its workers."""

    def __init__(self, e: Env) -> None:
        self.e = e
        self.in_rotation: set[int] = set()

    def converge(self, passes: int) -> None:
        for _ in range(passes):
            self.e.converge(1, guests_answer=False)
            self.in_rotation |= {i.instance_id for i in self.e.store.instances() if lifecycle.in_rotation(i)}


def healthy(e: Env, name: str, iid: int) -> None:
    """The health monitor's record of a guest that answered its probe (at the env's clock)."""
    inst = e.store.instance(name, iid)
    e.store.record_status(
        name,
        iid,
        inst.generation,
        provisioning_state=ProvisioningState.SUCCEEDED.value,
        health="healthy",
        ready_at=e.clock(),
    )


def test_scale_out_keeps_the_first_healthy_and_removes_the_extra_unseen(env: Env) -> None:  # noqa: F811
    b = Watch(env)
    env.create_set("web", 1, fault_domains=2, overprovision=True)
    b.converge(2)
    insts = env.instances("web")
    assert [(i.instance_id, i.overprovisioned) for i in insts] == [(0, True), (1, True)], "1 asked + 1 extra"
    assert all_running(env) == {"lvmss-web-0", "lvmss-web-1"}
    assert b.in_rotation == set(), "candidates are not in rotation, healthy or not"

    healthy(env, "web", 1)  # the extra became healthy first
    env.clock.advance(1)
    b.converge(2)
    assert [(i.instance_id, i.overprovisioned) for i in env.instances("web")] == [(1, False)]
    assert all_running(env) == {"lvmss-web-1"}
    assert b.in_rotation == {1}, "the removed extra never took traffic"
    assert ("remove", 0) in env.balancer.calls
    log = [a.message for a in env.store.activity("web") if a.kind == "overprovision"]
    assert log == [
        "overprovisioning: kept instances [1] (the first to become healthy), removing extras [0] (never in rotation)"
    ]


def test_scale_out_of_a_running_set_ends_with_exactly_the_capacity(env: Env) -> None:  # noqa: F811
    b = Watch(env)
    env.create_set("web", 1)
    env.converge(2)
    assert [(i.instance_id, i.overprovisioned) for i in env.instances("web")] == [(0, False)]
    row = env.store.scale_set("web")
    env.store.update_scale_set("web", model={**row.model, "overprovision": True}, capacity=2)
    b.converge(1)
    assert [(i.instance_id, i.overprovisioned) for i in env.instances("web")] == [(0, False), (1, True), (2, True)]
    created = [a for a in env.store.activity("web") if a.kind == "scale-out"][-1]
    assert created.instance_ids == [1, 2] and "overprovisioned" in created.message

    healthy(env, "web", 2)
    env.clock.advance(1)
    healthy(env, "web", 1)  # later: it goes
    b.converge(3)
    assert [(i.instance_id, i.overprovisioned) for i in env.instances("web")] == [(0, False), (2, False)]
    assert 1 not in b.in_rotation
    assert env.store.scale_set("web").capacity == 2


def test_without_overprovisioning_nothing_extra_is_made(env: Env) -> None:  # noqa: F811
    env.create_set("web", 2)
    env.converge(1, guests_answer=False)
    assert [(i.instance_id, i.overprovisioned) for i in env.instances("web")] == [(0, False), (1, False)]
    assert not [a for a in env.store.activity("web") if a.kind == "overprovision"]


def test_a_scale_in_during_an_overprovisioned_scale_out_removes_the_candidates_first(env: Env) -> None:  # noqa: F811
    env.create_set("web", 1)
    env.converge(2)
    row = env.store.scale_set("web")
    env.store.update_scale_set(
        "web", model={**row.model, "overprovision": True, "scale_in_policy": "NewestVM"}, capacity=3
    )
    env.converge(1, guests_answer=False)
    assert len(env.instances("web")) == 4  # 1 + 2 asked + 1 extra
    env.store.update_scale_set("web", capacity=1)
    env.converge(3, guests_answer=False)
    # NewestVM would have chosen a candidate; the candidates go as extras, the member stays.
    assert [i.instance_id for i in env.instances("web")] == [0]


def test_extras_that_cannot_be_admitted_cost_the_extras_never_the_scale_out(env: Env) -> None:  # noqa: F811
    """A NAT pool (or host memory) with room for the instances asked for only: they are made,
    the extra is not, and the activity log says why; the next passes do not retry it forever."""
    real = env.rec.alloc.nat_port
    made: list[int] = []

    def pool_of_two(db: object, scale_set: str, spec: object) -> int | None:
        if len(made) >= 2:
            raise CapacityError(f"inbound NAT pool 50000-50001 of {scale_set} is exhausted")
        made.append(1)
        return real(db, scale_set, spec)  # type: ignore[arg-type]

    env.rec.alloc.nat_port = pool_of_two  # type: ignore[method-assign]
    env.create_set("web", 2, fault_domains=2, overprovision=True)
    env.converge(1, guests_answer=False)
    assert sorted(i.instance_id for i in env.instances("web")) == [0, 1], "the two asked for, no extra"
    log = [a.message for a in env.store.activity("web") if a.kind == "scale-out"]
    assert len(log) == 1 and "1 overprovisioning extra(s) not made: inbound NAT pool" in log[0], log
    env.converge(2)
    assert len(env.instances("web")) == 2 and len([a for a in env.store.activity("web") if a.kind == "scale-out"]) == 1
