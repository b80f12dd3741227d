"""az's argument forms as click options: space-separated values (``--zones 1 2 3``,
``--instance-ids 0 1 2`` or ``'*'``), three-state booleans (``--zone-balance true``, bare
``--protect-from-scale-in``; true/false/yes/no/on/off/1/0), ``--custom-data`` as a file or
the text itself, and the generic update's ``--set PATH=VALUE``.

Used by the command modules; knows nothing of the API.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from localvmss.cli import completion
from localvmss.errors import InvalidSpec


class ValuesOption(click.Option):
    """An option taking every value up to the next option, like az's ``--zones 1 2 3``."""

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        for name in self.opts:
            opt = parser._long_opt.get(name) or parser._short_opt.get(name)
            if opt is None:
                continue
            original = opt.process

            def process(value: str, state: Any, original: Any = original) -> None:
                values = [value]
                while state.rargs and not state.rargs[0].startswith("-"):
                    values.append(state.rargs.pop(0))
                original(tuple(values), state)

            opt.process = process

    def type_cast_value(self, ctx: click.Context, value: Any) -> tuple[str, ...]:
        out: list[str] = []

        def flatten(item: Any) -> None:
            if isinstance(item, tuple | list):
                for inner in item:
                    flatten(inner)
            elif item is not None:
                out.append(str(item))

        flatten(value)
        return tuple(out)


def values_option(*decls: str, **kwargs: Any) -> Callable[[Any], Any]:
    return click.option(*decls, cls=ValuesOption, multiple=True, **kwargs)


def instance_ids_option(
    required: bool = False, help: str = "instance ids, space-separated, or '*' for all", singular: bool = True
) -> Any:
    """``--instance-ids 0 1 2``, ``--instance-ids 0 --instance-ids 1`` or ``--instance-ids '*'``
    (and, with ``singular``, az's older ``--instance-id 1``); completes the named set's ids."""
    decls = ("--instance-ids", "--instance-id", "instance_ids") if singular else ("--instance-ids", "instance_ids")
    return values_option(*decls, required=required, help=help, shell_complete=completion.instance_ids)


def instance_ids(given: tuple[str, ...]) -> list[str]:
    """The ids as the API takes them: ``["*"]`` alone for every instance; commas split too."""
    ids = [part for value in given for part in value.replace(",", " ").split()]
    if "*" in ids and len(ids) > 1:
        raise InvalidSpec("--instance-ids '*' stands for every instance and goes alone")
    return ids


def instance_id_option(required: bool = True, help: str = "the instance id") -> Any:
    return click.option("--instance-id", required=required, help=help, shell_complete=completion.instance_ids)


def az_bool(*decls: str, help: str = "", default: bool | None = None) -> Callable[[Any], Any]:
    """A three-state boolean: absent (``default``), bare (true), or with true/false/yes/no."""
    return click.option(
        *decls,
        type=click.BOOL,
        is_flag=False,
        flag_value=True,
        default=default,
        metavar="[true|false]",
        help=help,
    )


def custom_data(value: str | None) -> str | None:
    """``--custom-data`` as az takes it: a readable file's bytes, else the text itself; base64."""
    if value is None:
        return None
    path = Path(value).expanduser()
    try:
        data = path.read_bytes() if path.is_file() else value.encode()
    except OSError as exc:
        raise InvalidSpec(f"--custom-data {value!r}: cannot read it ({exc.strerror})") from None
    return base64.b64encode(data).decode()


def parse_set(words: tuple[str, ...]) -> list[tuple[list[str], Any]]:
    """az's generic ``--set PATH=VALUE ...``: each path split at dots, each value as az reads it
    (JSON when it parses, true/false in any case as booleans, else the text)."""
    out: list[tuple[list[str], Any]] = []
    for word in words:
        path, sep, text = word.partition("=")
        keys = path.strip().split(".")
        if not sep or not all(keys):
            raise InvalidSpec(f"--set {word!r}: give PATH=VALUE, e.g. virtualMachineProfile.osProfile.customData=...")
        out.append((keys, _set_value(text)))
    return out


def _set_value(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return json.loads(text)
    except ValueError:
        return text


def apply_set(target: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set ``target[k1][k2]... = value``, making the dicts on the way; refuses to go through a
    value that is not an object."""
    node = target
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise InvalidSpec(f"--set {'.'.join(keys)}: {key!r} is not an object")
        node = child
    node[keys[-1]] = value
