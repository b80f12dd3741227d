"""Waiting for a long operation, with progress on stderr: until a set has converged (or is gone),
or until instances show a power state. Commands skip these with ``--no-wait``.

Raises ``LocalVMSSError`` when the set failed or the time ran out (the operation goes on in the
daemon either way).
"""

from __future__ import annotations

import time
from typing import Any

from localvmss.cli.client import api_path
from localvmss.cli.context import Ctx
from localvmss.cli.output import err_console, status_code
from localvmss.errors import LocalVMSSError


def wait_for_set(c: Ctx, name: str, *, gone: bool = False, timeout_s: float = 1800.0) -> None:
    """Poll until the set has converged (or is gone), showing progress on stderr."""
    deadline = time.monotonic() + timeout_s
    started = time.monotonic()
    with err_console.status(f"waiting for {name}") as status:
        while time.monotonic() < deadline:
            try:
                s = c.client.get(api_path("scaleSets", name))
            except LocalVMSSError as exc:
                if gone and exc.code == "NotFound":
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
