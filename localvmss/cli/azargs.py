"""az's global arguments, accepted anywhere on the line, and ``-n``/``-g`` wherever a set is named.

One mechanism, applied once to the whole command tree when ``main`` has registered it
(``install``): every group and command gets the global options (``-o``, ``--query``,
``--debug``, ``--verbose``, ``--only-show-errors``, ``--socket``, ``--url``, ``--token``) as
options whose callbacks write into the invocation's ``Ctx``, so ``localvmss -o json list``,
``localvmss vmss list -o json`` and ``localvmss monitor autoscale show -o json ...`` mean the
same. A command whose NAME argument names a set or VM also takes ``-n/--name`` (the argument
becomes optional; giving both, differently, is refused) and ``-g/--resource-group``; the NAME
argument completes from the daemon. Command modules are not edited for any of this: an option a
command already spells is left to it, and a command's own ``resource_group`` value is applied
to the client too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import click

from localvmss.cli import completion, settings
from localvmss.cli.context import Ctx
from localvmss.cli.formats import FORMATS, compile_query
from localvmss.cli.output import err_console
from localvmss.errors import InvalidSpec


def ctx_of(ctx: click.Context) -> Ctx:
    """The invocation's ``Ctx`` (made at the root, with the configured default output, if none)."""
    found = ctx.find_object(Ctx)
    if found is not None:
        return found
    made = new_ctx()
    ctx.find_root().obj = made
    ctx.obj = made
    return made


def new_ctx() -> Ctx:
    """A fresh invocation: progress shown again, ``-o`` from ``core.output`` if configured."""
    err_console.quiet = False
    c = Ctx()
    try:
        configured = (settings.lookup("core.output") or "").lower()
    except InvalidSpec:
        configured = ""
    if configured in FORMATS:
        c.format = configured
    return c


@dataclass(frozen=True)
class GlobalOption:
    """One global argument: its spellings, how it parses, and what it sets in ``Ctx``."""

    decls: tuple[str, ...]
    apply: Callable[[Ctx, Any], None]
    help: str
    is_flag: bool = False
    type: Any = None
    metavar: str | None = None


def _set_output(c: Ctx, value: str) -> None:
    c.format = value.lower()


def _set_query(c: Ctx, value: str) -> None:
    try:
        compile_query(value)
    except InvalidSpec as exc:
        raise click.BadParameter(exc.message) from None
    c.query = value


def _set_quiet(c: Ctx, _value: bool) -> None:
    c.only_show_errors = True
    err_console.quiet = True


GLOBALS: tuple[GlobalOption, ...] = (
    GlobalOption(
        ("-o", "--output"),
        _set_output,
        "output format (default table; 'localvmss config set core.output=json' changes it)",
        type=click.Choice(FORMATS, case_sensitive=False),
    ),
    GlobalOption(
        ("--query",), _set_query, "JMESPath query applied to the result (https://jmespath.org)", metavar="JMESPATH"
    ),
    GlobalOption(("--debug",), lambda c, _v: setattr(c, "debug", True), "show requests and tracebacks", is_flag=True),
    GlobalOption(("--verbose",), lambda c, _v: setattr(c, "verbose", True), "show each request", is_flag=True),
    GlobalOption(("--only-show-errors",), _set_quiet, "no progress or warnings on stderr, only errors", is_flag=True),
    GlobalOption(
        ("--socket",),
        lambda c, v: setattr(c, "socket_path", v),
        "daemon API unix socket [env LOCALVMSS_SOCKET; /run/localvmss/api.sock]",
        metavar="PATH",
    ),
    GlobalOption(("--url",), lambda c, v: setattr(c, "url", v), "daemon API over TCP instead [env LOCALVMSS_URL]"),
    GlobalOption(("--token",), lambda c, v: setattr(c, "token", v), "bearer token for --url [env LOCALVMSS_TOKEN]"),
    GlobalOption(
        ("--subscription",),
        lambda c, v: setattr(c, "subscription", v),
        "az's subscription (accepted; the daemon is one subscription)",
    ),
)
GLOBAL_EPILOG = (
    "Global arguments (anywhere on the line): -o/--output json|jsonc|yaml|yamlc|tsv|table|none, "
    "--query JMESPATH, --debug, --verbose, --only-show-errors, --socket, --url, --token, --subscription."
)


def _callback(spec: GlobalOption) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value is None or value is False:
            return
        spec.apply(ctx_of(ctx), value)

    return callback


def _spelled(command: click.Command) -> set[str]:
    return {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}


def _add(command: click.Command, decls: tuple[str, ...], dest: str | None = None, **kwargs: Any) -> bool:
    """Add an option with the spellings ``command`` does not have yet (none if it has the long
    one: the command's own option wins); False when nothing was added."""
    taken = _spelled(command)
    if any(d in taken for d in decls if d.startswith("--")):
        return False
    free = [d for d in decls if d not in taken]
    command.params.append(click.Option([*free, dest] if dest else free, **kwargs))
    return True


def _attach_globals(command: click.Command, visible: bool) -> None:
    for spec in GLOBALS:
        _add(
            command,
            spec.decls,
            is_flag=spec.is_flag,
            type=spec.type,
            metavar=spec.metavar,
            default=None if not spec.is_flag else False,
            expose_value=False,
            callback=_callback(spec),
            help=spec.help,
            hidden=not visible,
            is_eager=False,
        )
    if not visible:
        command.epilog = f"{command.epilog}\n\n{GLOBAL_EPILOG}" if command.epilog else GLOBAL_EPILOG


def _set_group(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx_of(ctx).resource_group = value


def group_option(command: click.Command) -> None:
    """``-g/--resource-group``: the group the named set or VM is in (default: defaults.group)."""
    _add(
        command,
        ("-g", "--resource-group"),
        expose_value=False,
        callback=_set_group,
        metavar="GROUP",
        help="resource group of the set or VM [default: 'config get defaults.group']",
        shell_complete=completion.group_names,
    )


def _name_argument(command: click.Command) -> int | None:
    """The index of the command's NAME argument, when it is its only argument."""
    arguments = [i for i, p in enumerate(command.params) if isinstance(p, click.Argument)]
    if len(arguments) == 1 and command.params[arguments[0]].name == "name":
        return arguments[0]
    return None


def name_option(command: click.Command, complete: completion.Completer) -> None:
    """NAME as az spells it too, ``-n/--name``; the argument becomes optional and completes."""
    index = _name_argument(command)
    if index is None:
        return
    old = command.params[index]
    required = old.required
    command.params[index] = click.Argument(["name"], required=False, type=old.type, shell_complete=complete)
    _add(
        command, ("-n", "--name"), "az_name", metavar="NAME", help="the name (instead of NAME)", shell_complete=complete
    )
    original = command.callback
    if original is None:
        return

    @functools.wraps(original)
    def callback(*args: Any, **kwargs: Any) -> Any:
        given = kwargs.pop("az_name", None)
        if given is not None:
            if kwargs.get("name") not in (None, given):
                raise click.UsageError(f"the name is given twice, differently: {kwargs['name']!r} and -n {given!r}")
            kwargs["name"] = given
        elif kwargs.get("name") is None and required:
            raise click.UsageError("Missing argument 'NAME' (or -n/--name NAME).")
        return original(*args, **kwargs)

    command.callback = callback


def _own_group(command: click.Command) -> None:
    """A command that takes ``resource_group`` itself: its value reaches the client as well."""
    original = command.callback
    if original is None or "resource_group" not in {p.name for p in command.params}:
        return

    @functools.wraps(original)
    def callback(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("resource_group"):
            ctx_of(click.get_current_context()).resource_group = kwargs["resource_group"]
        return original(*args, **kwargs)

    command.callback = callback


def walk(root: click.Group) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command of the tree once (a command registered twice, as under ``vmss``, once)."""
    seen: set[int] = set()

    def visit(path: tuple[str, ...], command: click.Command) -> Iterator[tuple[tuple[str, ...], click.Command]]:
        if id(command) in seen:
            return
        seen.add(id(command))
        yield path, command
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from visit((*path, name), sub)

    yield from visit((), root)


# Where a NAME is not a set: VMs complete VM names; these groups take neither -n nor -g here.
_VM_GROUPS = ("vm",)
_NOT_SETS = ("image", "host", "lb", "config", "group")


def install(root: click.Group) -> None:
    """Give the whole tree under ``root`` the global arguments, and -n/-g where a set is named."""
    for path, command in walk(root):
        _attach_globals(command, visible=not path)
        if isinstance(command, click.Group) or not path or path[0] in _NOT_SETS:
            continue
        group_option(command)
        name_option(command, completion.vm_names if path[0] in _VM_GROUPS else completion.set_names)
        _own_group(command)
