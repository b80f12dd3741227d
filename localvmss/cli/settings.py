"""The CLI's own settings file, as ``az config`` keeps one: ``defaults.group`` (the resource group
used when a command gets no ``-g``) and ``core.output`` (the default ``-o``).

An INI file at ``$XDG_CONFIG_HOME/localvmss/config`` (else ``~/.config/localvmss/config``), or
the file ``LOCALVMSS_CONFIG_FILE`` names. The environment wins over the file, as in az:
``LOCALVMSS_DEFAULTS_GROUP``, then ``AZURE_DEFAULTS_GROUP``; ``LOCALVMSS_CORE_OUTPUT``, then
``AZURE_CORE_OUTPUT``. Written atomically (a temporary file renamed into place). Each problem is
one ``InvalidSpec`` line.
"""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Mapping
from pathlib import Path

from localvmss.errors import InvalidSpec

_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\.[A-Za-z][A-Za-z0-9_-]*")
# What the environment may say instead of the file, first found wins (az: AZURE_<SECTION>_<NAME>).
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "defaults.group": ("LOCALVMSS_DEFAULTS_GROUP", "AZURE_DEFAULTS_GROUP"),
    "core.output": ("LOCALVMSS_CORE_OUTPUT", "AZURE_CORE_OUTPUT"),
}


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("LOCALVMSS_CONFIG_FILE"):
        return Path(env["LOCALVMSS_CONFIG_FILE"])
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "localvmss" / "config"


def split_key(key: str) -> tuple[str, str]:
    """``defaults.group`` -> (``defaults``, ``group``); anything else is refused."""
    if not _KEY.fullmatch(key.strip()):
        raise InvalidSpec(f"config key {key!r} must be SECTION.NAME, e.g. defaults.group")
    section, name = key.strip().split(".", 1)
    return section.lower(), name.lower()


def parse_assignment(text: str) -> tuple[str, str]:
    """``defaults.group=web`` -> (``defaults.group``, ``web``), as ``az config set`` takes it."""
    key, sep, value = text.partition("=")
    if not sep:
        raise InvalidSpec(f"{text!r} is not KEY=VALUE; e.g. defaults.group=web")
    section, name = split_key(key)
    return f"{section}.{name}", value.strip()


def _read(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error as exc:
        raise InvalidSpec(f"{path} is not an INI file ({exc.message.splitlines()[0]})") from None
    return parser


def file_values(path: Path) -> dict[str, str]:
    """Every ``section.name = value`` in the file ({} when it does not exist)."""
    parser = _read(path)
    return {f"{s}.{k}": v for s in parser.sections() for k, v in parser.items(s)}


def lookup(key: str, env: Mapping[str, str] | None = None, path: Path | None = None) -> str | None:
    """The setting's value: the environment first, then the file; None when unset or empty."""
    env = os.environ if env is None else env
    section, name = split_key(key)
    for var in ENV_OVERRIDES.get(f"{section}.{name}", ()):
        if env.get(var):
            return env[var]
    value = file_values(path or config_path(env)).get(f"{section}.{name}")
    return value or None


def default_group(env: Mapping[str, str] | None = None) -> str | None:
    return lookup("defaults.group", env)


def store(assignments: list[tuple[str, str]], path: Path, unset: bool = False) -> None:
    """Write (or, ``unset``, remove) the keys, keeping the others; atomic."""
    parser = _read(path)
    for key, value in assignments:
        section, name = split_key(key)
        if unset:
            if parser.has_section(section):
                parser.remove_option(section, name)
            continue
        if not parser.has_section(section):
            parser.add_section(section)
        parser.set(section, name, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        parser.write(handle)
    os.replace(tmp, path)
