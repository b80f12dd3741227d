"""Automatic repairs end to end without VMs: the real reconciler, store and health monitor over
the recording fake hosts, probes answered from the fake domains' power state (nothing is sent on a
network). A domain stopped outside localvmss is left to the repair when the set has repairs, and
started again (and logged) when it has not; each repairAction does what it says; a protected
instance is not repaired; repairs that keep failing suspend themselves, durably; the
orchestration-service API refuses bad input and changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from localvmss import lifecycle
from localvmss import monitor as monitor_module
from localvmss.health import ProbeResult
from localvmss.model import PowerState
from localvmss.monitor import HealthMonitor
from localvmss.reconciler import STOPPED_OUTSIDE
from localvmss.store import Store
from tests.unit.servicefake import api_client, make_service, refused, snapshot, uniform_body
from tests.unit.test_reconciler import Env, env  # noqa: F401 (the fixture)

GRACE_S = 10


class Guests:
    """Answers probes as the fake domains would: running ones healthy unless told otherwise."""

    def __init__(self, e: Env) -> None:
        self.env = e
        self.broken: set[str] = set()  # IPs whose application never answers

    def probe(self, ip: str, _model: Any) -> ProbeResult:
        for inst in self.env.store.instances():
            if inst.ip != ip:
                continue
            dom = self.env.hosts[inst.host].domains.get(inst.domain_name)
            if dom is None or dom.state is not PowerState.RUNNING or ip in self.broken:
                return ProbeResult("unknown", "http 80: Connection refused")
            return ProbeResult("healthy", "http /healthz -> 200")
        return ProbeResult("unknown", "no such address")


@pytest.fixture
def guests(env: Env, monkeypatch: pytest.MonkeyPatch) -> Guests:  # noqa: F811 (the fixture)
    g = Guests(env)
    monkeypatch.setattr(
        monitor_module, "probe_many", lambda targets, on_result=None: [g.probe(ip, m) for ip, m in targets]
    )
    return g


def repaired_set(e: Env, action: str = "Replace", enabled: bool = True) -> HealthMonitor:
    policy = {"enabled": enabled, "gracePeriod": f"PT{GRACE_S}S", "repairAction": action}
    e.create_set("web", 1, automaticRepairsPolicy=policy)
    e.converge(3)
    assert [i.health for i in e.instances("web")] == ["healthy"]
    return HealthMonitor(e.store, 1.0, lambda: None, clock=e.clock)


def destroy_outside(e: Env, iid: int = 0) -> None:
    inst = e.store.instance("web", iid)
    e.hosts[inst.host].domains[inst.domain_name].state = PowerState.STOPPED  # virsh destroy


def domain_state(e: Env, iid: int) -> PowerState | None:
    inst = e.store.instance("web", iid)
    dom = e.hosts[inst.host].domains.get(inst.domain_name)
    return None if dom is None else dom.state


def messages(e: Env, kind: str) -> list[str]:
    return [a.message for a in e.store.activity("web", kinds=[kind])]


def test_without_repairs_a_domain_stopped_outside_is_started_again_and_logged(env: Env) -> None:  # noqa: F811
    repaired_set(env, enabled=False)
    destroy_outside(env)
    env.converge(1, guests_answer=False)
    assert domain_state(env, 0) is PowerState.RUNNING
    assert "instance 0 found stopped outside localvmss: started again" in messages(env, "start")


def test_with_repairs_it_is_left_off_and_recorded_unhealthy(env: Env, guests: Guests) -> None:  # noqa: F811
    repaired_set(env)
    destroy_outside(env)
    env.converge(3, guests_answer=False)
    inst = env.store.instance("web", 0)
    assert domain_state(env, 0) is PowerState.STOPPED, "not started by the reconciler"
    assert (inst.health, inst.message) == ("unhealthy", STOPPED_OUTSIDE)
    assert len([m for m in messages(env, "health") if STOPPED_OUTSIDE in m]) == 1, "logged once"


@pytest.mark.parametrize("action", ["Replace", "Restart", "Reimage"])
def test_each_repair_action_after_the_grace_period(env: Env, guests: Guests, action: str) -> None:  # noqa: F811
    mon = repaired_set(env, action)
    destroy_outside(env)
    env.converge(1, guests_answer=False)
    mon.probe_pass()
    env.clock.advance(GRACE_S - 1)
    mon.probe_pass()
    assert messages(env, "repair") == [], "inside the grace period: no repair"
    env.clock.advance(2)
    mon.probe_pass()
    (entry,) = env.store.activity("web", kinds=["repair"])
    assert entry.details == {"action": action} and entry.instance_ids == [0]
    assert f"unhealthy for {GRACE_S + 1} s" in entry.message and STOPPED_OUTSIDE in entry.message
    inst = env.store.instance("web", 0)
    if action == "Replace":
        assert inst.provisioning_state == "Deleting"
    else:
        generation = inst.restart_generation if action == "Restart" else inst.reimage_generation
        assert (generation, inst.provisioning_state, inst.boot_started_at) == (1, "Updating", env.clock())
    env.converge(4)
    live = env.instances("web")
    assert len(live) == 1 and domain_state(env, live[0].instance_id) is PowerState.RUNNING
    assert [i.instance_id for i in live] == ([1] if action == "Replace" else [0])
    mon.probe_pass()
    assert env.store.instance("web", live[0].instance_id).health == "healthy"
    assert env.store.scale_set("web").repairs_state["failedInRow"] == 0, "the repair worked"


def test_a_protected_instance_is_not_repaired_and_stays_off_until_started(env: Env, guests: Guests) -> None:  # noqa: F811
    mon = repaired_set(env, "Restart")
    env.store.update_instance("web", 0, protect_actions=1)
    destroy_outside(env)
    env.converge(1, guests_answer=False)
    for _ in range(3):
        mon.probe_pass()
        env.clock.advance(GRACE_S * 2)
        env.converge(1, guests_answer=False)
    assert messages(env, "repair") == []
    assert domain_state(env, 0) is PowerState.STOPPED
    inst = env.store.instance("web", 0)
    env.store.update_instance(
        "web", 0, **lifecycle.request(lifecycle.find_action("start"), inst, model_version=1, now=env.clock())
    )
    env.converge(2)
    assert domain_state(env, 0) is PowerState.RUNNING


def test_repairs_that_keep_failing_suspend_themselves_durably(env: Env, guests: Guests, tmp_path: Path) -> None:  # noqa: F811
    # Restart: each one after the first once waited out the previous shutdown's 60 s timeout.
    mon = repaired_set(env, "Restart")
    guests.broken.add(env.store.instance("web", 0).ip)  # the application never answers again
    for _ in range(12):
        mon.probe_pass()
        mon.probe_pass()
        env.clock.advance(GRACE_S + 1)
        env.converge(2, guests_answer=False)
    repairs_made = [m for m in messages(env, "repair") if "restarting it" in m]
    assert len(repairs_made) == 3, messages(env, "repair")
    (suspension,) = [m for m in messages(env, "repair") if "suspended" in m]
    assert "3 repairs in a row did not yield a healthy instance" in suspension
    inst = env.store.instance("web", 0)
    assert (inst.restart_generation, inst.applied_restart) == (3, 3), "nothing more after the suspension"
    reopened = Store(env.store.path)
    try:
        assert reopened.scale_set("web").repairs_state["state"] == "Suspended", "survives a daemon restart"
    finally:
        reopened.close()


def test_initializing_inside_the_grace_then_unknown(env: Env, guests: Guests) -> None:  # noqa: F811
    mon = repaired_set(env, "Restart")
    inst = env.store.instance("web", 0)
    env.store.update_instance(
        "web", 0, **lifecycle.request(lifecycle.find_action("restart"), inst, model_version=1, now=env.clock())
    )
    guests.broken.add(inst.ip)
    env.converge(2, guests_answer=False)
    mon.probe_pass()
    assert env.store.instance("web", 0).health == "initializing"
    env.clock.advance(GRACE_S + 1)
    mon.probe_pass()
    assert env.store.instance("web", 0).health == "initializing", "one failed probe is not enough"
    mon.probe_pass()
    assert env.store.instance("web", 0).health == "unknown", "nothing answers: unknown, not unhealthy"


# -- the orchestration service through the API --------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (
            {"serviceName": "AutomaticZoneRebalancing", "action": "Suspend"},
            400,
            "serviceName 'AutomaticZoneRebalancing'",
        ),
        ({"serviceName": "AutomaticRepairs", "action": "Pause"}, 400, "action 'Pause' is not known"),
        ({"serviceName": "AutomaticRepairs"}, 400, "action None is not known"),
        ({"serviceName": "AutomaticRepairs", "action": "Suspend", "extra": 1}, 400, "unknown fields ['extra']"),
    ],
)
def test_bad_orchestration_service_requests_change_nothing(
    tmp_path: Path, body: dict[str, Any], status: int, words: str
) -> None:
    h = make_service(tmp_path)
    repairs_on = {"enabled": True, "gracePeriod": "PT10M"}
    h.service.put_set(
        "web",
        {**uniform_body(1), "properties": {**uniform_body(1)["properties"], "automaticRepairsPolicy": repairs_on}},
    )
    before = snapshot(h.store)
    refused(api_client(h).post("/scaleSets/web/setOrchestrationServiceState", json=body), status, words)
    assert snapshot(h.store) == before


def test_suspend_and_resume_through_the_api(tmp_path: Path) -> None:
    h = make_service(tmp_path)
    client = api_client(h)
    h.service.put_set("off", uniform_body(1))
    refused(
        client.post(
            "/scaleSets/off/setOrchestrationServiceState", json={"serviceName": "AutomaticRepairs", "action": "Suspend"}
        ),
        409,
        "enable automaticRepairsPolicy first",
    )
    view = client.get("/scaleSets/off/instanceView").json()
    assert view["orchestrationServices"] == [{"serviceName": "AutomaticRepairs", "serviceState": "NotRunning"}]
    body = uniform_body(1)
    body["properties"]["automaticRepairsPolicy"] = {"enabled": True}
    h.service.put_set("web", body)
    assert client.get("/scaleSets/web/instanceView").json()["orchestrationServices"][0]["serviceState"] == "Running"
    down = client.post(
        "/scaleSets/web/setOrchestrationServiceState", json={"serviceName": "automaticrepairs", "action": "suspend"}
    )
    assert down.status_code == 200, down.text
    service = down.json()["orchestrationServices"][0]
    assert (service["serviceState"], service["reason"]) == (
        "Suspended",
        "by request (setOrchestrationServiceState)",
    )
    up = client.post(
        "/scaleSets/web/setOrchestrationServiceState", json={"serviceName": "AutomaticRepairs", "action": "Resume"}
    )
    assert up.json()["orchestrationServices"][0] == {"serviceName": "AutomaticRepairs", "serviceState": "Running"}
    assert [a.message for a in h.store.activity("web", kinds=["repair"])] == [
        "automatic repairs suspended by request",
        "automatic repairs resumed by request (suspended: by request (setOrchestrationServiceState))",
    ]


def test_a_store_from_before_repairs_state_gets_the_column(tmp_path: Path) -> None:
    import sqlite3

    from localvmss.store import SCHEMA

    path = tmp_path / "old.db"
    old_schema = SCHEMA.replace(
        "    updated_at REAL NOT NULL,\n    repairs_state TEXT NOT NULL DEFAULT '{}'", "    updated_at REAL NOT NULL"
    )
    assert "repairs_state" not in old_schema.split("CREATE TABLE IF NOT EXISTS instances")[0]
    db = sqlite3.connect(path)
    db.executescript(old_schema)
    db.execute(
        "INSERT INTO scale_sets (name, mode, model, capacity, provisioning_state, created_at, updated_at)"
        " VALUES ('web', 'Uniform', '{\"mode\": \"Uniform\"}', 1, 'Succeeded', 0, 0)"
    )
    db.commit()
    db.close()
    store = Store(path)
    try:
        assert store.scale_set("web").repairs_state == {}
        assert store.change_repairs_state("web", lambda _s: ({"state": "Suspended"}, "suspended")) == {
            "state": "Suspended"
        }
        assert store.scale_set("web").repairs_state == {"state": "Suspended"}
        assert [a.message for a in store.activity("web", kinds=["repair"])] == ["suspended"]
    finally:
        store.close()
