"""The rolling-upgrade REST API (Azure's routes) and the upgrade history: what-if writes
nothing, refusals are one line and change nothing, who changed what is recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from localvmss.upgrades import Upgrades
from tests.unit.servicefake import Harness, add_instances, api_client, make_service, refused, uniform_body


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    harness = make_service(tmp_path)
    harness.service.upgrades = Upgrades(harness.store, harness.reconciler)  # type: ignore[arg-type]
    return harness


def _two_versions(h: Harness, client: Any) -> None:
    assert client.put("/scaleSets/web", json=uniform_body(3), headers={"X-Localvmss-User": "alice"}).status_code == 201
    add_instances(h.store, "web", 3, model_version=1, health="healthy")
    body = uniform_body(3)
    body["properties"]["virtualMachineProfile"]["osProfile"] = {"customData": "djI="}
    assert client.put("/scaleSets/web", json=body, headers={"X-Localvmss-User": "bob"}).status_code == 200


def test_what_if_returns_the_plan_and_writes_nothing(h: Harness) -> None:
    client = api_client(h)
    _two_versions(h, client)
    resp = client.post("/scaleSets/web/osRollingUpgrade?whatIf=true")
    assert resp.status_code == 200, resp.text
    plan = resp.json()
    assert plan["action"] == "rollingUpgrade" and [c["change"] for c in plan["changes"]] == ["upgrade"] * 3
    assert {c["batch"] for c in plan["changes"]} == {0, 1, 2}, "20 % of 3, one update domain each: 3 batches"
    assert any("maxUnhealthyUpgradedInstancePercent" not in n and "stops when" in n for n in plan["notes"])
    assert h.store.latest_rollout("web") is None
    assert refused(client.get("/scaleSets/web/rollingUpgrades/latest"), 404, "no rolling upgrade")


def test_start_get_latest_cancel(h: Harness) -> None:
    client = api_client(h)
    _two_versions(h, client)
    started = client.post("/scaleSets/web/osRollingUpgrade", headers={"X-Localvmss-User": "carol"})
    assert started.status_code == 202, started.text
    props = started.json()["properties"]
    assert (props["runningStatus"]["code"], props["toModelVersion"], props["startedBy"]) == (
        "RollingForward",
        2,
        "carol",
    )
    assert props["progress"]["pendingInstanceCount"] == 3
    assert refused(client.post("/scaleSets/web/osRollingUpgrade"), 409, "cancel it first")
    cancelled = client.post("/scaleSets/web/rollingUpgrades/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["properties"]["runningStatus"]["lastAction"] == "Cancel"
    latest = client.get("/scaleSets/web/rollingUpgrades/latest").json()["properties"]
    assert "cancel requested" in latest["reason"]


def test_cancel_without_a_rollout_is_refused(h: Harness) -> None:
    client = api_client(h)
    _two_versions(h, client)
    assert refused(client.post("/scaleSets/web/rollingUpgrades/cancel"), 409, "no rolling upgrade of 'web' is running")


def test_a_start_with_nothing_outdated_completes_at_once(h: Harness) -> None:
    client = api_client(h)
    client.put("/scaleSets/web", json=uniform_body(1))
    add_instances(h.store, "web", 1, model_version=1)
    props = client.post("/scaleSets/web/osRollingUpgrade").json()["properties"]
    assert props["runningStatus"]["code"] == "Completed" and "nothing to upgrade" in props["reason"]


def test_history_lists_versions_with_who_changed_what(h: Harness) -> None:
    client = api_client(h)
    _two_versions(h, client)
    history = client.get("/scaleSets/web/osUpgradeHistory").json()["value"]
    got = [(v["properties"]["modelVersion"], v["properties"]["changedBy"], v["properties"]["changes"]) for v in history]
    assert got == [(2, "bob", ["customData changed"]), (1, "alice", ["created"])]
    assert history[0]["properties"]["current"] and history[1]["properties"]["instanceIds"] == ["0", "1", "2"]


@pytest.mark.parametrize(
    ("policy", "words"),
    [
        ({"pauseTimeBetweenBatches": "5 seconds"}, "pauseTimeBetweenBatches"),
        ({"bakeTime": "PT-5S"}, "bakeTime"),
        ({"maxUnhealthyUpgradedInstancePercent": 101}, "maxUnhealthyUpgradedInstancePercent"),
        ({"maxSurge": "yes"}, "maxSurge"),
        ({"rollbackAll": True}, "rollbackAll"),
    ],
)
def test_a_bad_rolling_policy_is_refused_and_changes_nothing(h: Harness, policy: dict[str, Any], words: str) -> None:
    client = api_client(h)
    body = uniform_body(1)
    body["properties"]["upgradePolicy"] = {"mode": "Rolling", "rollingUpgradePolicy": policy}
    refused(client.put("/scaleSets/web", json=body), 400, words)
    assert h.store.scale_sets() == []


def test_rolling_upgrades_are_refused_for_flexible_sets(h: Harness) -> None:
    client = api_client(h)
    client.put("/scaleSets/flex", json={"properties": {"orchestrationMode": "Flexible"}})
    refused(client.post("/scaleSets/flex/osRollingUpgrade"), 400, "Flexible")
