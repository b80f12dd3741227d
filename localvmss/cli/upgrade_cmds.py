"""Rolling upgrades from the command line: ``rolling-upgrade start|cancel|get-latest`` and
``get-os-upgrade-history`` (az's verbs), and the rolling-policy flags ``create``/``update`` share.

``rolling-upgrade start`` waits, printing each change of progress to stderr, until the rollout
ends, and exits non-zero unless it completed; ``--what-if`` prints the batches it would run
and changes nothing (the daemon's plan, the one a real start carries out).

``localvmss.cli.main`` registers these commands; this module does not import ``main``.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from localvmss.cli.client import api_path
from localvmss.cli.context import Ctx, pass_ctx
from localvmss.cli.output import emit, err_console, out_console

ACTIVE = ("RollingForward", "RollingBack")

# (flag, the rollingUpgradePolicy key, click type, help)
_POLICY_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--max-batch-instance-percent", "maxBatchInstancePercent", click.IntRange(5, 100), "5-100 (default 20)"),
    ("--max-unhealthy-instance-percent", "maxUnhealthyInstancePercent", click.IntRange(5, 100), "5-100"),
    (
        "--max-unhealthy-upgraded-instance-percent",
        "maxUnhealthyUpgradedInstancePercent",
        click.IntRange(0, 100),
        "0-100",
    ),
    ("--pause-time-between-batches", "pauseTimeBetweenBatches", str, "ISO-8601 (PT30S) or seconds"),
    ("--prioritize-unhealthy-instances", "prioritizeUnhealthyInstances", click.BOOL, "true or false"),
    ("--max-surge", "maxSurge", click.BOOL, "true: new instances first, old ones removed once healthy"),
    (
        "--rollback-failed-instances-on-policy-breach",
        "rollbackFailedInstancesOnPolicyBreach",
        click.BOOL,
        "true: on a breach, failed instances return to the previous model",
    ),
    (
        "--rollback-all-instances-on-policy-breach",
        "rollbackAllInstancesOnPolicyBreach",
        click.BOOL,
        "true: on a breach, the whole set returns to the previous model (beyond Azure)",
    ),
    ("--bake-time", "bakeTime", str, "ISO-8601 or seconds: watch the upgraded set this long before Completed"),
]


def _duration(value: str) -> str:
    """az takes plain seconds for some durations; the API takes ISO-8601."""
    return f"PT{value}S" if value.isdigit() else value


def rolling_policy_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The rolling-policy flags, passed to ``fn`` as one ``rolling_policy`` dict of the given ones."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given: dict[str, Any] = {}
        for flag, key, _type, _help in _POLICY_FLAGS:
            value = kwargs.pop(_param(flag))
            if value is not None:
                given[key] = _duration(value) if key in ("pauseTimeBetweenBatches", "bakeTime") else value
        return fn(*args, rolling_policy=given, **kwargs)

    for flag, _key, kind, text in reversed(_POLICY_FLAGS):
        wrapper = click.option(flag, _param(flag), type=kind, default=None, help=text)(wrapper)
    return wrapper


def _param(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


@click.group("rolling-upgrade")
def rolling_upgrade() -> None:
    """Start, cancel or show a rolling upgrade (every outdated instance to the set's model)."""


@rolling_upgrade.command("start")
@click.argument("name")
@click.option("--what-if", is_flag=True, help="print the batches it would run, and why; change nothing")
@click.option("--no-wait", is_flag=True)
@click.option("--timeout", type=float, default=3600.0, show_default=True, help="seconds to wait for the end")
@pass_ctx
def start(c: Ctx, name: str, what_if: bool, no_wait: bool, timeout: float) -> None:
    """Upgrade the outdated instances batch by batch under the set's rollingUpgradePolicy."""
    if what_if:
        plan = c.client.post(api_path("scaleSets", name, "osRollingUpgrade") + "?whatIf=true", None)
        show_plan(c, plan)
        return
    view = c.client.post(api_path("scaleSets", name, "osRollingUpgrade"), None)
    if not no_wait:
        view = wait_for_rollout(c, name, timeout)
    emit(c, view, _LATEST_COLUMNS)
    status = view["properties"]["runningStatus"]["code"]
    if not no_wait and status != "Completed":
        err_console.print(f"rolling upgrade {status}: {view['properties'].get('reason', '')}")
        sys.exit(1)


@rolling_upgrade.command("cancel")
@click.argument("name")
@pass_ctx
def cancel(c: Ctx, name: str) -> None:
    """Start no further batch; the batch in flight finishes."""
    emit(c, c.client.post(api_path("scaleSets", name, "rollingUpgrades", "cancel"), None), _LATEST_COLUMNS)


@rolling_upgrade.command("get-latest")
@click.argument("name")
@pass_ctx
def get_latest(c: Ctx, name: str) -> None:
    """The latest rolling upgrade: status, progress counts and why it stopped."""
    emit(c, c.client.get(api_path("scaleSets", name, "rollingUpgrades", "latest")), _LATEST_COLUMNS)


@click.command("get-os-upgrade-history")
@click.argument("name")
@pass_ctx
def get_os_upgrade_history(c: Ctx, name: str) -> None:
    """Every model version, who made it and what changed, and the rollouts to it."""
    emit(
        c,
        c.client.get(api_path("scaleSets", name, "osUpgradeHistory"))["value"],
        [
            ("Version", lambda v: v["properties"]["modelVersion"]),
            ("Created", lambda v: v["properties"]["createdTime"]),
            ("By", lambda v: v["properties"]["changedBy"]),
            ("Changes", lambda v: ", ".join(v["properties"]["changes"])),
            ("Current", lambda v: "yes" if v["properties"]["current"] else ""),
            ("Instances", lambda v: ",".join(v["properties"]["instanceIds"])),
            ("Rollouts", lambda v: ", ".join(r["runningStatus"]["code"] for r in v["properties"]["rollingUpgrades"])),
        ],
    )


_LATEST_COLUMNS = [
    ("Status", lambda v: v["properties"]["runningStatus"]["code"]),
    ("To", lambda v: v["properties"]["toModelVersion"]),
    ("Succeeded", lambda v: v["properties"]["progress"]["successfulInstanceCount"]),
    ("Failed", lambda v: v["properties"]["progress"]["failedInstanceCount"]),
    ("InProgress", lambda v: v["properties"]["progress"]["inProgressInstanceCount"]),
    ("Pending", lambda v: v["properties"]["progress"]["pendingInstanceCount"]),
    ("Reason", lambda v: v["properties"]["reason"]),
]


def progress_line(view: dict[str, Any]) -> str:
    props = view["properties"]
    p = props["progress"]
    return (
        f"{props['runningStatus']['code']}: {p['successfulInstanceCount']} succeeded, "
        f"{p['failedInstanceCount']} failed, {p['inProgressInstanceCount']} in progress, "
        f"{p['pendingInstanceCount']} pending - {props['reason']}"
    )


def wait_for_rollout(c: Ctx, name: str, timeout_s: float) -> dict[str, Any]:
    """Poll the latest rollout until it ends, printing each new progress line to stderr."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        view = c.client.get(api_path("scaleSets", name, "rollingUpgrades", "latest"))
        line = progress_line(view)
        if line != last:
            err_console.print(line)
            last = line
        if view["properties"]["runningStatus"]["code"] not in ACTIVE:
            return dict(view)
        if time.monotonic() > deadline:
            err_console.print(f"still {view['properties']['runningStatus']['code']} after {timeout_s:.0f} s")
            sys.exit(1)
        time.sleep(1.0)


def show_plan(c: Ctx, plan: dict[str, Any]) -> None:
    """A plan (what-if) as a table of changes and its notes; ``-o json``: the plan itself."""
    if c.output == "json":
        emit(c, plan)
        return
    emit(
        c,
        plan["changes"],
        [
            ("Batch", lambda ch: "" if ch.get("batch") is None else ch["batch"] + 1),
            ("Instance", lambda ch: ch.get("instanceId", "(new)")),
            ("Change", lambda ch: ch["change"]),
            ("Zone", lambda ch: ch.get("zone")),
            ("FD", lambda ch: ch.get("platformFaultDomain")),
            ("Why", lambda ch: ch["reason"]),
        ],
    )
    for note in plan.get("notes", []):
        out_console.print(f"note: {note}")


COMMANDS = [rolling_upgrade, get_os_upgrade_history]
