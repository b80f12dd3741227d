"""Day-2 commands: ``watch`` (a live table of instances), ``boot-diagnostics get-boot-log`` and
``activity-log`` with az's time filters.

``watch`` reads ``GET /scaleSets/{name}/instanceMetrics`` every ``--interval`` seconds; CPU % is
the CPU seconds libvirt counted between two readings, per vCPU, so the first reading shows none.
On a terminal the table is redrawn in place (rich's Live); otherwise each reading is printed as
its own table, so a pipe or a test sees plain snapshots. Ctrl-C ends it with exit code 0.

``activity-log`` takes ``--start-time``/``--end-time`` as ISO-8601 (UTC unless an offset is
given) or as an age (``1h``: an hour ago), and az's ``--offset``: with ``--start-time`` the window
ends that long after it, otherwise it starts that long before ``--end-time`` (default: now). The
filtering is the daemon's (query parameters of ``GET /scaleSets/{name}/activityLog``).

``localvmss.cli.main`` registers these commands; this module does not import ``main``. The
parsers are plain functions, unit-tested as tables; each problem is one ``InvalidSpec`` line.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import click
from rich.live import Live
from rich.table import Table

from localvmss.cli.azflags import instance_id_option
from localvmss.cli.client import api_path
from localvmss.cli.context import Ctx, pass_ctx
from localvmss.cli.durations import parse_duration
from localvmss.cli.output import Columns, emit, out_console
from localvmss.errors import InvalidSpec

TIME_SHAPE = "an ISO-8601 date-time such as 2026-11-21T10:00:00Z, or an age such as 30m, 1h or 2d"


# -- time filters -------------------------------------------------------------------------------
def parse_when(text: str, now: datetime, what: str = "time") -> datetime:
    """``text`` as an aware datetime: ISO-8601 (UTC when it names no offset) or an age before
    ``now`` in az's duration shorthand (``90s``, ``30m``, ``1h``, ``2d``, ``PT1H``)."""
    value = text.strip()
    if not value:
        raise InvalidSpec(f"{what} is empty; expected {TIME_SHAPE}")
    if value[0].isdigit() and ("-" in value or ":" in value):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidSpec(f"{what} {text!r} is not a date-time; expected {TIME_SHAPE}") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    try:
        age = parse_duration(value, what)
    except InvalidSpec:
        raise InvalidSpec(f"{what} {text!r} is neither a date-time nor an age; expected {TIME_SHAPE}") from None
    return now - age


def activity_window(
    start: str | None, end: str | None, offset: str | None, now: datetime
) -> tuple[datetime | None, datetime | None]:
    """az's rule: ``--offset`` with ``--start-time`` sets the end, otherwise it sets the start
    before the end (default now); with both times given the offset must not be."""
    since = parse_when(start, now, "--start-time") if start is not None else None
    until = parse_when(end, now, "--end-time") if end is not None else None
    if offset is not None:
        span = parse_duration(offset, "--offset")
        if since is not None and until is not None:
            raise InvalidSpec("--offset goes with --start-time or --end-time, not both")
        if since is not None:
            until = since + span
        else:
            until = until or now
            since = until - span
    if since is not None and until is not None and since > until:
        raise InvalidSpec(f"--start-time {since.isoformat()} is after --end-time {until.isoformat()}")
    return since, until


def activity_query(
    since: datetime | None,
    until: datetime | None,
    max_events: int | None,
    instance_id: str | None,
    kinds: tuple[str, ...],
) -> dict[str, str]:
    """The query parameters of ``GET /scaleSets/{name}/activityLog`` (times in UTC)."""
    params: dict[str, str] = {}
    if since is not None:
        params["startTime"] = since.astimezone(UTC).isoformat()
    if until is not None:
        params["endTime"] = until.astimezone(UTC).isoformat()
    if max_events is not None:
        params["maxEvents"] = str(max_events)
    if instance_id is not None:
        params["instanceId"] = instance_id
    if kinds:
        params["kind"] = ",".join(kinds)
    return params


def shown_time(at: float, local: bool = False) -> str:
    """ISO-8601 to the second: UTC with a Z, or local time with its offset."""
    moment = datetime.fromtimestamp(at, UTC)
    if local:
        return moment.astimezone().isoformat(timespec="seconds")
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


@click.command("activity-log")
@click.argument("name")
@click.option("--start-time", help=f"from this time: {TIME_SHAPE}")
@click.option("--end-time", help="up to this time (same forms as --start-time; default now)")
@click.option("--offset", help="length of the window, e.g. 6h or 1d2h (with --start-time or --end-time)")
@click.option("--max-events", type=click.IntRange(1, 10000), help="the newest N entries (default 200)")
@instance_id_option(required=False, help="only entries that name this instance")
@click.option("--kind", "kinds", multiple=True, help="only this kind (scale, autoscale, repair, ...); repeatable")
@click.option("--local-time", is_flag=True, help="show local time instead of UTC")
@pass_ctx
def activity_log(
    c: Ctx,
    name: str,
    start_time: str | None,
    end_time: str | None,
    offset: str | None,
    max_events: int | None,
    instance_id: str | None,
    kinds: tuple[str, ...],
    local_time: bool,
) -> None:
    """What the set did and why (scale, autoscale, repair ...), oldest first."""
    since, until = activity_window(start_time, end_time, offset, datetime.now(UTC))
    params = activity_query(since, until, max_events, instance_id, kinds)
    path = api_path("scaleSets", name, "activityLog") + (f"?{urlencode(params)}" if params else "")
    emit(
        c,
        c.client.get(path)["value"],
        [
            ("Time", lambda a: shown_time(a["at"], local_time)),
            ("Kind", lambda a: a["kind"]),
            ("Message", lambda a: a["message"]),
        ],
    )


# -- watch --------------------------------------------------------------------------------------
def cpu_percent(before: dict[str, Any] | None, after: dict[str, Any], seconds: float) -> float | None:
    """CPU use between two readings of one instance, in % of its vCPUs (100 = every vCPU busy);
    None without two readings of a running guest (or after a restart reset its counter)."""
    if before is None or seconds <= 0:
        return None
    a, b, vcpus = before.get("cpuSeconds"), after.get("cpuSeconds"), after.get("vcpus")
    if a is None or b is None or not vcpus or b < a:
        return None
    return 100.0 * (b - a) / seconds / vcpus


def _mib(value: Any) -> str:
    return f"{int(value) >> 20}" if value is not None else "-"


def memory_cell(item: dict[str, Any]) -> str:
    """``used/total MiB`` when the guest reports its memory, else the memory it was given."""
    total = item.get("memoryBytes")
    if total is None:
        return "-"
    used = item.get("memoryUsedBytes")
    return f"{_mib(used)}/{_mib(total)} MiB" if used is not None else f"{_mib(total)} MiB"


def connections_cell(item: dict[str, Any]) -> str:
    sessions = item.get("lbSessions")
    if sessions is None:
        return "-"
    return f"{sessions} ({item.get('lbStatus') or '?'})"


WATCH_COLUMNS: Columns = [
    ("InstanceId", lambda i: i["instanceId"]),
    ("Host", lambda i: i["host"]),
    ("Power", lambda i: i["powerState"]),
    ("State", lambda i: i["provisioningState"]),
    ("Health", lambda i: i["health"]),
    ("CPU", lambda i: "-" if i.get("cpuPercent") is None else f"{i['cpuPercent']:.1f}%"),
    ("Memory", memory_cell),
    ("LB sessions", connections_cell),
]


def with_cpu(reading: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """``reading`` with every instance's ``cpuPercent`` since ``previous`` (the reading before)."""
    before = {i["instanceId"]: i for i in (previous or {}).get("value", [])}
    seconds = reading["sampledAt"] - previous["sampledAt"] if previous else 0.0
    items = [{**i, "cpuPercent": cpu_percent(before.get(i["instanceId"]), i, seconds)} for i in reading["value"]]
    return {**reading, "value": items}


def watch_table(name: str, reading: dict[str, Any], local: bool = False) -> Table:
    count = len(reading["value"])
    title = f"{name} at {shown_time(reading['sampledAt'], local)}: {count} instance{'' if count == 1 else 's'}"
    table = Table(title=title, title_justify="left", box=None, header_style="bold")
    for column, _ in WATCH_COLUMNS:
        table.add_column(column)
    for item in reading["value"]:
        table.add_row(*(str(get(item)) for _, get in WATCH_COLUMNS))
    return table


def run_watch(
    read: Callable[[], dict[str, Any]],
    show: Callable[[dict[str, Any]], None],
    interval: float,
    count: int | None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Read and show ``count`` times (forever if None), ``interval`` apart; returns readings shown."""
    previous: dict[str, Any] | None = None
    shown = 0
    while count is None or shown < count:
        if shown:
            sleep(interval)
        reading = with_cpu(read(), previous)
        show(reading)
        previous = reading
        shown += 1
    return shown


@click.command("watch")
@click.argument("name")
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True, help="seconds")
@click.option("--count", type=click.IntRange(min=1), help="stop after N readings (default: until Ctrl-C)")
@click.option("--local-time", is_flag=True, help="show local time instead of UTC")
@pass_ctx
def watch(c: Ctx, name: str, interval: float, count: int | None, local_time: bool) -> None:
    """A live table of the set's instances: power, health, CPU, memory and LB sessions."""
    path = api_path("scaleSets", name, "instanceMetrics")

    def read() -> dict[str, Any]:
        return dict(c.client.get(path))

    try:
        if c.output == "json":
            run_watch(read, lambda r: click.echo(json.dumps(r)), interval, count)
        elif sys.stdout.isatty():
            with Live(console=out_console, auto_refresh=False) as live:

                def redraw(reading: dict[str, Any]) -> None:
                    live.update(watch_table(name, reading, local_time), refresh=True)

                run_watch(read, redraw, interval, count)
        else:
            run_watch(read, lambda r: out_console.print(watch_table(name, r, local_time)), interval, count)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends


# -- boot diagnostics ---------------------------------------------------------------------------
@click.group("boot-diagnostics")
def boot_diagnostics() -> None:
    """Serial console logs (az vmss boot-diagnostics)."""


@boot_diagnostics.command("get-boot-log")
@click.argument("name")
@instance_id_option()
@pass_ctx
def get_boot_log(c: Ctx, name: str, instance_id: str) -> None:
    """The instance's serial console since its last start."""
    result = c.client.get(api_path("scaleSets", name, "virtualMachines", instance_id, "bootLog"))
    if c.output == "json":
        emit(c, result)
        return
    text = result["serialConsoleLog"]
    click.echo(text, nl=not text.endswith("\n"))
    if result.get("truncated"):
        click.echo(f"(only the end of {result['path']} on {result['host']} is shown)", err=True)


COMMANDS = (watch, boot_diagnostics, activity_log)
