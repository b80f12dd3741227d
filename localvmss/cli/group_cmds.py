"""``group`` and ``config``: az's resource groups and az's settings file.

``group create|list|show|exists|delete`` call ``/resourceGroups`` (a set lives in one group; the
daemon refuses to delete a group that still holds sets). ``config set defaults.group=NAME``,
``config get [KEY]`` and ``config unset KEY`` edit the CLI's own settings file
(``localvmss.cli.settings``): with a default group, commands send it as ``-g`` would.

``localvmss.cli.main`` registers these groups; this module does not import ``main``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click

from localvmss.cli import completion, settings
from localvmss.cli.azflags import values_option
from localvmss.cli.client import api_path
from localvmss.cli.context import Ctx, pass_ctx
from localvmss.cli.output import Columns, emit, err_console
from localvmss.errors import InvalidSpec, LocalVMSSError, NotFound

GROUP_COLUMNS: Columns = [
    ("Name", lambda g: g["name"]),
    ("Location", lambda g: g.get("location")),
    ("Status", lambda g: (g.get("properties") or {}).get("provisioningState")),
    ("Tags", lambda g: " ".join(f"{k}={v}" for k, v in (g.get("tags") or {}).items())),
]


def parse_tags(words: tuple[str, ...]) -> dict[str, str]:
    """az's ``--tags a=b c=d`` (a bare word is a tag with an empty value, as in az)."""
    tags: dict[str, str] = {}
    for word in words:
        key, _, value = word.partition("=")
        if not key:
            raise InvalidSpec(f"--tags {word!r}: give KEY=VALUE")
        tags[key] = value
    return tags


def _name_option(fn: Any) -> Any:
    return click.option(
        "-n",
        "--name",
        "-g",
        "--resource-group",
        "name",
        required=True,
        help="the resource group",
        shell_complete=completion.group_names,
    )(fn)


@click.group("group")
def group() -> None:
    """Resource groups (az group): every scale set lives in one."""


@group.command("create")
@_name_option
@click.option("-l", "--location", default="local", show_default=True, help="a label here (one place: your hosts)")
@values_option("--tags", help="KEY=VALUE, space-separated")
@pass_ctx
def group_create(c: Ctx, name: str, location: str, tags: tuple[str, ...]) -> None:
    """Create a resource group (or update its location and tags)."""
    words = tuple(w for chunk in tags for w in chunk.split())
    emit(c, c.client.put(api_path("resourceGroups", name), {"location": location, "tags": parse_tags(words)}))


@group.command("list")
@pass_ctx
def group_list(c: Ctx) -> None:
    emit(c, c.client.get("/resourceGroups")["value"], GROUP_COLUMNS)


@group.command("show")
@_name_option
@pass_ctx
def group_show(c: Ctx, name: str) -> None:
    emit(c, c.client.get(api_path("resourceGroups", name)))


@group.command("exists")
@_name_option
@pass_ctx
def group_exists(c: Ctx, name: str) -> None:
    """Print true or false."""
    try:
        c.client.get(api_path("resourceGroups", name))
    except NotFound:
        click.echo("false")
        return
    click.echo("true")


@group.command("delete")
@_name_option
@click.option("-y", "--yes", is_flag=True, help="do not ask for confirmation")
@click.option("--no-wait", is_flag=True)
@pass_ctx
def group_delete(c: Ctx, name: str, yes: bool, no_wait: bool) -> None:
    """Delete an empty resource group (delete its scale sets first)."""
    if not yes:
        if not sys.stdin.isatty():
            raise InvalidSpec(f"deleting group {name!r} needs --yes when there is no terminal to ask on")
        click.confirm(f"Are you sure you want to delete resource group {name!r}?", abort=True)
    c.client.delete(api_path("resourceGroups", name))
    if no_wait:
        return
    started = time.monotonic()
    while time.monotonic() - started < 600:
        try:
            c.client.get(api_path("resourceGroups", name))
        except NotFound:
            err_console.print(f"{name}: deleted in {time.monotonic() - started:.0f} s")
            return
        time.sleep(1.0)
    raise LocalVMSSError(f"resource group {name} was not deleted within 600 s")


@click.group("config")
def config() -> None:
    """The CLI's settings (az config): defaults.group, core.output."""


@config.command("set")
@click.argument("assignments", nargs=-1, required=True, metavar="KEY=VALUE...")
def config_set(assignments: tuple[str, ...]) -> None:
    """Set keys, e.g. 'config set defaults.group=web-rg core.output=json'."""
    pairs = [settings.parse_assignment(a) for a in assignments]
    settings.store(pairs, settings.config_path())


@config.command("unset")
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
def config_unset(keys: tuple[str, ...]) -> None:
    pairs = [(".".join(settings.split_key(k)), "") for k in keys]
    settings.store(pairs, settings.config_path(), unset=True)


def config_view(key: str | None, env: dict[str, str] | None = None) -> Any:
    """``config get`` as az prints it: {name, source, value} for a key, else per section."""
    env = dict(os.environ) if env is None else env
    path = settings.config_path(env)
    values = settings.file_values(path)
    for known, variables in settings.ENV_OVERRIDES.items():
        for var in reversed(variables):
            if env.get(var):
                values[known] = env[var]
    sources = {k: next((var for var in settings.ENV_OVERRIDES.get(k, ()) if env.get(var)), str(path)) for k in values}

    def entry(k: str) -> dict[str, str]:
        return {"name": k.split(".", 1)[1], "source": sources[k], "value": values[k]}

    if key is not None:
        wanted = ".".join(settings.split_key(key))
        if wanted not in values:
            raise NotFound(f"configuration {wanted} is not set")
        return entry(wanted)
    out: dict[str, list[dict[str, str]]] = {}
    for k in sorted(values):
        out.setdefault(k.split(".", 1)[0], []).append(entry(k))
    return out


@config.command("get")
@click.argument("key", required=False)
@pass_ctx
def config_get(c: Ctx, key: str | None) -> None:
    """Show a key (e.g. defaults.group), or every key, and where it comes from."""
    emit(c, config_view(key))


COMMANDS = (group, config)
