"""What-if over the REST API with the real service and reconciler (fake hosts): the plan it
returns is the one the next pass carries out, it writes nothing, and bad input gets the same
one-line refusal as a real scale."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from localvmss.api.app import create_app
from localvmss.capacity import CapacityRule
from localvmss.model import ProvisioningState
from localvmss.service import Service
from localvmss.spec import parse_scale_set_body
from tests.unit.servicefake import refused
from tests.unit.test_reconciler import Env, env  # noqa: F401 (env: the fixture)


def client(e: Env) -> TestClient:
    service = Service(
        e.rec.cfg,
        e.store,
        e.inv,
        wake=e.rec.wake,
        allocator=e.rec.alloc,
        capacity=CapacityRule(e.rec.cfg, e.store, e.inv),
    )
    service.scale_planner = e.rec.scale_plan  # as the daemon wires it
    return TestClient(create_app(service, token="t"), headers={"Authorization": "Bearer t"})


def written(e: Env) -> Any:
    sets = e.store.scale_sets()
    return sets, e.store.instances(), {s.name: e.store.activity(s.name) for s in sets}


@pytest.mark.parametrize("policy", ["Default", "NewestVM", "OldestVM"])
def test_what_if_names_exactly_what_the_scale_in_removes(env: Env, policy: str) -> None:  # noqa: F811
    env.create_set("web", 4, fault_domains=2, scaleInPolicy={"rules": [policy]})
    env.converge(2)
    env.store.update_instance("web", 3, protect_scale_in=True)
    api = client(env)
    before = written(env)
    resp = api.patch("/scaleSets/web?whatIf=true", json={"sku": {"capacity": 2}})
    assert resp.status_code == 200, resp.text
    plan = resp.json()
    assert written(env) == before, "a what-if writes nothing"
    named = [int(c["instanceId"]) for c in plan["changes"] if c["change"] == "remove"]
    assert len(named) == 2 and 3 not in named
    assert {"change": "keep", "reason": "protected from scale-in", "instanceId": "3", "platformFaultDomain": 1} in plan[
        "changes"
    ]
    assert plan["action"] == "scale" and plan["capacity"] == 2 and plan["notes"] == []

    assert api.patch("/scaleSets/web", json={"sku": {"capacity": 2}}).status_code == 200
    env.rec.pass_once()
    deleting = [i.instance_id for i in env.instances("web") if i.provisioning_state == ProvisioningState.DELETING.value]
    assert sorted(deleting) == sorted(named)
    log = [a for a in env.store.activity("web") if a.kind == "scale-in"]
    assert log[-1].message.startswith(f"removing instances {named} "), "in the order the plan named"


def test_what_if_of_a_scale_out_names_zone_fault_domain_and_host(env: Env) -> None:  # noqa: F811
    env.create_set("web", 1, fault_domains=2)
    env.converge(2)
    plan = client(env).patch("/scaleSets/web?whatIf=true", json={"sku": {"capacity": 3}}).json()
    assert [(c["change"], c.get("platformFaultDomain"), c.get("host")) for c in plan["changes"]] == [
        ("create", 1, "h2"),
        ("create", 0, "h1"),
    ]
    env.store.update_scale_set("web", capacity=3)
    env.rec.pass_once()
    made = [(i.fault_domain, i.host) for i in env.instances("web")][1:]
    assert made == [(1, "h2"), (0, "h1")]


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/scaleSets/web?whatIf=true", {"sku": {"capacity": -1}}, 400, "capacity"),
        ("/scaleSets/web?whatIf=true", {"sku": {"capacity": 5000}}, 400, "capacity"),
        ("/scaleSets/web?whatIf=maybe", {"sku": {"capacity": 1}}, 400, "whatIf must be true or false"),
        ("/scaleSets/web?whatIf=true", {"sku": {"name": "x"}}, 400, "PATCH takes"),
        ("/scaleSets/nope?whatIf=true", {"sku": {"capacity": 1}}, 404, "nope"),
    ],
)
def test_what_if_refuses_what_a_scale_refuses(
    env: Env,  # noqa: F811
    path: str,
    body: dict[str, Any],
    status: int,
    words: str,
) -> None:
    env.create_set("web", 1)
    api = client(env)
    before = written(env)
    message = refused(api.patch(path, json=body), status, words)
    assert written(env) == before
    if "whatIf=true" in path and status == 400 and "capacity" in body.get("sku", {}):
        real = refused(api.patch(path.split("?")[0], json=body), status, words)
        assert real == message, "the same one-line error as a real scale"


def test_what_if_of_a_flexible_set_is_refused_as_its_scale_is(env: Env) -> None:  # noqa: F811
    spec, cap = parse_scale_set_body("flex", {"properties": {"orchestrationMode": "Flexible"}}, {"base"})
    env.store.insert_scale_set("flex", spec.mode.value, spec.model_dump(mode="json"), cap, "Succeeded")
    api = client(env)
    before = written(env)
    message = refused(api.patch("/scaleSets/flex?whatIf=true", json={"sku": {"capacity": 2}}), 400, "Flexible")
    assert message == refused(api.patch("/scaleSets/flex", json={"sku": {"capacity": 2}}), 400, "Flexible")
    assert written(env) == before
