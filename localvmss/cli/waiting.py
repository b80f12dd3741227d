"""Waiting for a long operation, with progress on stderr: until a set has converged (or is gone),
until instances show a power state, until a VM is gone, or (``vmss wait``) until a condition on
a resource holds. Commands skip these with ``--no-wait``.

Raises ``LocalVMSSError`` when the set failed or the time ran out (the operation goes on in the
daemon either way).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from localvmss.cli.client import api_path
from localvmss.cli.context import Ctx
from localvmss.cli.formats import apply_query
from localvmss.cli.output import err_console, status_code
from localvmss.errors import LocalVMSSError, NotFound

# vmss wait's conditions, as az's generic wait has them: what the resource (or its absence) must be.
WAIT_CONDITIONS = ("created", "updated", "deleted", "exists")


def wait_for_set(c: Ctx, name: str, *, gone: bool = False, timeout_s: float = 1800.0) -> None:
    """Poll until the set has converged (or is gone), showing progress on stderr."""
    deadline = time.monotonic() + timeout_s
    started = time.monotonic()
    with err_console.status(f"waiting for {name}") as status:
        while time.monotonic() < deadline:
            try:
                s = c.client.get(api_path("scaleSets", name))
            except NotFound:  # ResourceNotFound, or NotFound from daemons before it
                if gone:
                    err_console.print(f"{name}: deleted in {time.monotonic() - started:.0f} s")
                    return
                raise
            props = s["properties"]
            state = props["provisioningState"]
            want = s["sku"]["capacity"] if props["orchestrationMode"] == "Uniform" else props["instanceCount"]
            status.update(
                f"{name}: {state}, {props.get('readyCount', 0)}/{want} instances ready, "
                f"{time.monotonic() - started:.0f} s {props.get('message') or ''}"
            )
            if not gone and state == "Succeeded" and props.get("readyCount", 0) == want:
                err_console.print(f"{name}: {want} instance(s) ready in {time.monotonic() - started:.0f} s")
                return
            if not gone and state == "Failed":
                bad = [
                    f"{i['instanceId']}: {i['properties']['instanceView']['statuses'][0].get('message')}"
                    for i in c.client.get(api_path("scaleSets", name, "virtualMachines"))["value"]
                    if i["properties"]["provisioningState"] == "Failed"
                ]
                raise LocalVMSSError(f"scale set {name} failed: {'; '.join(bad) or props.get('message')}")
            time.sleep(1.0)
    raise LocalVMSSError(f"scale set {name} did not converge within {timeout_s:.0f} s (still running; check 'show')")


def wait_for_power(c: Ctx, views: dict[str, str], want: str, timeout_s: float = 1800.0) -> None:
    """Poll instance views (label -> API path) until each shows PowerState/``want``; a graceful
    power-off lasts until the guest has shut down (at most the daemon's shutdown_timeout_s)."""
    deadline = time.monotonic() + timeout_s
    started = time.monotonic()
    with err_console.status(f"waiting for {want}") as status:
        while time.monotonic() < deadline:
            states = {label: status_code(view_of(c.client.get(path)), "PowerState/") for label, path in views.items()}
            done = sum(1 for s in states.values() if s == want)
            if done == len(states):
                err_console.print(f"{done} instance(s) {want} in {time.monotonic() - started:.0f} s")
                return
            pending = ", ".join(f"{label} {s}" for label, s in states.items() if s != want)
            status.update(f"{done}/{len(states)} {want}, {time.monotonic() - started:.0f} s: {pending}")
            time.sleep(1.0)
    raise LocalVMSSError(f"instances did not reach {want} within {timeout_s:.0f} s (still going; check 'show')")


def view_of(body: dict[str, Any]) -> dict[str, Any]:
    """An instanceView body, or the instanceView inside a VM resource."""
    return dict((body.get("properties") or {}).get("instanceView") or body)


def condition_met(resource: dict[str, Any] | None, condition: str, custom: str | None = None) -> bool:
    """Whether ``resource`` (None: it does not exist) satisfies a ``vmss wait`` condition: az's
    ``--created``/``--updated`` (provisioningState Succeeded), ``--deleted``, ``--exists``, or a
    JMESPath ``--custom`` query that must come out truthy."""
    if condition == "deleted":
        return resource is None
    if resource is None:
        return False
    if condition == "exists":
        return True
    if condition == "custom":
        return bool(apply_query(resource, custom or ""))
    state = str((resource.get("properties") or {}).get("provisioningState", ""))
    return state.lower() == "succeeded"


def wait_until(
    c: Ctx,
    label: str,
    path: str,
    condition: str,
    custom: str | None = None,
    interval_s: float = 30.0,
    timeout_s: float = 3600.0,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Poll ``path`` every ``interval_s`` until ``condition`` holds; raises after ``timeout_s``."""
    started = time.monotonic()
    what = f"--custom {custom!r}" if condition == "custom" else f"--{condition}"
    with err_console.status(f"waiting for {label} ({what})") as status:
        while True:
            try:
                resource: dict[str, Any] | None = c.client.get(path)
            except NotFound:
                resource = None
            if condition_met(resource, condition, custom):
                err_console.print(f"{label}: {what} after {time.monotonic() - started:.0f} s")
                return
            if time.monotonic() - started >= timeout_s:
                raise LocalVMSSError(f"{label}: {what} did not hold within {timeout_s:.0f} s")
            state = "absent" if resource is None else (resource.get("properties") or {}).get("provisioningState")
            status.update(f"{label}: {state}, {time.monotonic() - started:.0f} s")
            sleep(interval_s)


def wait_for_vm_gone(c: Ctx, name: str, timeout_s: float = 1800.0) -> None:
    """Poll until the VM no longer exists (its set can be deleted then), progress on stderr."""
    started = time.monotonic()
    path = api_path("virtualMachines", name)
    with err_console.status(f"waiting for VM {name} to be deleted") as status:
        while time.monotonic() - started < timeout_s:
            try:
                vm = c.client.get(path)
            except NotFound:
                err_console.print(f"{name}: deleted in {time.monotonic() - started:.0f} s")
                return
            state = (vm.get("properties") or {}).get("provisioningState")
            status.update(f"{name}: {state}, {time.monotonic() - started:.0f} s")
            time.sleep(1.0)
    raise LocalVMSSError(f"VM {name} was not deleted within {timeout_s:.0f} s (still going; check 'vm show')")
