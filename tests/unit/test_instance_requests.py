"""Requests naming instances: delete needs ids, an id is written one way only and named once,
a multi-instance action is checked whole before any instance changes, a NAT pool is checked
against the capacity the set will have, and delete-instances lowers the capacity atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from localvmss.errors import InvalidSpec
from localvmss.model import parse_instance_id
from tests.unit.servicefake import (
    Harness,
    add_instances,
    api_client,
    make_service,
    refused,
    snapshot,
    uniform_body,
)

ACTIONS = ["start", "powerOff", "deallocate", "restart", "reimage", "delete"]


def with_set(tmp_path: Path, capacity: int = 3, **last: Any) -> Harness:
    """A set of ``capacity`` instances; ``last`` applies to the highest id, so an action that
    went instance by instance would have changed the others before reaching it."""
    h = make_service(tmp_path)
    h.service.put_set("web", uniform_body(capacity))
    add_instances(h.store, "web", capacity - 1)
    add_instances(h.store, "web", 1, **last)
    return h


@pytest.mark.parametrize("body", [{}, {"instanceIds": []}, {"instanceIds": None}])
def test_delete_without_instance_ids_deletes_nothing(tmp_path: Path, body: dict[str, Any]) -> None:
    h = with_set(tmp_path)
    before = snapshot(h.store)
    refused(api_client(h).post("/scaleSets/web/delete", json=body), 400, 'delete needs "instanceIds"')
    assert snapshot(h.store) == before and h.reconciler.wakes == 1  # the create's


def test_delete_star_deletes_every_instance(tmp_path: Path) -> None:
    h = with_set(tmp_path)
    resp = api_client(h).post("/scaleSets/web/delete", json={"instanceIds": ["*"]})
    assert resp.status_code == 202 and resp.json()["instanceIds"] == ["0", "1", "2"]
    assert h.store.scale_set("web").capacity == 0


@pytest.mark.parametrize("action", ["start", "powerOff", "deallocate", "reimage"])
def test_other_actions_without_ids_mean_every_instance(tmp_path: Path, action: str) -> None:
    h = with_set(tmp_path)
    resp = api_client(h).post(f"/scaleSets/web/{action}", json={})
    assert resp.status_code == 202 and resp.json()["instanceIds"] == ["0", "1", "2"]


@pytest.mark.parametrize("path", [*(f"/scaleSets/web/{a}" for a in ACTIONS), "/scaleSets/web/manualUpgrade"])
@pytest.mark.parametrize("ids", [["1", "1"], [1, "1"], ["0", "2", "0"], ["*", "1"]])
def test_an_instance_named_twice_is_refused(tmp_path: Path, path: str, ids: list[Any]) -> None:
    h = with_set(tmp_path)
    before = snapshot(h.store)
    words = "goes alone" if "*" in ids else "listed more than once"
    refused(api_client(h).post(path, json={"instanceIds": ids}), 400, words)
    assert snapshot(h.store) == before


BAD_IDS = ["0_0", "01", "00", " 1", "1 ", "+1", "-1", "1.0", "1e3", "١", "²", "0x1", "", "1234567890", "1\n"]


@pytest.mark.parametrize("value", [*BAD_IDS, True, 1.0, None, [1]])
def test_instance_ids_have_one_spelling(value: Any) -> None:
    with pytest.raises(InvalidSpec) as err:
        parse_instance_id(value)
    assert "instance id" in err.value.message and "\n" not in err.value.message


@pytest.mark.parametrize(("value", "iid"), [("0", 0), ("7", 7), ("123456789", 123456789), (12, 12)])
def test_good_instance_ids(value: Any, iid: int) -> None:
    assert parse_instance_id(value) == iid


@pytest.mark.parametrize("value", [v for v in BAD_IDS if v.strip() and v not in ("1\n",)])
def test_bad_ids_in_paths_and_bodies_are_refused_and_change_nothing(tmp_path: Path, value: str) -> None:
    h = with_set(tmp_path)
    client = api_client(h)
    before = snapshot(h.store)
    refused(client.get(f"/scaleSets/web/virtualMachines/{value}"), 400, "instance id")
    refused(client.delete(f"/scaleSets/web/virtualMachines/{value}"), 400, "instance id")
    refused(client.post(f"/scaleSets/web/virtualMachines/{value}/powerOff"), 400, "instance id")
    refused(client.post("/scaleSets/web/delete", json={"instanceIds": [value]}), 400, "instance id")
    refused(client.post("/scaleSets/web/restart", json={"instanceIds": ["0", value]}), 400, "instance id")
    assert snapshot(h.store) == before


@pytest.mark.parametrize("ids", [[True], [1.5], "0", [{"id": 0}]])
def test_instance_ids_must_be_a_list_of_ids(tmp_path: Path, ids: Any) -> None:
    h = with_set(tmp_path)
    before = snapshot(h.store)
    refused(api_client(h).post("/scaleSets/web/powerOff", json={"instanceIds": ids}), 400, "instanceIds")
    assert snapshot(h.store) == before


@pytest.mark.parametrize(
    ("last", "action", "ids", "status", "words"),
    [
        ({"protect_actions": True}, "powerOff", None, 409, "instance 2 is protected"),
        ({"protect_actions": True}, "deallocate", ["0", "1", "2"], 409, "instance 2 is protected"),
        ({"protect_actions": True}, "reimage", None, 409, "instance 2 is protected"),
        ({"protect_actions": True}, "restart", ["1", "2"], 409, "instance 2 is protected"),
        ({"protect_actions": True}, "delete", ["1", "2"], 409, "instance 2 is protected"),
        ({"protect_actions": True}, "delete", ["*"], 409, "instance 2 is protected"),
        ({"desired_power": "stopped"}, "restart", None, 409, "instance 2 is not running"),
        ({"provisioning_state": "Deleting"}, "powerOff", ["1", "2"], 409, "instance 2 is being deleted"),
        ({}, "powerOff", ["0", "1", "7"], 404, "instance 7"),
        ({}, "delete", ["1", "7"], 404, "instance 7"),
    ],
)
def test_a_multi_instance_action_is_checked_whole_before_anything_changes(
    tmp_path: Path, last: dict[str, Any], action: str, ids: list[str] | None, status: int, words: str
) -> None:
    h = with_set(tmp_path, **last)
    before = snapshot(h.store)
    body = {} if ids is None else {"instanceIds": ids}
    refused(api_client(h).post(f"/scaleSets/web/{action}", json=body), status, words)
    assert snapshot(h.store) == before


def test_manual_upgrade_is_checked_whole(tmp_path: Path) -> None:
    h = with_set(tmp_path, protect_actions=True)
    h.store.update_scale_set("web", model_version=2)
    before = snapshot(h.store)
    refused(api_client(h).post("/scaleSets/web/manualUpgrade", json={}), 409, "instance 2 is protected")
    assert snapshot(h.store) == before


def nat_lb(start: int, end: int) -> dict[str, Any]:
    return {
        "loadBalancingRules": [{"protocol": "Tcp", "frontendPort": 8081, "backendPort": 80}],
        "probes": [{"protocol": "Tcp", "port": 80}],
        "inboundNatPools": [
            {"protocol": "Tcp", "frontendPortRangeStart": start, "frontendPortRangeEnd": end, "backendPort": 22}
        ],
    }


@pytest.mark.parametrize("daemon_validator", [False, True])
def test_nat_pool_change_without_sku_capacity_is_checked_against_the_current_capacity(
    tmp_path: Path, daemon_validator: bool
) -> None:
    h = make_service(tmp_path)
    client = api_client(h)
    assert client.put("/scaleSets/web", json=uniform_body(5, lb=nat_lb(20000, 20009))).status_code == 201
    seen: list[int] = []
    if daemon_validator:  # what the daemon's HAProxy validator is given
        from localvmss.lb.spec import from_json, to_json, validate

        def validator(_name: str, spec: Any, capacity: int) -> dict[str, Any]:
            seen.append(capacity)
            return to_json(validate(from_json(spec.load_balancer), max_capacity=capacity, other_sets_ports=set()))

        h.service.lb_validator = validator
    before = snapshot(h.store)
    refused(client.put("/scaleSets/web", json=uniform_body(None, lb=nat_lb(20000, 20001))), 400, "up to 5 instances")
    assert snapshot(h.store) == before
    assert seen == ([5] if daemon_validator else [])
    assert client.put("/scaleSets/web", json=uniform_body(2, lb=nat_lb(20000, 20001))).status_code == 200


def test_delete_instances_reads_the_capacity_in_its_transaction(tmp_path: Path) -> None:
    """Two deletes that both read capacity 3 before either wrote used to leave 2, not 1."""
    h = with_set(tmp_path)
    stale = h.store.scale_set("web")
    h.service.delete_instances("web", ["0"])
    real = h.store.scale_set
    h.store.scale_set = lambda name: stale if name == "web" else real(name)  # type: ignore[method-assign]
    try:
        h.service.delete_instances("web", ["1"])
    finally:
        h.store.scale_set = real  # type: ignore[method-assign]
    assert h.store.scale_set("web").capacity == 1
    assert [i.provisioning_state for i in h.store.instances("web")] == ["Deleting", "Deleting", "Succeeded"]


def test_deleting_an_instance_twice_lowers_the_capacity_once(tmp_path: Path) -> None:
    h = with_set(tmp_path)
    assert h.service.delete_instances("web", ["0"])["instanceIds"] == ["0"]
    assert h.service.delete_instances("web", ["0"])["instanceIds"] == []
    assert h.store.scale_set("web").capacity == 2


@pytest.mark.parametrize("spelling", ["poweroff", "POWEROFF", "Restart", "DEALLOCATE"])
def test_action_paths_match_case_insensitively_as_arm_does(tmp_path: Path, spelling: str) -> None:
    h = with_set(tmp_path, 2)
    answer = api_client(h).post(f"/scaleSets/web/virtualMachines/0/{spelling}")
    assert answer.status_code == 202, answer.text
    assert answer.json()["instanceIds"] == ["0"]
