"""Standby pools through the reconciler and the service, over recording fake hosts: a pool is
filled with records of their own (out of capacity and the load balancer), each instance brought
to its standby state once healthy; a scale-out takes pool instances (fastest state first)
instead of creating; outdated ones are replaced, never taken; reuseOnScaleIn returns drained
victims to the pool; the API refuses actions on pool instances and counts members only.

The fake host (tests/unit/fakehost.py) has no suspend or managed save; this module adds them to
it for its own tests (libvirt's rule: ``start`` resumes a paused domain and restores a saved one).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from localvmss import lifecycle, reconciler, terminate
from localvmss.capacity import CapacityRule
from localvmss.errors import NotFound
from localvmss.health import ProbeResult
from localvmss.model import PowerState, ProvisioningState
from localvmss.plans import Change, Plan
from localvmss.reconciler import needs_work
from localvmss.spec import parse_scale_set_body
from localvmss.store import InstanceRow
from localvmss.virt.host import OwnedDomain
from tests.unit.fakehost import FakeHost
from tests.unit.servicefake import refused
from tests.unit.test_reconciler import GRACE, Env, RecordingBalancer, env  # noqa: F401 (env: the fixture)
from tests.unit.test_what_if import client, written

LB = {"loadBalancingRules": [{"protocol": "Tcp", "frontendPort": 8080, "backendPort": 80}]}
STATE_POWER = {"Running": PowerState.RUNNING, "Paused": PowerState.PAUSED, "Saved": PowerState.STOPPED}


# -- the fake host's suspend and managed save, the balancer's member lists -----------------------
def _saved(host: FakeHost) -> set[str]:
    return host.__dict__.setdefault("saved_images", set())  # type: ignore[no-any-return]


def _suspend(self: FakeHost, name: str) -> None:
    self._enter("suspend", name)
    if name not in self.domains:
        raise NotFound(f"domain {name} on host {self.name}")
    if self.domains[name].state is PowerState.RUNNING:
        self.domains[name].state = PowerState.PAUSED


def _managed_save(self: FakeHost, name: str) -> None:
    self._enter("managed_save", name)
    if name not in self.domains:
        raise NotFound(f"domain {name} on host {self.name}")
    dom = self.domains[name]
    if dom.state in (PowerState.RUNNING, PowerState.PAUSED):
        dom.state = PowerState.STOPPED
        _saved(self).add(name)


def _has_managed_save(self: FakeHost, name: str) -> bool:
    self._enter("has_managed_save", name)
    return name in _saved(self)


_plain_start = FakeHost.start
_plain_undefine = FakeHost.undefine


def _start(self: FakeHost, name: str) -> None:
    _plain_start(self, name)  # running, paused (resumed) or saved (restored): it runs
    _saved(self).discard(name)


def _undefine(self: FakeHost, name: str) -> None:
    _plain_undefine(self, name)
    _saved(self).discard(name)


class MemberBalancer(RecordingBalancer):
    """Also records which instances each sync hands the load balancer."""

    def __init__(self) -> None:
        super().__init__()
        self.synced: list[list[int]] = []

    def sync(self, scale_set: str, spec: Any, instances: list[InstanceRow]) -> None:
        super().sync(scale_set, spec, instances)
        self.synced.append(sorted(i.instance_id for i in instances))


@pytest.fixture
def penv(env: Env, monkeypatch: pytest.MonkeyPatch) -> Env:  # noqa: F811
    for verb, fn in (
        ("suspend", _suspend),
        ("managed_save", _managed_save),
        ("has_managed_save", _has_managed_save),
        ("start", _start),
        ("undefine", _undefine),
    ):
        monkeypatch.setattr(FakeHost, verb, fn, raising=False)
    balancer = MemberBalancer()
    env.balancer = balancer
    env.rec.balancer = balancer

    # The probe a worker sends a just-resumed member, answered as the guest would: healthy
    # while its domain runs (nothing is sent on a network).
    def probe_once(ip: str, probe: Any, timeout_s: float = 1.0) -> ProbeResult:
        inst = next(i for i in env.store.instances() if i.ip == ip)
        dom = env.hosts[inst.host].domains.get(inst.domain_name)
        PROBED.setdefault(id(env), []).append(inst.instance_id)
        if dom is not None and dom.state is PowerState.RUNNING:
            return ProbeResult("healthy", "fake: running")
        return ProbeResult("unhealthy", "fake: not running")

    monkeypatch.setattr(reconciler, "probe_once", probe_once)
    plain_delete = env.store.delete_instance_row

    def delete_row(scale_set: str, instance_id: int) -> None:
        DELETED.setdefault(id(env), []).append(env.store.instance(scale_set, instance_id))
        plain_delete(scale_set, instance_id)

    monkeypatch.setattr(env.store, "delete_instance_row", delete_row)
    return env


DELETED: dict[int, list[InstanceRow]] = {}
PROBED: dict[int, list[int]] = {}


def deleted(e: Env) -> list[InstanceRow]:
    """The records the workers deleted, as they were just before."""
    return DELETED.get(id(e), [])


# -- helpers ---------------------------------------------------------------------------------------
def create_set(
    e: Env,
    capacity: int,
    pool: dict[str, Any] | None,
    fault_domains: int = 1,
    lb: bool = True,
    notice: bool = False,
    name: str = "web",
) -> None:
    vmp: dict[str, Any] = {"storageProfile": {"imageReference": {"id": "base"}}, "osProfile": {}}
    if lb:
        vmp["networkProfile"] = {"loadBalancer": LB}
    if notice:
        vmp["scheduledEventsProfile"] = {"terminateNotificationProfile": {"enable": True, "notBeforeTimeout": "PT5M"}}
    props: dict[str, Any] = {
        "orchestrationMode": "Uniform",
        "platformFaultDomainCount": fault_domains,
        "virtualMachineProfile": vmp,
    }
    if pool is not None:
        props["standbyPool"] = pool
    body = {"sku": {"name": "Standard_B1ls", "capacity": capacity}, "properties": props}
    spec, cap = parse_scale_set_body(name, body, {"base"})
    e.store.insert_scale_set(name, spec.mode.value, spec.model_dump(mode="json"), cap, "Creating")


def pool_of(e: Env, name: str = "web") -> list[InstanceRow]:
    return [i for i in e.instances(name) if lifecycle.in_pool(i)]


def members(e: Env, name: str = "web") -> list[InstanceRow]:
    return [i for i in e.instances(name) if not lifecycle.in_pool(i)]


def power(e: Env, inst: InstanceRow) -> PowerState | None:
    dom = e.hosts[inst.host].domains.get(inst.domain_name)
    return None if dom is None else dom.state


def calls(e: Env, verb: str) -> list[str]:
    return [args[0] for h in e.hosts.values() for v, args in h.calls if v == verb]


def plan(e: Env, capacity: int | None = None) -> Plan:
    return e.rec.scale_plan(e.store.scale_set("web"), capacity=capacity)


def scale(e: Env, capacity: int) -> None:
    e.store.update_scale_set("web", capacity=capacity)


def new_model_version(e: Env) -> None:
    row = e.store.scale_set("web")
    e.store.update_model("web", row.model, row.capacity, new_version=True, actor="test", changes=["a test"])


# -- filling the pool ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("state", "verb", "other"),
    [
        pytest.param("Paused", "suspend", "managed_save", id="paused"),
        pytest.param("Saved", "managed_save", "suspend", id="saved"),
        pytest.param("Running", None, None, id="running"),
    ],
)
def test_a_pool_is_filled_out_of_capacity_and_load_balancer(
    penv: Env, state: str, verb: str | None, other: str | None
) -> None:
    create_set(penv, 2, {"maxReadyCapacity": 3, "virtualMachineState": state}, fault_domains=2)
    penv.converge(4)
    pool = pool_of(penv)
    assert len(penv.instances("web")) == 5
    assert [i.standby_state for i in pool] == [state] * 3
    assert all(i.origin == "" for i in pool), "a pool instance has served nowhere yet"
    assert {i.origin for i in members(penv)} == {lifecycle.COLD_BOOT}
    assert all(i.standby_at is not None and lifecycle.standing_by(i) for i in pool)
    assert [i.instance_id for i in penv.instances("web") if lifecycle.counts_toward_capacity(i)] == [
        i.instance_id for i in members(penv)
    ]
    assert len(members(penv)) == 2
    assert not any(lifecycle.in_rotation(i) for i in pool)
    assert {power(penv, i) for i in pool} == {STATE_POWER[state]}
    assert {power(penv, i) for i in members(penv)} == {PowerState.RUNNING}
    pool_domains = sorted(i.domain_name for i in pool)
    if verb is not None:
        assert sorted(calls(penv, verb)) == pool_domains, "each pool instance brought to its state once"
    if other is not None:
        assert calls(penv, other) == []
    balancer = penv.balancer
    assert isinstance(balancer, MemberBalancer) and balancer.synced
    member_ids = sorted(i.instance_id for i in members(penv))
    assert all(set(s) <= set(member_ids) for s in balancer.synced), "no pool instance given to the load balancer"
    assert balancer.synced[-1] == member_ids
    assert not [c for c in balancer.calls if c[0] == "drain"], "nothing to drain: never in the load balancer"
    log = [a.message for a in penv.store.activity("web") if a.kind == "standby-pool"]
    assert any(m.startswith("filling the standby pool: creating instances") for m in log), log
    assert sum(f"standing by ({state})" in m for m in log) == 3, log
    # converged: another pass gives no worker anything to do
    assert penv.rec.pass_once().submitted == 0
    assert penv.store.scale_set("web").provisioning_state == ProvisioningState.SUCCEEDED.value


@pytest.mark.parametrize(
    ("dist", "size", "expected"),
    [
        pytest.param({"pausedPercent": 50, "savedPercent": 50}, 4, {"Paused": 2, "Saved": 2}, id="half-half"),
        pytest.param(
            {"runningPercent": 34, "pausedPercent": 33, "savedPercent": 33},
            3,
            {"Running": 1, "Paused": 1, "Saved": 1},
            id="thirds",
        ),
        pytest.param({"runningPercent": 25, "pausedPercent": 75}, 4, {"Running": 1, "Paused": 3}, id="quarter"),
    ],
)
def test_a_distribution_fills_each_state(penv: Env, dist: dict[str, int], size: int, expected: dict[str, int]) -> None:
    create_set(penv, 1, {"maxReadyCapacity": size, "vmStateDistribution": dist})
    penv.converge(4)
    pool = pool_of(penv)
    got = {s: sum(1 for i in pool if i.standby_state == s) for s in expected}
    assert got == expected and len(pool) == size
    assert all(power(penv, i) is STATE_POWER[str(i.standby_state)] for i in pool)


def test_without_a_pool_nothing_is_kept_apart(penv: Env) -> None:
    create_set(penv, 2, None)
    penv.converge(3)
    assert pool_of(penv) == [] and calls(penv, "suspend") == [] and calls(penv, "managed_save") == []
    assert not [a for a in penv.store.activity("web") if a.kind == "standby-pool"]


# -- scale-out takes from the pool ------------------------------------------------------------------
THIRDS = {"runningPercent": 34, "pausedPercent": 33, "savedPercent": 33}


@pytest.mark.parametrize(
    ("more", "taken", "created"),
    [
        pytest.param(1, ["Running"], 0, id="one-running-first"),
        pytest.param(2, ["Running", "Paused"], 0, id="two-then-paused"),
        pytest.param(3, ["Running", "Paused", "Saved"], 0, id="three-all"),
        pytest.param(4, ["Running", "Paused", "Saved"], 1, id="four-then-a-new-one"),
    ],
)
def test_a_scale_out_takes_the_fastest_first(penv: Env, more: int, taken: list[str], created: int) -> None:
    create_set(penv, 1, {"maxReadyCapacity": 3, "vmStateDistribution": THIRDS})
    penv.converge(4)
    state_of = {i.instance_id: str(i.standby_state) for i in pool_of(penv)}
    assert sorted(state_of.values()) == ["Paused", "Running", "Saved"]
    preview = plan(penv, 1 + more)
    takes = preview.of(Change.TAKE)
    assert [state_of[int(c.instance_id or -1)] for c in takes] == taken
    assert all(f"from the standby pool ({state_of[int(c.instance_id or -1)]})" in c.reason for c in takes)
    assert len(preview.of(Change.CREATE)) == created
    assert preview.capacity == 1 + more

    scale(penv, 1 + more)
    penv.converge(1, guests_answer=False)
    ids = [int(c.instance_id or -1) for c in takes]
    for iid in ids:
        inst = penv.store.instance("web", iid)
        assert not lifecycle.in_pool(inst) and inst.standby_at is None
        assert inst.origin == f"{lifecycle.FROM_POOL} ({state_of[iid]})"
        assert lifecycle.counts_toward_capacity(inst)
    log = [a for a in penv.store.activity("web") if a.kind == "scale-out"]
    assert any(a.message.startswith("taking instances") and a.instance_ids == ids for a in log), log
    penv.converge(4)
    assert len(members(penv)) == 1 + more
    for iid in ids:
        inst = penv.store.instance("web", iid)
        assert lifecycle.ready(inst) and power(penv, inst) is PowerState.RUNNING, iid
        assert iid in PROBED.get(id(penv), []), "probed at once after its resume"
        assert inst.domain_name in calls(penv, "sync_clock"), "its clock set after the resume"
        assert lifecycle.in_rotation(inst)
    assert [i.origin for i in members(penv)].count(lifecycle.COLD_BOOT) == 1 + created
    # the pool is refilled to its size, with new instances
    pool = pool_of(penv)
    assert len(pool) == 3 and not set(ids) & {i.instance_id for i in pool}
    balancer = penv.balancer
    assert isinstance(balancer, MemberBalancer)
    assert balancer.synced[-1] == sorted(i.instance_id for i in members(penv))


def test_what_if_shows_the_takes_the_pass_carries_out(penv: Env) -> None:
    create_set(penv, 1, {"maxReadyCapacity": 2, "virtualMachineState": "Paused"})
    penv.converge(4)
    api = client(penv)
    before = written(penv)
    resp = api.patch("/scaleSets/web?whatIf=true", json={"sku": {"capacity": 3}})
    assert resp.status_code == 200, resp.text
    assert written(penv) == before, "a what-if writes nothing"
    shown = resp.json()["changes"]
    assert [c["change"] for c in shown] == ["take", "take"]
    ids = [int(c["instanceId"]) for c in shown]
    assert sorted(ids) == sorted(i.instance_id for i in pool_of(penv))
    assert all("from the standby pool (Paused)" in c["reason"] for c in shown)
    assert api.patch("/scaleSets/web", json={"sku": {"capacity": 3}}).status_code == 200
    penv.rec.pass_once()
    assert [i.instance_id for i in penv.instances("web") if i.origin.startswith(lifecycle.FROM_POOL)] == ids


def test_a_pool_instance_still_booting_is_not_taken(penv: Env) -> None:
    create_set(penv, 1, {"maxReadyCapacity": 1, "virtualMachineState": "Paused"})
    penv.rec.pass_once()  # the records only: the pool instance has not booted yet
    assert len(pool_of(penv)) == 1 and not lifecycle.standing_by(pool_of(penv)[0])
    preview = plan(penv, 2)
    assert preview.of(Change.TAKE) == [] and len(preview.of(Change.CREATE)) == 1


def test_a_take_names_the_fault_domain_of_the_instance_taken(penv: Env) -> None:
    create_set(penv, 1, {"maxReadyCapacity": 1, "virtualMachineState": "Paused"}, fault_domains=2)
    penv.converge(4)
    (pooled,) = pool_of(penv)
    member = members(penv)[0]
    assert pooled.fault_domain == member.fault_domain == 0  # the pool is placed on its own
    (take,) = plan(penv, 2).of(Change.TAKE)  # placement wants fault domain 1; the pool has only 0
    assert take.instance_id == pooled.instance_id
    assert take.fault_domain == pooled.fault_domain


# -- outdated pool instances ---------------------------------------------------------------------------
def test_outdated_pool_instances_are_replaced_never_taken(penv: Env) -> None:
    create_set(penv, 1, {"maxReadyCapacity": 2, "virtualMachineState": "Running"}, notice=True)
    penv.converge(4)
    old = sorted(i.instance_id for i in pool_of(penv))
    new_model_version(penv)
    preview = plan(penv, 2)
    assert preview.of(Change.TAKE) == [] and len(preview.of(Change.CREATE)) == 1
    penv.converge(1)
    gone = {i.instance_id: i for i in deleted(penv)}
    assert sorted(gone) == old
    assert all(i.delete_reason == terminate.STANDBY and i.standby_state == "Running" for i in gone.values())
    log = [a.message for a in penv.store.activity("web") if a.kind == "standby-pool"]
    assert any(m.startswith(f"removing pool instances {old}") and "older model version" in m for m in log), log
    penv.converge(4)
    assert all(penv.store.scheduled_events("web", iid) == [] for iid in old), "no terminate notice: they serve nothing"
    assert not [a for a in penv.store.activity("web") if a.kind == "terminate-notice"]
    pool = pool_of(penv)
    version = penv.store.scale_set("web").model_version
    assert len(pool) == 2 and not set(old) & {i.instance_id for i in pool}
    assert all(i.model_version == version and lifecycle.standing_by(i) for i in pool)
    # the member keeps its older model (Manual policy): a pool renews only itself
    assert [i.model_version for i in members(penv)] == [version - 1]


def test_detaching_the_pool_removes_its_instances(penv: Env) -> None:
    create_set(penv, 1, {"maxReadyCapacity": 2, "virtualMachineState": "Saved"})
    penv.converge(4)
    ids = [i.instance_id for i in pool_of(penv)]
    api = client(penv)
    assert api.delete("/scaleSets/web/standbyPool").status_code == 202
    penv.converge(3)
    assert pool_of(penv) == [] and [i.instance_id for i in members(penv)] == [0]
    names = {f"lvmss-web-{iid}" for iid in ids}
    assert not names & {n for h in penv.hosts.values() for n in h.domains}, "their domains are gone"
    assert refused(api.delete("/scaleSets/web/standbyPool"), 404, "has no standby pool")


# -- reuse on scale-in -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reuse", "returned"),
    [pytest.param(True, 1, id="reuse-returns-one"), pytest.param(False, 0, id="without-reuse-removes")],
)
def test_a_scale_in_returns_a_victim_to_the_pool(penv: Env, reuse: bool, returned: int) -> None:
    # dynamic: pool = 4 - capacity; at 3 members it holds 1, after the scale-in to 2 it holds 2
    pool_body = {
        "maxReadyCapacity": 4,
        "virtualMachineState": "Paused",
        "dynamicSizing": {"enabled": True},
        "reuseOnScaleIn": reuse,
    }
    create_set(penv, 3, pool_body)
    penv.converge(4)
    assert len(pool_of(penv)) == 1 and len(members(penv)) == 3
    preview = plan(penv, 2)
    assert len(preview.of(Change.RETURN)) == returned
    assert len(preview.of(Change.REMOVE)) == 1 - returned
    victim = int((preview.of(Change.RETURN) or preview.of(Change.REMOVE))[0].instance_id or -1)
    balancer = penv.balancer
    assert isinstance(balancer, MemberBalancer)

    scale(penv, 2)
    penv.converge(1, guests_answer=False)
    if not reuse:
        penv.converge(3)
        assert victim not in {i.instance_id for i in penv.instances("web")}
        assert [(i.instance_id, i.delete_reason) for i in deleted(penv)] == [(victim, terminate.SCALE_IN)]
        assert len(pool_of(penv)) == 2, "the pool grows by a new instance instead"
        return
    inst = penv.store.instance("web", victim)
    assert inst.standby_state == "Paused" and inst.standby_at is None
    assert not lifecycle.counts_toward_capacity(inst) and not lifecycle.in_rotation(inst)
    assert ("drain", victim) in balancer.calls, "drained before it is paused"
    assert power(penv, inst) is PowerState.RUNNING, "the drain pass does not pause it yet"
    assert victim in balancer.synced[-1], "it stays a backend while it drains"
    log = [a for a in penv.store.activity("web") if a.kind == "scale-in"]
    assert any(a.message.startswith(f"returning instances [{victim}] to the standby pool") for a in log), log
    penv.converge(3)
    inst = penv.store.instance("web", victim)
    assert lifecycle.standing_by(inst) and power(penv, inst) is PowerState.PAUSED
    assert victim not in balancer.synced[-1], "out of the load balancer once drained"
    assert calls(penv, "suspend").count(inst.domain_name) == 1
    assert ("remove", victim) not in balancer.calls and inst.delete_reason is None
    assert len(members(penv)) == 2 and len(pool_of(penv)) == 2
    # ... and the next scale-out takes it again
    (take,) = plan(penv, 3).of(Change.TAKE)
    assert take.instance_id in {i.instance_id for i in pool_of(penv)}


def test_a_returned_victim_waits_in_the_state_its_plan_named(penv: Env) -> None:
    pool_body = {
        "maxReadyCapacity": 5,
        "vmStateDistribution": {"pausedPercent": 50, "savedPercent": 50},
        "dynamicSizing": {"enabled": True},
        "reuseOnScaleIn": True,
    }
    create_set(penv, 3, pool_body)
    penv.converge(4)
    states = sorted(str(i.standby_state) for i in pool_of(penv))
    assert states == ["Paused", "Saved"]
    saved = next(i for i in pool_of(penv) if i.standby_state == "Saved")
    penv.store.update_instance("web", saved.instance_id, provisioning_state=ProvisioningState.FAILED.value)
    (ret,) = plan(penv, 2).of(Change.RETURN)
    named = ret.reason.split("back to the standby pool (")[1].split(",")[0]
    scale(penv, 2)
    penv.converge(1, guests_answer=False)
    assert penv.store.instance("web", int(ret.instance_id or -1)).standby_state == named


def test_reuse_returns_only_what_the_pool_has_room_for(penv: Env) -> None:
    create_set(penv, 3, {"maxReadyCapacity": 1, "virtualMachineState": "Paused", "reuseOnScaleIn": True})
    penv.converge(4)
    preview = plan(penv, 1)
    assert preview.of(Change.RETURN) == [] and len(preview.of(Change.REMOVE)) == 2, "the pool is full"


def test_reuse_does_not_return_an_outdated_victim(penv: Env) -> None:
    pool_body = {"maxReadyCapacity": 4, "dynamicSizing": {"enabled": True}, "reuseOnScaleIn": True}
    create_set(penv, 2, pool_body)
    penv.converge(4)
    new_model_version(penv)  # the members are now of an older model
    preview = plan(penv, 1)
    assert preview.of(Change.RETURN) == [] and len(preview.of(Change.REMOVE)) == 1


# -- the API: pool instances are no members ---------------------------------------------------------
@pytest.fixture
def pooled(penv: Env) -> tuple[Env, TestClient, int]:
    create_set(penv, 2, {"maxReadyCapacity": 2, "virtualMachineState": "Paused"})
    penv.converge(4)
    return penv, client(penv), pool_of(penv)[0].instance_id


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("post", "/scaleSets/web/virtualMachines/{id}/{action}", None, id="one"),
        pytest.param("post", "/scaleSets/web/{action}", {"instanceIds": ["{id}"]}, id="set-action"),
        pytest.param("post", "/scaleSets/web/{action}", {"instanceIds": ["0", "{id}"]}, id="set-action-with-member"),
    ],
)
@pytest.mark.parametrize("action", ["start", "powerOff", "deallocate", "restart", "reimage", "redeploy", "delete"])
def test_actions_on_a_pool_instance_are_refused(
    pooled: tuple[Env, TestClient, int], method: str, path: str, body: dict[str, Any] | None, action: str
) -> None:
    e, api, iid = pooled
    before = written(e)
    url = path.format(id=iid, action=action)
    if body is not None:
        body = {"instanceIds": [i.format(id=iid) for i in body["instanceIds"]]}
    resp = api.request(method.upper(), url, json=body)
    refused(resp, 409, "in the standby pool")
    assert written(e) == before, "nothing changed"


def test_manual_upgrade_of_a_pool_instance_is_refused(pooled: tuple[Env, TestClient, int]) -> None:
    e, api, iid = pooled
    new_model_version(e)
    before = written(e)
    refused(api.post("/scaleSets/web/manualUpgrade", json={"instanceIds": [str(iid)]}), 409, "in the standby pool")
    assert written(e) == before


def test_an_action_on_every_instance_leaves_the_pool_alone(pooled: tuple[Env, TestClient, int]) -> None:
    e, api, _iid = pooled
    resp = api.post("/scaleSets/web/restart", json={})
    assert resp.status_code == 202, resp.text
    assert sorted(resp.json()["instanceIds"]) == sorted(str(i.instance_id) for i in members(e))
    assert all(i.restart_generation == 0 for i in pool_of(e))


def test_delete_of_one_pool_instance_is_refused(pooled: tuple[Env, TestClient, int]) -> None:
    e, api, iid = pooled
    before = written(e)
    resp = api.delete(f"/scaleSets/web/virtualMachines/{iid}")
    assert e.store.scale_set("web").capacity == 2, "a pool instance is not one of the capacity"
    refused(resp, 409, "in the standby pool")
    assert written(e) == before


def test_the_views_count_members_only(pooled: tuple[Env, TestClient, int]) -> None:
    e, api, _iid = pooled
    member_ids = sorted(str(i.instance_id) for i in members(e))
    pool_ids = sorted(str(i.instance_id) for i in pool_of(e))
    props = api.get("/scaleSets/web").json()["properties"]
    assert (props["instanceCount"], props["readyCount"]) == (2, 2)
    assert (props["standbyPoolCount"], props["standbyPoolStandingBy"]) == (2, 2)
    assert props["provisioningState"] == "Succeeded"
    assert props["standbyPool"]["maxReadyCapacity"] == 2
    listed = api.get("/scaleSets/web/virtualMachines").json()["value"]
    assert sorted(i["instanceId"] for i in listed) == member_ids
    assert all("standbyPool" not in i["properties"] for i in listed)
    view = api.get("/scaleSets/web/standbyPool").json()
    assert sorted(i["instanceId"] for i in view["value"]) == pool_ids
    assert all(i["properties"]["standbyPool"] == {"state": "Paused", "standingBy": True} for i in view["value"])
    got = view["properties"]
    assert (got["targetSize"], got["size"], got["outdated"]) == (2, 2, 0)
    assert got["instanceCountSummary"] == [
        {"state": "Running", "standingBy": 0, "preparing": 0},
        {"state": "Paused", "standingBy": 2, "preparing": 0},
        {"state": "Saved", "standingBy": 0, "preparing": 0},
    ]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        pytest.param({"maxReadyCapacity": "2"}, 400, "maxReadyCapacity", id="strict"),
        pytest.param({"maxReadyCapacity": 1, "minReadyCapacity": 2}, 400, "exceeds", id="min-over-max"),
        pytest.param({"maxReadyCapacity": 1, "virtualMachineState": "Deallocated"}, 400, "not offered", id="dealloc"),
        pytest.param({"maxReadyCapacity": 1, "bogus": True}, 400, "bogus", id="unknown"),
    ],
)
def test_a_bad_pool_put_changes_nothing(
    pooled: tuple[Env, TestClient, int], body: dict[str, Any], status: int, words: str
) -> None:
    e, api, _iid = pooled
    before = written(e)
    refused(api.put("/scaleSets/web/standbyPool", json=body), status, words)
    assert written(e) == before


def test_a_pool_put_changes_the_policy_not_the_model_version(pooled: tuple[Env, TestClient, int]) -> None:
    e, api, _iid = pooled
    version = e.store.scale_set("web").model_version
    resp = api.put("/scaleSets/web/standbyPool", json={"maxReadyCapacity": 3, "virtualMachineState": "Hibernated"})
    assert resp.status_code == 200, resp.text
    got = resp.json()["properties"]
    assert got["policy"]["virtualMachineState"] == "Saved" and got["targetSize"] == 3 and got["size"] == 2
    row = e.store.scale_set("web")
    assert row.model_version == version and row.capacity == 2
    assert row.spec.standby_pool is not None and row.spec.standby_pool.max_ready_capacity == 3


# -- pure predicates on pool rows ----------------------------------------------------------------------
def _row(e: Env) -> InstanceRow:
    create_set(e, 1, None)
    e.converge(2)
    return members(e)[0]


# (standby_state, standby_at, origin, ready) -> in_pool, standing_by, load_balanced, counts, in_rotation
@pytest.mark.parametrize(
    ("standby_state", "standby_at", "origin", "is_ready", "expected"),
    [
        pytest.param(None, None, "cold boot", True, (False, False, True, True, True), id="member"),
        pytest.param(
            None, None, "standby pool (Paused)", False, (False, False, True, True, False), id="taken-resuming"
        ),
        pytest.param("Paused", None, "", False, (True, False, False, False, False), id="pool-booting"),
        pytest.param("Paused", None, "", True, (True, False, False, False, False), id="pool-healthy-not-yet-paused"),
        pytest.param("Paused", 5.0, "", True, (True, True, False, False, False), id="pool-standing-by"),
        pytest.param("Running", 5.0, "", True, (True, True, False, False, False), id="pool-running-no-traffic"),
        pytest.param("Paused", None, "cold boot", True, (True, False, True, False, False), id="returned-draining"),
    ],
)
def test_pool_predicates(
    env: Env,  # noqa: F811
    standby_state: str | None,
    standby_at: float | None,
    origin: str,
    is_ready: bool,
    expected: tuple[bool, ...],
) -> None:
    inst = replace(
        _row(env),
        standby_state=standby_state,
        standby_at=standby_at,
        origin=origin,
        ready_at=1.0 if is_ready else None,
        provisioning_state=ProvisioningState.SUCCEEDED.value if is_ready else ProvisioningState.UPDATING.value,
    )
    got = (
        lifecycle.in_pool(inst),
        lifecycle.standing_by(inst),
        lifecycle.load_balanced(inst),
        lifecycle.counts_toward_capacity(inst),
        lifecycle.in_rotation(inst),
    )
    assert got == expected


@pytest.mark.parametrize(
    ("changes", "usable"),
    [
        pytest.param({}, True, id="standing-by"),
        pytest.param({"standby_at": None}, False, id="not-standing-by"),
        pytest.param({"model_version": 0}, False, id="outdated"),
        pytest.param({"provisioning_state": ProvisioningState.FAILED.value}, False, id="failed"),
        pytest.param({"provisioning_state": ProvisioningState.DELETING.value}, False, id="deleting"),
        pytest.param({"restart_generation": 1}, False, id="restart-pending"),
        pytest.param({"standby_state": None}, False, id="a-member"),
        pytest.param({"health": "unhealthy"}, False, id="a-running-one-failing-its-probe"),
    ],
)
def test_usable_from_pool(env: Env, changes: dict[str, Any], usable: bool) -> None:  # noqa: F811
    base = replace(_row(env), standby_state="Saved", standby_at=5.0, origin="")
    version = base.model_version
    assert lifecycle.usable_from_pool(replace(base, **changes), version) is usable


# needs_work of a pool instance (observed this pass): (standby_state, standby_at, ready, power) -> work
@pytest.mark.parametrize(
    ("standby_state", "standby_at", "is_ready", "observed", "work"),
    [
        pytest.param("Paused", None, False, PowerState.RUNNING, False, id="booting-running-wait-for-health"),
        pytest.param("Paused", None, False, PowerState.STOPPED, True, id="booting-not-running"),
        pytest.param("Paused", None, False, None, True, id="booting-no-domain"),
        pytest.param("Paused", None, True, PowerState.RUNNING, True, id="healthy-to-pause"),
        pytest.param("Paused", 5.0, True, PowerState.PAUSED, False, id="paused-converged"),
        pytest.param("Paused", 5.0, True, PowerState.RUNNING, True, id="paused-resumed-by-hand"),
        pytest.param("Saved", 5.0, True, PowerState.STOPPED, False, id="saved-converged"),
        pytest.param("Saved", 5.0, True, PowerState.RUNNING, True, id="saved-running"),
        pytest.param("Running", 5.0, True, PowerState.RUNNING, False, id="running-converged"),
        pytest.param("Running", 5.0, True, PowerState.PAUSED, True, id="running-paused"),
        pytest.param("Running", 5.0, True, None, True, id="running-domain-gone"),
    ],
)
def test_needs_work_of_a_pool_instance(
    env: Env,  # noqa: F811
    standby_state: str,
    standby_at: float | None,
    is_ready: bool,
    observed: PowerState | None,
    work: bool,
) -> None:
    inst = replace(
        _row(env),
        standby_state=standby_state,
        standby_at=standby_at,
        origin="",
        ready_at=1.0 if is_ready else None,
    )
    domains = {}
    if observed is not None:
        dom = next(d for d in env.hosts[inst.host].owned_domains() if d.name == inst.domain_name)
        domains[inst.domain_name] = OwnedDomain(dom.name, dom.ownership, observed)
    assert needs_work(inst, domains) is work


# -- capacity admission ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("state", "new", "admitted"),
    [
        pytest.param("Paused", 3, 0, id="paused-hold-their-memory"),
        pytest.param("Running", 3, 0, id="running-hold-their-memory"),
        pytest.param("Saved", 3, 2, id="saved-need-memory-again"),
        pytest.param("Paused", 5, 2, id="beyond-the-pool"),
        pytest.param("Paused", 2, 0, id="less-than-the-pool"),
        pytest.param("Saved", 1, None, id="no-scale-out-nothing-admitted"),
    ],
)
def test_a_scale_out_admits_what_the_pool_does_not_hold(penv: Env, state: str, new: int, admitted: int | None) -> None:
    create_set(penv, 1, {"maxReadyCapacity": 2, "virtualMachineState": state}, lb=False)
    penv.converge(4)
    rule = CapacityRule(penv.rec.cfg, penv.store, penv.inv)
    asked: list[int] = []
    rule.admit = lambda spec, new_instances, memory_mib=None: asked.append(new_instances)  # type: ignore[method-assign]
    rule.check("web", penv.store.scale_set("web").spec, 1, new)
    assert asked == ([] if admitted is None else [admitted])


# A resumed or cloned member is not probed (so nobody can call it healthy) until its clock and,
# for a clone, its identity are set: a clone still answers as its template until then.
@pytest.mark.parametrize(
    ("origin", "state", "prepared_at", "probed"),
    [
        pytest.param("cold boot", ProvisioningState.CREATING.value, None, True, id="cold-boot"),
        pytest.param("template clone", ProvisioningState.CREATING.value, None, False, id="clone-restoring"),
        pytest.param("template clone", ProvisioningState.CREATING.value, 5.0, True, id="clone-identified"),
        pytest.param("standby pool (Paused)", ProvisioningState.UPDATING.value, None, False, id="taken-resuming"),
        pytest.param("standby pool (Paused)", ProvisioningState.UPDATING.value, 5.0, True, id="taken-clock-set"),
        pytest.param("template clone", ProvisioningState.SUCCEEDED.value, 5.0, True, id="clone-serving"),
        pytest.param("template clone", ProvisioningState.UPDATING.value, 5.0, True, id="clone-restarting-later"),
    ],
)
def test_no_probe_before_a_resumed_or_cloned_member_is_prepared(
    env: Env,  # noqa: F811
    origin: str,
    state: str,
    prepared_at: float | None,
    probed: bool,
) -> None:
    inst = replace(_row(env), origin=origin, provisioning_state=state, prepared_at=prepared_at)
    spec = env.store.scale_set(inst.scale_set).spec
    assert lifecycle.preparing(inst) is not probed
    assert lifecycle.to_probe(inst, spec) is probed


# -- a silent host: the pool waits for the grace like members do, then refills elsewhere -----------
def test_a_silent_hosts_pool_counts_until_it_is_lost_then_is_refilled_and_the_surplus_goes(penv: Env) -> None:
    create_set(penv, 0, {"maxReadyCapacity": 2, "virtualMachineState": "Paused"}, fault_domains=2)
    penv.converge(4)
    pool = {i.instance_id: i.host for i in pool_of(penv)}
    assert sorted(pool.values()) == ["h1", "h2"] and all(lifecycle.standing_by(i) for i in pool_of(penv))
    on_h2 = next(i for i, h in pool.items() if h == "h2")
    h2 = penv.hosts["h2"]
    h2.answering = False
    penv.converge(1)
    penv.clock.advance(GRACE / 2)
    penv.converge(2)
    assert {i.instance_id for i in pool_of(penv)} == set(pool), "a host silent inside the grace: no refill"
    assert [c.instance_id for c in plan(penv, 1).of(Change.TAKE)] == [next(i for i, h in pool.items() if h == "h1")]

    penv.clock.advance(GRACE)
    penv.converge(4)
    now = {i.instance_id: i.host for i in pool_of(penv)}
    assert on_h2 in now and len(now) == 3, f"the lost host's instance is kept, one more made elsewhere: {now}"
    assert [h for i, h in now.items() if i not in pool] == ["h1"]

    h2.answering = True
    penv.converge(4)
    final = {i.instance_id: i.host for i in pool_of(penv)}
    assert len(final) == 2, f"back to its size once the host answers: {final}"
    assert on_h2 in final, "the surplus is the newest (the replacement), not the instance that waited on h2"
    assert not [v for v, _ in h2.calls if v in ("destroy", "undefine")], "nothing on the host that came back"


def test_a_repair_replace_is_filled_from_the_pool(penv: Env) -> None:
    """Replace deletes the unhealthy member (the monitor asks lifecycle's delete, capacity kept):
    the set, below capacity, takes a pool instance instead of booting one."""
    create_set(penv, 1, {"maxReadyCapacity": 1, "virtualMachineState": "Paused"})
    penv.converge(4)
    (sick,) = members(penv)
    (waiting,) = pool_of(penv)
    row = penv.store.scale_set("web")
    asked = lifecycle.request(lifecycle.find_action("delete"), sick, model_version=row.model_version, now=0.0)
    penv.store.update_instance("web", sick.instance_id, **asked)
    penv.converge(3)
    assert [i.instance_id for i in members(penv)] == [waiting.instance_id], "the pool instance took its place"
    assert members(penv)[0].origin == "standby pool (Paused)"
    assert len(pool_of(penv)) == 1 and pool_of(penv)[0].instance_id != waiting.instance_id, "and the pool refilled"
