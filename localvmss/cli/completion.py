"""Shell completion of names the daemon knows: scale sets, VMs, resource groups and instance ids.

click calls these while completing (``_LOCALVMSS_COMPLETE=bash_source localvmss``; see
docs/CLI.md). Each asks the daemon once, with a short timeout, through the connection options
the line has so far; when the daemon cannot be reached, or answers with an error, there is
simply nothing to offer (a completion never prints an error into the user's shell).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click
from click.shell_completion import CompletionItem

from localvmss.cli.client import DEFAULT_SOCKET, ApiClient, api_path
from localvmss.cli.context import Ctx

Completer = Callable[[click.Context, click.Parameter, str], list[CompletionItem]]


def _client(ctx: click.Context) -> ApiClient:
    c = ctx.find_object(Ctx) or Ctx()
    return ApiClient(
        c.socket_path or os.environ.get("LOCALVMSS_SOCKET", DEFAULT_SOCKET),
        c.url or os.environ.get("LOCALVMSS_URL"),
        c.token or os.environ.get("LOCALVMSS_TOKEN"),
        timeout=2.0,
        resource_group=c.resource_group,
    )


def _ask(ctx: click.Context, path: str, key: Callable[[dict[str, Any]], Any]) -> list[str]:
    try:
        client = _client(ctx)
        try:
            return [str(key(item)) for item in client.get(path).get("value", [])]
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - completion must stay silent, whatever went wrong
        return []


def _matching(names: list[str], incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(n) for n in sorted(set(names)) if n.startswith(incomplete)]


def set_names(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _matching(_ask(ctx, "/scaleSets", lambda s: s["name"]), incomplete)


def vm_names(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _matching(_ask(ctx, "/virtualMachines", lambda v: v["name"]), incomplete)


def group_names(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _matching(_ask(ctx, "/resourceGroups", lambda g: g["name"]), incomplete)


def named_set(ctx: click.Context) -> str | None:
    """The set the line names so far: ``-n NAME`` or the NAME argument (left unparsed in
    ``ctx.args`` when completion stopped at the option being completed)."""
    for key in ("az_name", "name", "resource"):
        value = ctx.params.get(key)
        if isinstance(value, str) and value:
            return value
    return next((a for a in ctx.args if not a.startswith("-")), None)


def instance_ids(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The named set's instance ids, and ``*`` (all of them)."""
    name = named_set(ctx)
    if name is None:
        return []
    try:
        path = api_path("scaleSets", name, "virtualMachines")
    except Exception:  # noqa: BLE001 - a name that cannot be a path segment has no instances
        return []
    return _matching([*_ask(ctx, path, lambda i: i["instanceId"]), "*"], incomplete)
