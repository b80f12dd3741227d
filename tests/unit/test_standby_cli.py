"""The standby-pool CLI: --vm-state-distribution words, the policy body create and update send
(each one the daemon's parser accepts), refusals before anything is sent, and the views."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from localvmss.cli.context import Ctx
from localvmss.cli.main import list_instances
from localvmss.cli.standby_cmds import parse_distribution, standby_pool
from localvmss.errors import InvalidSpec
from localvmss.spec import StandbyState, parse_standby_pool
from tests.unit.test_upgrade_cli import RecordingClient as UpgradeRecordingClient

POOL = "/scaleSets/web/standbyPool"


class RecordingClient(UpgradeRecordingClient):
    """The upgrade CLI tests' recording client, which also deletes."""

    def delete(self, path: str) -> Any:
        return self._answer("DELETE", path)


def pool_view(policy: dict[str, Any] | None, size: int = 0, target: int = 0, value: list[Any] | None = None) -> Any:
    return {
        "name": "web",
        "properties": {
            "policy": policy,
            "targetSize": target,
            "size": size,
            "instanceCountSummary": [
                {"state": "Running", "standingBy": 0, "preparing": 0},
                {"state": "Paused", "standingBy": size, "preparing": 0},
                {"state": "Saved", "standingBy": 0, "preparing": 0},
            ],
            "outdated": 0,
        },
        "value": value or [],
    }


def run(client: RecordingClient, args: list[str], output: str = "json", command: Any = standby_pool) -> Any:
    return CliRunner().invoke(command, args, obj=Ctx(client, output, False))  # type: ignore[arg-type]


def put_body(client: RecordingClient) -> Any:
    (body,) = [b for m, p, b in client.sent if m == "PUT" and p == POOL]
    return body


# -- --vm-state-distribution ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("words", "expected"),
    [
        pytest.param((), None, id="not-given"),
        pytest.param(("running=100",), {"runningPercent": 100}, id="one"),
        pytest.param(("paused=50", "saved=50"), {"pausedPercent": 50, "savedPercent": 50}, id="repeated-option"),
        pytest.param(("paused=50 saved=50",), {"pausedPercent": 50, "savedPercent": 50}, id="spaces"),
        pytest.param(("paused=50,saved=50",), {"pausedPercent": 50, "savedPercent": 50}, id="commas"),
        pytest.param(
            ("running=20, paused=50", "saved=30"),
            {"runningPercent": 20, "pausedPercent": 50, "savedPercent": 30},
            id="mixed",
        ),
        pytest.param(("Running=20 PAUSED=80",), {"runningPercent": 20, "pausedPercent": 80}, id="any-case"),
        pytest.param(("saved=0 paused=100",), {"savedPercent": 0, "pausedPercent": 100}, id="zero"),
    ],
)
def test_parse_distribution(words: tuple[str, ...], expected: dict[str, int] | None) -> None:
    assert parse_distribution(words) == expected


@pytest.mark.parametrize(
    ("words", "message"),
    [
        pytest.param(("running",), "'running': give STATE=PERCENT", id="no-equals"),
        pytest.param(("deallocated=100",), "'deallocated=100': give STATE=PERCENT", id="deallocated"),
        pytest.param(("hibernated=100",), "with STATE running, paused, saved", id="alias-not-here"),
        pytest.param(("=100",), "give STATE=PERCENT", id="no-state"),
        pytest.param(("running=abc",), "'abc' is not a whole percentage", id="word"),
        pytest.param(("running=20.5",), "'20.5' is not a whole percentage", id="fraction"),
        pytest.param(("running=",), "'' is not a whole percentage", id="empty-value"),
        pytest.param(("paused=50", "saved=5O"), "'5O' is not a whole percentage", id="second-bad"),
        pytest.param(("paused=50 paused=50",), "names paused twice", id="repeated-state"),
        pytest.param(("",), "is empty", id="empty"),
        pytest.param((" , ",), "is empty", id="only-separators"),
    ],
)
def test_parse_distribution_refuses(words: tuple[str, ...], message: str) -> None:
    with pytest.raises(InvalidSpec) as exc:
        parse_distribution(words)
    assert message in exc.value.message and "\n" not in exc.value.message, exc.value.message


# -- create ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["--max-ready-capacity", "3"], {"maxReadyCapacity": 3}, id="max-only"),
        pytest.param(
            ["--max-ready-capacity", "5", "--min-ready-capacity", "1", "--dynamic-sizing", "true"],
            {"maxReadyCapacity": 5, "minReadyCapacity": 1, "dynamicSizing": {"enabled": True}},
            id="dynamic",
        ),
        pytest.param(
            ["--max-ready-capacity", "2", "--vm-state", "Hibernated"],
            {"maxReadyCapacity": 2, "virtualMachineState": "Hibernated", "vmStateDistribution": None},
            id="state",
        ),
        pytest.param(
            ["--max-ready-capacity", "4", "--vm-state-distribution", "paused=50 saved=50"],
            {"maxReadyCapacity": 4, "vmStateDistribution": {"pausedPercent": 50, "savedPercent": 50}},
            id="distribution",
        ),
        pytest.param(
            ["--max-ready-capacity", "2", "--reuse-on-scale-in", "true", "--dynamic-sizing", "false"],
            {"maxReadyCapacity": 2, "reuseOnScaleIn": True, "dynamicSizing": {"enabled": False}},
            id="reuse",
        ),
        pytest.param(["--max-ready-capacity", "0"], {"maxReadyCapacity": 0}, id="zero"),
    ],
)
def test_create_sends_the_policy_given(args: list[str], expected: dict[str, Any]) -> None:
    client = RecordingClient({POOL: [pool_view(expected, target=1)]})
    result = run(client, ["create", "web", *args])
    assert result.exit_code == 0, result.output
    body = put_body(client)
    assert body == expected
    assert [m for m, _p, _b in client.sent] == ["PUT"], "create replaces the policy whole: nothing read first"
    parse_standby_pool(body)  # a body the daemon accepts


@pytest.mark.parametrize(
    ("args", "exit_code", "words"),
    [
        pytest.param([], 0, "--max-ready-capacity is required", id="max-missing"),
        pytest.param(
            ["--max-ready-capacity", "2", "--vm-state", "Paused", "--vm-state-distribution", "paused=100"],
            0,
            "not both",
            id="state-and-distribution",
        ),
        pytest.param(
            ["--max-ready-capacity", "2", "--vm-state-distribution", "asleep=100"], 0, "asleep", id="bad-distribution"
        ),
        pytest.param(["--max-ready-capacity", "two"], 2, "two", id="not-a-number"),
        pytest.param(["--max-ready-capacity", "2", "--reuse-on-scale-in", "maybe"], 2, "maybe", id="not-a-bool"),
    ],
)
def test_create_refuses_before_anything_is_sent(args: list[str], exit_code: int, words: str) -> None:
    client = RecordingClient({})
    result = run(client, ["create", "web", *args])
    if exit_code == 2:  # click's usage error
        assert result.exit_code == 2 and words in result.output
    else:
        assert isinstance(result.exception, InvalidSpec), result.output
        assert words in result.exception.message
    assert client.sent == []


# -- update ------------------------------------------------------------------------------------------
CURRENT = parse_standby_pool(
    {"maxReadyCapacity": 3, "minReadyCapacity": 1, "virtualMachineState": "Saved", "reuseOnScaleIn": True}
).model_dump(by_alias=True, mode="json")
CURRENT_DIST = parse_standby_pool(
    {"maxReadyCapacity": 4, "vmStateDistribution": {"runningPercent": 50, "pausedPercent": 50}}
).model_dump(by_alias=True, mode="json")


@pytest.mark.parametrize(
    ("current", "args", "changed"),
    [
        pytest.param(CURRENT, [], {}, id="nothing-given-same-policy"),
        pytest.param(CURRENT, ["--max-ready-capacity", "6"], {"maxReadyCapacity": 6}, id="max"),
        pytest.param(CURRENT, ["--reuse-on-scale-in", "false"], {"reuseOnScaleIn": False}, id="reuse-off"),
        pytest.param(CURRENT, ["--dynamic-sizing", "true"], {"dynamicSizing": {"enabled": True}}, id="dynamic"),
        pytest.param(
            CURRENT,
            ["--vm-state", "paused"],
            {"virtualMachineState": "paused", "vmStateDistribution": None},
            id="state",
        ),
        pytest.param(
            CURRENT,
            ["--vm-state-distribution", "running=25 saved=75"],
            {"vmStateDistribution": {"runningPercent": 25, "savedPercent": 75}},
            id="distribution",
        ),
        # a state given on a pool with a distribution clears the distribution (else it would win)
        pytest.param(
            CURRENT_DIST,
            ["--vm-state", "Running"],
            {"virtualMachineState": "Running", "vmStateDistribution": None},
            id="state-clears-distribution",
        ),
    ],
)
def test_update_changes_only_what_is_given(current: dict[str, Any], args: list[str], changed: dict[str, Any]) -> None:
    client = RecordingClient({POOL: [pool_view(current, 3, 3), pool_view({**current, **changed}, 3, 3)]})
    result = run(client, ["update", "web", *args])
    assert result.exit_code == 0, result.output
    assert [m for m, _p, _b in client.sent] == ["GET", "PUT"]
    body = put_body(client)
    assert body == {**current, **changed}
    policy = parse_standby_pool(body)  # a body the daemon accepts
    if "--vm-state" in args:
        assert policy.vm_state_distribution is None
        assert policy.distribution()[StandbyState(args[args.index("--vm-state") + 1].capitalize())] == 100


def test_update_of_a_set_without_a_pool_is_refused() -> None:
    client = RecordingClient({POOL: [pool_view(None)]})
    result = run(client, ["update", "web", "--max-ready-capacity", "2"])
    assert isinstance(result.exception, InvalidSpec) and "has no standby pool" in result.exception.message
    assert [m for m, _p, _b in client.sent] == ["GET"], "nothing was sent to change"


# -- show, delete, list-instances --standby-pool -------------------------------------------------
def pool_instance(iid: int) -> dict[str, Any]:
    return {
        "instanceId": str(iid),
        "properties": {
            "osProfile": {"computerName": f"web{iid:06d}"},
            "networkProfile": {"privateIpAddress": f"198.18.1.{10 + iid}"},
            "instanceView": {"host": "h1", "zone": None, "platformFaultDomain": 0},
            "standbyPool": {"state": "Paused", "standingBy": True},
            "provisioningState": "Succeeded",
            "latestModelApplied": True,
        },
    }


def test_show_says_size_target_and_states() -> None:
    client = RecordingClient({POOL: [pool_view(CURRENT, size=2, target=3, value=[pool_instance(5), pool_instance(6)])]})
    result = run(client, ["show", "web"], output="table")
    assert result.exit_code == 0, result.output
    assert "standby pool of web: 2 of 3 (Paused 2 standing by)" in result.output
    assert "web000005" in result.output and "web000006" in result.output


def test_delete_sends_a_delete() -> None:
    client = RecordingClient({POOL: [{"status": "Accepted"}]})
    result = run(client, ["delete", "web"])
    assert result.exit_code == 0, result.output
    assert client.sent == [("DELETE", POOL, None)]


def test_list_instances_of_the_pool() -> None:
    client = RecordingClient({POOL: [pool_view(CURRENT, size=1, target=1, value=[pool_instance(7)])]})
    result = run(client, ["web", "--standby-pool"], output="table", command=list_instances)
    assert result.exit_code == 0, result.output
    assert "web000007" in result.output and "Paused" in result.output
    assert [p for _m, p, _b in client.sent] == [POOL]
