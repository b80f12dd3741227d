"""When an accepted long-running request is done: the rules behind ARM's operation status.

ARM answers a PUT, PATCH, DELETE or POST action at once and points the caller at an
operation (``Azure-AsyncOperation``) to poll. Here an operation is a record of what was asked
(its kind and target); its status is worked out from the state the reconciler converges, not
from a worker's progress report, so it is right across a daemon restart: the same state gives
the same answer. Once it ends, the caller records the outcome and later polls read it back.

Pure: the caller passes the set (or None once it is gone) and its instances with their
observed power states.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from localvmss import lifecycle
from localvmss.model import OrchestrationMode, PowerState, ProvisioningState
from localvmss.store import InstanceRow, ScaleSetRow


class OpKind(StrEnum):
    SET_PUT = "scaleSet.put"  # create, update or scale: done when the set has converged
    SET_DELETE = "scaleSet.delete"  # done when the set is gone
    INSTANCES = "instances.action"  # start, powerOff, restart, ...: done when each target settled
    INSTANCES_DELETE = "instances.delete"  # done when each target is gone
    VM_PUT = "vm.put"  # a Flexible VM: done when it is ready
    VM_DELETE = "vm.delete"  # done when the VM is gone


class OpStatus(StrEnum):
    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"

    @property
    def ended(self) -> bool:
        return self is not OpStatus.IN_PROGRESS


@dataclass(frozen=True)
class Outcome:
    status: OpStatus
    error: dict[str, Any] | None = None


IN_PROGRESS = Outcome(OpStatus.IN_PROGRESS)
SUCCEEDED = Outcome(OpStatus.SUCCEEDED)


def _failed(code: str, message: str) -> Outcome:
    return Outcome(OpStatus.FAILED, {"code": code, "message": message, "details": []})


def set_converged(row: ScaleSetRow, instances: list[InstanceRow]) -> bool:
    """Every member is there and ready, nothing pending: the set says Succeeded with all
    instances ready (a Uniform set: exactly its capacity)."""
    members = [i for i in instances if not lifecycle.in_pool(i)]
    if row.deleting or any(i.provisioning_state != ProvisioningState.SUCCEEDED.value for i in members):
        return False
    if any(lifecycle.changing(i) for i in members):
        return False
    if row.mode == OrchestrationMode.UNIFORM.value and len(members) != row.capacity:
        return False
    return row.provisioning_state == ProvisioningState.SUCCEEDED.value


def instance_settled(inst: InstanceRow, observed: PowerState) -> bool:
    """Nothing pending on it and its guest in the power state asked for (deallocated: no
    domain; stopped: shut off, or gone)."""
    if lifecycle.busy(inst) or inst.provisioning_state != ProvisioningState.SUCCEEDED.value:
        return False
    want = PowerState(inst.desired_power)
    if want is PowerState.RUNNING:
        return observed is PowerState.RUNNING and inst.ready_at is not None
    if want is PowerState.STOPPED:
        return observed in (PowerState.STOPPED, PowerState.DEALLOCATED)
    return observed is PowerState.DEALLOCATED


def status(
    kind: OpKind,
    target: Mapping[str, Any],
    row: ScaleSetRow | None,
    instances: list[InstanceRow],
    observed: Mapping[int, PowerState],
) -> Outcome:
    """The operation's status now. ``target``: ``instanceIds`` for instance actions and deletes,
    ``vmName`` for a Flexible VM."""
    if kind is OpKind.SET_DELETE:
        return SUCCEEDED if row is None else IN_PROGRESS
    if row is None:
        return _failed("ResourceNotFound", "the scale set was deleted before the operation completed")
    if kind is OpKind.SET_PUT:
        if row.provisioning_state == ProvisioningState.FAILED.value:
            return _failed("ProvisioningFailed", row.message or f"scale set {row.name!r} failed")
        return SUCCEEDED if set_converged(row, instances) else IN_PROGRESS
    by_id = {i.instance_id: i for i in instances}
    if kind in (OpKind.VM_PUT, OpKind.VM_DELETE):
        vm = next((i for i in instances if i.vm_name == target.get("vmName")), None)
        if kind is OpKind.VM_DELETE:
            return SUCCEEDED if vm is None else IN_PROGRESS
        if vm is None:
            return _failed("ResourceNotFound", f"VM {target.get('vmName')!r} was deleted before it was ready")
        return _instances_outcome([vm], observed)
    wanted = [int(i) for i in target.get("instanceIds", [])]
    if kind is OpKind.INSTANCES_DELETE:
        return SUCCEEDED if not any(i in by_id for i in wanted) else IN_PROGRESS
    return _instances_outcome([by_id[i] for i in wanted if i in by_id], observed)


def _instances_outcome(targets: list[InstanceRow], observed: Mapping[int, PowerState]) -> Outcome:
    failed = [i for i in targets if i.provisioning_state == ProvisioningState.FAILED.value]
    if failed:
        text = "; ".join(f"instance {i.instance_id}: {i.message or 'failed'}" for i in failed)
        return _failed("VMOperationFailed", text)
    if all(instance_settled(i, observed.get(i.instance_id, PowerState.UNKNOWN)) for i in targets):
        return SUCCEEDED
    return IN_PROGRESS
