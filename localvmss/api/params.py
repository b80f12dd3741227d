"""Request parameters both route sets read the same way (the short paths and ARM's)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import Request

from localvmss.errors import InvalidSpec

# Fields of Azure's instance-ids bodies that mean nothing here (VirtualMachineScaleSetVMInstanceIDs
# of a deallocate or power-off), taken and ignored on the ARM paths.
ARM_INSTANCE_BODY_EXTRAS = ("tempDisk", "forceDeallocate")


def flag(name: str, value: str | None) -> bool:
    """Azure's boolean query parameters: true or false (any case), nothing else."""
    if value is None or value.lower() == "false":
        return False
    if value.lower() == "true":
        return True
    raise InvalidSpec(f"{name} must be true or false, not {value!r}")


def instance_ids(body: Any, also: Iterable[str] = ()) -> list[str] | None:
    """``{"instanceIds": [...]}`` as a list of strings; None for no body or no ids (every
    instance). ``also``: other fields the body may carry."""
    if body is None:
        return None
    if not isinstance(body, dict) or set(body) - {"instanceIds", *also}:
        raise InvalidSpec('the body takes {"instanceIds": [...]}')
    ids = body.get("instanceIds")
    if ids is None:
        return None
    if not isinstance(ids, list) or not all(isinstance(i, str | int) and not isinstance(i, bool) for i in ids):
        raise InvalidSpec("instanceIds must be a list of instance ids")
    return [str(i) for i in ids]


def actor(request: Request, default: str = "api") -> str:
    """Who asks, for the upgrade history: the CLI sends its user's login name. Advisory, as
    anyone who can reach the API (its socket's group, or the token) may name themselves."""
    return (request.headers.get("x-localvmss-user") or default)[:64]
