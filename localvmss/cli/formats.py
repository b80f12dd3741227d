"""The output formats of ``-o`` and the ``--query`` before them, as az (knack) has them.

Pure: data in, text out. ``json`` (indent 2), ``jsonc``/``yamlc`` (coloured; plain when the
caller says stdout is no terminal), ``yaml``, ``tsv`` (values only: one row per list item, a
dict's values in key order - sorted unless a query chose the order -, a nested list as its length,
a nested object as an empty cell, booleans lower-case as az writes them), ``none`` (nothing).
``table`` is the caller's: a command's own columns, or ``auto_rows`` (az's automatic table: the
scalar fields of each item). Used by ``localvmss.cli.output``.
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from typing import Any

import jmespath
import yaml
from jmespath.exceptions import JMESPathError
from rich.console import Console
from rich.syntax import Syntax

from localvmss.errors import InvalidSpec

FORMATS = ("json", "jsonc", "yaml", "yamlc", "tsv", "table", "none")
_SKIP_KEYS = ("id", "type", "etag")  # az's automatic table leaves these out


def compile_query(text: str) -> Any:
    """A JMESPath expression, compiled; a syntax error is one line."""
    try:
        return jmespath.compile(text)
    except JMESPathError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidSpec(f"--query {text!r} is not a JMESPath expression: {first}") from None


def apply_query(data: Any, text: str) -> Any:
    """``data`` through the query; the result's dicts keep the order the query gave them."""
    try:
        return compile_query(text).search(data, jmespath.Options(dict_cls=OrderedDict))
    except JMESPathError as exc:
        raise InvalidSpec(f"--query {text!r} failed: {str(exc).splitlines()[0]}") from None


def _plain(data: Any) -> Any:
    """OrderedDicts (a query's) as plain dicts, so YAML writes them as mappings."""
    if isinstance(data, dict):
        return {k: _plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_plain(v) for v in data]
    return data


def _coloured(text: str, lexer: str) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, color_system="standard", width=10_000)
    console.print(Syntax(text, lexer, theme="ansi_dark", background_color="default", word_wrap=False), end="")
    return buffer.getvalue()


def _tsv_cell(value: Any) -> str:
    if isinstance(value, list):
        return str(len(value))
    if isinstance(value, dict):
        return ""
    return value if isinstance(value, str) else str(value)


def _tsv_row(item: Any) -> str:
    if isinstance(item, OrderedDict):
        return "\t".join(_tsv_cell(v) for v in item.values())
    if isinstance(item, dict):
        return "\t".join(_tsv_cell(v) for _, v in sorted(item.items()))
    if isinstance(item, list):
        return "\t".join(_tsv_cell(v) for v in item)
    if isinstance(item, bool):
        return str(item).lower()
    return _tsv_cell(item)


def tsv(data: Any) -> str:
    rows = data if isinstance(data, list) else [data]
    return "".join(_tsv_row(item) + "\n" for item in rows)


def render(data: Any, fmt: str, color: bool = False) -> str:
    """``data`` in one of the non-table formats; "" for ``none``. Ends with a newline."""
    if fmt == "none":
        return ""
    if fmt in ("json", "jsonc"):
        text = json.dumps(data, indent=2) + "\n"
        return _coloured(text, "json") if fmt == "jsonc" and color else text
    if fmt in ("yaml", "yamlc"):
        text = yaml.safe_dump(_plain(data), default_flow_style=False, allow_unicode=True, sort_keys=False)
        return _coloured(text, "yaml") if fmt == "yamlc" and color else text
    if fmt == "tsv":
        return tsv(data)
    raise InvalidSpec(f"output format {fmt!r} is not one of {', '.join(FORMATS)}")


def auto_rows(data: Any, sort_keys: bool) -> tuple[list[str], list[list[str]]]:
    """az's automatic table: (headers, rows) of each item's scalar fields, ``id``/``type``/``etag``
    left out, headers capitalised; a scalar result is one ``Result`` cell."""
    items = data if isinstance(data, list) else [data]
    headers: list[str] = []
    rows: list[dict[str, str]] = []
    for item in items:
        entry: dict[str, str] = {}
        if isinstance(item, dict):
            keys = sorted(item) if sort_keys else list(item)
            for key in keys:
                value = item[key]
                if key in _SKIP_KEYS or value is None or isinstance(value, list | dict):
                    continue
                entry[key[:1].upper() + key[1:]] = _scalar(value)
        elif isinstance(item, list):
            entry = {f"Column{n + 1}": _scalar(v) for n, v in enumerate(item)}
        else:
            entry = {"Result": _scalar(item)}
        headers.extend(h for h in entry if h not in headers)
        rows.append(entry)
    return headers, [[row.get(h, "") for h in headers] for row in rows]


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, list | dict):
        return json.dumps(value)
    return "" if value is None else str(value)
