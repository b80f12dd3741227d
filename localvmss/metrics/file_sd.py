"""Prometheus file-based service discovery: the list of guest metrics endpoints.

A target's ``__metrics_path__`` label (and ``__scheme__``, ``__param_<name>``) is honoured by
Prometheus for file_sd targets without any relabelling, so each guest can be scraped at the
path its image serves (the base image's /cgi-bin/metrics, node_exporter's /metrics).

Prometheus watches the file (inotify) and re-reads it on every change, so scale-out and scale-in
show up in scraping without a reload. The file is replaced atomically (write a temporary file in
the same directory, fsync, rename) so Prometheus never reads half a file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from localvmss.errors import InvalidSpec

# Prometheus label names; names starting with "__" are reserved for Prometheus itself, of which
# a target may set only those that say how it is scraped.
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_SCRAPE_LABELS = frozenset({"__metrics_path__", "__scheme__"})
_PARAM_LABEL = re.compile(r"__param_[a-zA-Z_][a-zA-Z0-9_]*")
_SUFFIXES = (".json", ".yml", ".yaml")


def _check(targets: list[tuple[str, dict[str, str]]]) -> None:
    for target, labels in targets:
        if not target or any(ch.isspace() for ch in target) or "/" in target:
            raise InvalidSpec(f"file_sd target {target!r} is not host:port")
        for name, value in labels.items():
            reserved = name in _SCRAPE_LABELS or bool(_PARAM_LABEL.fullmatch(name))
            if not _LABEL_NAME.fullmatch(name) or (name.startswith("__") and not reserved):
                raise InvalidSpec(f"file_sd label name {name!r} is not a valid Prometheus label name")
            if not isinstance(value, str):
                raise InvalidSpec(f"file_sd label {name!r} must be a string, got {type(value).__name__}")
        path = labels.get("__metrics_path__")
        if path is not None and (not path.startswith("/") or any(ch.isspace() for ch in path)):
            raise InvalidSpec(f"file_sd target {target!r}: __metrics_path__ {path!r} is not a URL path like /metrics")
        if labels.get("__scheme__", "http") not in ("http", "https"):
            raise InvalidSpec(f"file_sd target {target!r}: __scheme__ must be http or https")


def render_file_sd(targets: list[tuple[str, dict[str, str]]]) -> str:
    """The JSON document: one target group per target (each guest has its own labels)."""
    _check(targets)
    groups = [{"targets": [target], "labels": dict(sorted(labels.items()))} for target, labels in targets]
    return json.dumps(groups, indent=2) + "\n"


def write_file_sd(path: str | os.PathLike[str], targets: list[tuple[str, dict[str, str]]]) -> None:
    """Atomically replace ``path`` with the target groups for ``targets`` ((host:port, labels)).

    The temporary file starts with "." and ends in ".tmp" so it never matches a ``*.json`` glob
    in a file_sd_configs entry.
    """
    destination = Path(path)
    if destination.suffix not in _SUFFIXES:
        raise InvalidSpec(f"file_sd path {str(destination)!r} must end in .json, .yml or .yaml")
    text = render_file_sd(targets)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, destination)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise


def read_file_sd(path: str | os.PathLike[str]) -> list[tuple[str, dict[str, str]]]:
    """Inverse of ``write_file_sd`` (missing file -> no targets), for diffing before rewriting."""
    try:
        groups = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    result: list[tuple[str, dict[str, str]]] = []
    for group in groups:
        labels = {str(k): str(v) for k, v in group.get("labels", {}).items()}
        for target in group.get("targets", []):
            result.append((str(target), dict(labels)))
    return result
