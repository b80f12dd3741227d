"""How commands show what the API returned: ``--query`` first, then the ``-o`` format (json,
jsonc, yaml, yamlc, tsv, none: ``localvmss.cli.formats``), or with ``-o table`` the command's own
columns (az's automatic table when a query reshaped the data or the command has none).

Used by every command module. Progress and warnings go to stderr (``err_console``, silenced by
``--only-show-errors``) so that stdout stays the result alone.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from localvmss.cli.context import Ctx
from localvmss.cli.formats import apply_query, auto_rows, render

err_console = Console(stderr=True)
# Tables are not cut to 80 columns when piped (scripts and tests read them too).
out_console = Console(width=None if sys.stdout.isatty() else 200)

# A table column: its title and how to read the cell from one row of the API's answer.
Columns = list[tuple[str, Callable[[dict[str, Any]], Any]]]


def emit(c: Ctx, data: Any, columns: Columns | None = None) -> None:
    """``data`` through ``--query``, then in the ``-o`` format; for ``table``, one row per item
    in ``columns`` (without columns and without a query: JSON, as before tables existed)."""
    query = getattr(c, "query", None)
    fmt = getattr(c, "format", c.output)
    if query:
        data = apply_query(data, query)
    if fmt == "table" and query:
        headers, cells = auto_rows(data, sort_keys=False)
        _print_table(headers, cells)
        return
    if fmt == "table" and columns is not None:
        rows = data if isinstance(data, list) else [data]
        cells = [["" if (v := get(row)) is None else str(v) for _, get in columns] for row in rows]
        _print_table([title for title, _ in columns], cells)
        return
    text = render(data, "json" if fmt == "table" else fmt, color=sys.stdout.isatty())
    if text:
        click.echo(text, nl=False)


def _print_table(headers: list[str], rows: list[list[str]]) -> None:
    table = Table(box=None, header_style="bold")
    for title in headers:
        table.add_column(title)
    for row in rows:
        table.add_row(*row)
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
