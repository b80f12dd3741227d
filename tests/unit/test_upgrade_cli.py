"""The rolling-upgrade CLI: the policy flags shape the body, start waits and says how it ended,
what-if prints the daemon's plan, history reads as a table."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from localvmss.cli.context import Ctx
from localvmss.cli.main import create, update
from localvmss.cli.upgrade_cmds import progress_line, rolling_upgrade
from localvmss.errors import InvalidSpec


class RecordingClient:
    """Answers from a list per path, records what was sent."""

    def __init__(self, answers: dict[str, list[Any]]) -> None:
        self.answers = answers
        self.sent: list[tuple[str, str, Any]] = []

    def _answer(self, method: str, path: str, body: Any = None) -> Any:
        self.sent.append((method, path, body))
        queue = self.answers[path.split("?")[0]]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def get(self, path: str) -> Any:
        return self._answer("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self._answer("POST", path, body)

    def put(self, path: str, body: Any, headers: Any = None) -> Any:
        return self._answer("PUT", path, body)


def view(code: str, ok: int = 0, failed: int = 0, reason: str = "") -> dict[str, Any]:
    return {
        "properties": {
            "runningStatus": {"code": code},
            "toModelVersion": 2,
            "progress": {
                "successfulInstanceCount": ok,
                "failedInstanceCount": failed,
                "inProgressInstanceCount": 0,
                "pendingInstanceCount": 0,
            },
            "reason": reason,
        }
    }


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], {}),
        (
            ["--max-surge", "true", "--pause-time-between-batches", "30"],
            {"maxSurge": True, "pauseTimeBetweenBatches": "PT30S"},
        ),
        (
            ["--bake-time", "PT2M", "--max-unhealthy-upgraded-instance-percent", "0"],
            {"bakeTime": "PT2M", "maxUnhealthyUpgradedInstancePercent": 0},
        ),
        (["--rollback-all-instances-on-policy-breach", "true"], {"rollbackAllInstancesOnPolicyBreach": True}),
        (["--max-batch-instance-percent", "50"], {"maxBatchInstancePercent": 50}),
    ],
)
def test_create_sends_the_policy_flags_given(args: list[str], expected: dict[str, Any]) -> None:
    client = RecordingClient({"/scaleSets/web": [{"name": "web", "sku": {"capacity": 1}, "properties": {}}]})
    result = CliRunner().invoke(
        create,
        ["web", "--image", "base", "--no-wait", *args],
        obj=Ctx(client, "json", False),  # type: ignore[arg-type]
    )
    assert result.exit_code == 0, result.output
    body = next(b for m, _p, b in client.sent if m == "PUT")
    assert body["properties"]["upgradePolicy"]["rollingUpgradePolicy"] == expected


def test_a_bad_policy_flag_is_refused_before_anything_is_sent() -> None:
    client = RecordingClient({})
    result = CliRunner().invoke(
        create,
        ["web", "--image", "base", "--max-surge", "maybe"],
        obj=Ctx(client, "json", False),  # type: ignore[arg-type]
    )
    assert result.exit_code == 2 and "maybe" in result.output and client.sent == []


@pytest.mark.parametrize(("final", "code"), [("Completed", 0), ("RolledBack", 1), ("Faulted", 1)])
def test_start_waits_for_the_end_and_exits_by_how_it_ended(final: str, code: int) -> None:
    latest = "/scaleSets/web/rollingUpgrades/latest"
    client = RecordingClient(
        {
            "/scaleSets/web/osRollingUpgrade": [view("RollingForward")],
            latest: [view("RollingForward"), view("RollingForward", ok=1), view(final, ok=2, reason="why")],
        }
    )
    result = CliRunner().invoke(rolling_upgrade, ["start", "web"], obj=Ctx(client, "table", False))  # type: ignore[arg-type]
    assert result.exit_code == code, result.output
    assert [p for _m, p, _b in client.sent].count(latest) == 3


def test_what_if_prints_the_plan_and_starts_nothing() -> None:
    plan = {
        "action": "rollingUpgrade",
        "scaleSet": "web",
        "changes": [{"change": "upgrade", "reason": "model version 1 -> 2", "instanceId": "0", "batch": 0}],
        "notes": ["1 batch(es)"],
    }
    client = RecordingClient({"/scaleSets/web/osRollingUpgrade": [plan]})
    result = CliRunner().invoke(rolling_upgrade, ["start", "web", "--what-if"], obj=Ctx(client, "table", False))  # type: ignore[arg-type]
    assert result.exit_code == 0 and "model version 1 -> 2" in result.output and "note: 1 batch(es)" in result.output
    assert client.sent == [("POST", "/scaleSets/web/osRollingUpgrade?whatIf=true", None)]


def test_progress_line() -> None:
    assert progress_line(view("RollingForward", ok=2, failed=1, reason="batch 2 of 3")) == (
        "RollingForward: 2 succeeded, 1 failed, 0 in progress, 0 pending - batch 2 of 3"
    )


def _current(custom_data: str | None) -> dict[str, Any]:
    return {
        "sku": {"name": "Standard_B1ls", "capacity": 1},
        "zones": [],
        "properties": {
            "upgradePolicy": {"mode": "Rolling", "rollingUpgradePolicy": {}},
            "scaleInPolicy": {"rules": ["Default"]},
            "virtualMachineProfile": {
                "storageProfile": {"imageReference": {"id": "base"}},
                "osProfile": {"customData": custom_data},
                "networkProfile": {},
            },
        },
    }


@pytest.mark.parametrize("given", [True, False])
def test_update_of_a_set_with_custom_data_needs_it_again(tmp_path: Any, given: bool) -> None:
    """The API never returns custom data (a secret); an update must give it again, and may."""
    script = tmp_path / "v3.sh"
    script.write_text("#!/bin/sh\necho v3\n")
    client = RecordingClient({"/scaleSets/web": [_current("(set)")]})
    args = ["web", "--no-wait", "--max-surge", "true"] + (["--custom-data", str(script)] if given else [])
    result = CliRunner().invoke(update, args, obj=Ctx(client, "json", False))  # type: ignore[arg-type]
    puts = [b for m, _p, b in client.sent if m == "PUT"]
    if given:
        assert result.exit_code == 0, result.output
        props = puts[0]["properties"]
        assert props["virtualMachineProfile"]["osProfile"]["customData"] != "(set)"
        assert props["upgradePolicy"]["rollingUpgradePolicy"] == {"maxSurge": True}
    else:
        assert isinstance(result.exception, InvalidSpec) and "give --custom-data again" in str(result.exception)
        assert puts == []
