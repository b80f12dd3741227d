"""ARM resource ids: ``/subscriptions/{s}/resourceGroups/{g}/providers/{namespace}/{type}/{name}``.

One place builds and reads them, so the views, the ARM routes and the operation URLs agree.
"""

from __future__ import annotations

from urllib.parse import quote

COMPUTE = "Microsoft.Compute"
INSIGHTS = "Microsoft.Insights"
SCALE_SETS = "virtualMachineScaleSets"
VIRTUAL_MACHINES = "virtualMachines"
AUTOSCALE_SETTINGS = "autoscalesettings"


def _seg(text: str) -> str:
    return quote(str(text), safe="")


def group_id(subscription: str, group: str) -> str:
    return f"/subscriptions/{_seg(subscription)}/resourceGroups/{_seg(group)}"


def resource_id(subscription: str, group: str, namespace: str, rtype: str, name: str) -> str:
    return f"{group_id(subscription, group)}/providers/{namespace}/{rtype}/{_seg(name)}"


def scale_set_id(subscription: str, group: str, name: str) -> str:
    return resource_id(subscription, group, COMPUTE, SCALE_SETS, name)


def scale_set_vm_id(subscription: str, group: str, name: str, instance_id: int | str) -> str:
    return f"{scale_set_id(subscription, group, name)}/{VIRTUAL_MACHINES}/{_seg(str(instance_id))}"


def vm_id(subscription: str, group: str, name: str) -> str:
    return resource_id(subscription, group, COMPUTE, VIRTUAL_MACHINES, name)


def autoscale_id(subscription: str, group: str, name: str) -> str:
    return resource_id(subscription, group, INSIGHTS, AUTOSCALE_SETTINGS, name)


def operation_path(subscription: str, location: str, op_id: str, *, result: bool = False) -> str:
    """Where an operation's status (``Azure-AsyncOperation``) or result (``Location``) is read."""
    kind = "operationResults" if result else "operations"
    return f"/subscriptions/{_seg(subscription)}/providers/{COMPUTE}/locations/{_seg(location)}/{kind}/{_seg(op_id)}"


def last_segment(resource: str, rtype: str) -> str | None:
    """NAME of ``.../{rtype}/NAME`` (case-insensitive type, as ARM compares them), else None."""
    head, _, name = resource.rstrip("/").rpartition("/")
    if name and head.lower().endswith("/" + rtype.lower()):
        return name
    return None
