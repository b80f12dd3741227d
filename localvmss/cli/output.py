"""How commands show what the API returned: JSON with ``-o json``, else a table of columns.

Used by every command module; imports nothing of the CLI but ``context``. Progress and warnings
go to stderr (``err_console``) so that stdout stays the result alone.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from localvmss.cli.context import Ctx

err_console = Console(stderr=True)
# Tables are not cut to 80 columns when piped (scripts and tests read them too).
out_console = Console(width=None if sys.stdout.isatty() else 200)

# A table column: its title and how to read the cell from one row of the API's answer.
Columns = list[tuple[str, Callable[[dict[str, Any]], Any]]]


def emit(c: Ctx, data: Any, columns: Columns | None = None) -> None:
    """``data`` as JSON (``-o json``, or no ``columns``), else one table row per item."""
    if c.output == "json" or columns is None:
        click.echo(json.dumps(data, indent=2))
        return
    rows = data if isinstance(data, list) else [data]
    table = Table(box=None, header_style="bold")
    for title, _ in columns:
        table.add_column(title)
    for row in rows:
        table.add_row(*("" if (v := get(row)) is None else str(v) for _, get in columns))
    out_console.print(table)


def status_code(view: dict[str, Any], prefix: str) -> str:
    """The part after ``prefix`` of an instance view's status code: ``PowerState/`` -> running."""
    for status in view.get("statuses", []):
        if status["code"].startswith(prefix):
            return str(status["code"].split("/", 1)[1])
    return ""


SET_COLUMNS: Columns = [
    ("Name", lambda s: s["name"]),
    ("Mode", lambda s: s["properties"]["orchestrationMode"]),
    ("Capacity", lambda s: s["sku"]["capacity"]),
    ("Ready", lambda s: s["properties"].get("readyCount")),
    ("Size", lambda s: s["sku"]["name"]),
    ("Upgrade", lambda s: s["properties"]["upgradePolicy"]["mode"]),
    ("State", lambda s: s["properties"]["provisioningState"]),
    ("Message", lambda s: s["properties"].get("message") or ""),
]

INSTANCE_COLUMNS: Columns = [
    ("InstanceId", lambda i: i["instanceId"]),
    ("Name", lambda i: i["name"]),
    ("ComputerName", lambda i: i["properties"]["osProfile"]["computerName"]),
    ("IP", lambda i: i["properties"]["networkProfile"]["privateIpAddress"]),
    ("Host", lambda i: i["properties"]["instanceView"]["host"]),
    ("Zone", lambda i: i["properties"]["instanceView"]["zone"]),
    ("FD", lambda i: i["properties"]["instanceView"]["platformFaultDomain"]),
    ("UD", lambda i: i["properties"]["instanceView"]["platformUpdateDomain"]),
    ("Power", lambda i: status_code(i["properties"]["instanceView"], "PowerState/")),
    ("Health", lambda i: i["properties"]["instanceView"]["vmHealth"]["status"]["code"].split("/")[1]),
    ("State", lambda i: i["properties"]["provisioningState"]),
    ("Latest", lambda i: i["properties"]["latestModelApplied"]),
]

# The standby pool (list-instances --standby-pool): no members, so no health or model columns.
STANDBY_COLUMNS: Columns = [
    ("InstanceId", lambda i: i["instanceId"]),
    ("ComputerName", lambda i: i["properties"]["osProfile"]["computerName"]),
    ("IP", lambda i: i["properties"]["networkProfile"]["privateIpAddress"]),
    ("Host", lambda i: i["properties"]["instanceView"]["host"]),
    ("Zone", lambda i: i["properties"]["instanceView"]["zone"]),
    ("FD", lambda i: i["properties"]["instanceView"]["platformFaultDomain"]),
    ("StandbyState", lambda i: i["properties"]["standbyPool"]["state"]),
    ("StandingBy", lambda i: i["properties"]["standbyPool"]["standingBy"]),
    ("State", lambda i: i["properties"]["provisioningState"]),
    ("Latest", lambda i: i["properties"]["latestModelApplied"]),
]

# A plan (--what-if): one row per instance it creates, removes, adopts or keeps, in order.
PLAN_COLUMNS: Columns = [
    ("Change", lambda c: c["change"] + (" (overprovisioned)" if c.get("overprovisioned") else "")),
    ("InstanceId", lambda c: c.get("instanceId", "(new)")),
    ("Zone", lambda c: c.get("zone")),
    ("FD", lambda c: c.get("platformFaultDomain")),
    ("Host", lambda c: c.get("host")),
    ("Reason", lambda c: c["reason"]),
]
