"""When a long-running operation is done (``localvmss.operations``), as a table of cases."""

from __future__ import annotations

import time
from typing import Any

import pytest

from localvmss.model import OrchestrationMode, PowerState, ProvisioningState
from localvmss.operations import OpKind, OpStatus, instance_settled, status
from localvmss.spec import ScaleSetSpec
from localvmss.store import ScaleSetRow
from tests.unit.servicefake import instance_row

RUNNING, STOPPED, GONE = PowerState.RUNNING, PowerState.STOPPED, PowerState.DEALLOCATED


def set_row(capacity: int = 2, state: str = "Succeeded", deleting: bool = False, message: str = "") -> ScaleSetRow:
    now = time.time()
    return ScaleSetRow(
        "web",
        OrchestrationMode.UNIFORM,
        {},
        capacity,
        1,
        capacity,
        ProvisioningState(state),
        message,
        deleting,
        now,
        now,
        ScaleSetSpec(mode=OrchestrationMode.UNIFORM, image="base"),
    )


def ready(iid: int, **values: Any) -> Any:
    return instance_row("web", iid, ready_at=1.0, **values)


@pytest.mark.parametrize(
    "case, kind, target, row, instances, observed, want",
    [
        ("converged", OpKind.SET_PUT, {}, set_row(2), [ready(0), ready(1)], {}, OpStatus.SUCCEEDED),
        ("one short", OpKind.SET_PUT, {}, set_row(2), [ready(0)], {}, OpStatus.IN_PROGRESS),
        (
            "one booting",
            OpKind.SET_PUT,
            {},
            set_row(2),
            [ready(0), ready(1, provisioning_state="Creating")],
            {},
            OpStatus.IN_PROGRESS,
        ),
        (
            "set not yet recorded",
            OpKind.SET_PUT,
            {},
            set_row(2, "Updating"),
            [ready(0), ready(1)],
            {},
            OpStatus.IN_PROGRESS,
        ),
        ("set failed", OpKind.SET_PUT, {}, set_row(2, "Failed", message="no host"), [], {}, OpStatus.FAILED),
        ("reimage pending", OpKind.SET_PUT, {}, set_row(1), [ready(0, reimage_generation=1)], {}, OpStatus.IN_PROGRESS),
        ("set gone under a put", OpKind.SET_PUT, {}, None, [], {}, OpStatus.FAILED),
        ("delete done", OpKind.SET_DELETE, {}, None, [], {}, OpStatus.SUCCEEDED),
        ("delete under way", OpKind.SET_DELETE, {}, set_row(0, deleting=True), [], {}, OpStatus.IN_PROGRESS),
        (
            "stop asked, still running",
            OpKind.INSTANCES,
            {"instanceIds": ["0"]},
            set_row(1),
            [ready(0, desired_power="stopped")],
            {0: RUNNING},
            OpStatus.IN_PROGRESS,
        ),
        (
            "stopped",
            OpKind.INSTANCES,
            {"instanceIds": ["0"]},
            set_row(1),
            [ready(0, desired_power="stopped")],
            {0: STOPPED},
            OpStatus.SUCCEEDED,
        ),
        (
            "deallocate, domain still there",
            OpKind.INSTANCES,
            {"instanceIds": ["0"]},
            set_row(1),
            [ready(0, desired_power="deallocated")],
            {0: STOPPED},
            OpStatus.IN_PROGRESS,
        ),
        (
            "deallocated",
            OpKind.INSTANCES,
            {"instanceIds": ["0"]},
            set_row(1),
            [ready(0, desired_power="deallocated")],
            {0: GONE},
            OpStatus.SUCCEEDED,
        ),
        (
            "start: running but not yet healthy",
            OpKind.INSTANCES,
            {"instanceIds": ["0"]},
            set_row(1),
            [instance_row("web", 0, ready_at=None)],
            {0: RUNNING},
            OpStatus.IN_PROGRESS,
        ),
        (
            "restart pending",
            OpKind.INSTANCES,
            {"instanceIds": ["0"]},
            set_row(1),
            [ready(0, restart_generation=1)],
            {0: RUNNING},
            OpStatus.IN_PROGRESS,
        ),
        (
            "an instance failed",
            OpKind.INSTANCES,
            {"instanceIds": ["0"]},
            set_row(1),
            [ready(0, provisioning_state="Failed", message="boot timed out")],
            {0: RUNNING},
            OpStatus.FAILED,
        ),
        (
            "instances deleted",
            OpKind.INSTANCES_DELETE,
            {"instanceIds": ["1"]},
            set_row(1),
            [ready(0)],
            {},
            OpStatus.SUCCEEDED,
        ),
        (
            "instance still there",
            OpKind.INSTANCES_DELETE,
            {"instanceIds": ["0"]},
            set_row(1),
            [ready(0, provisioning_state="Deleting")],
            {},
            OpStatus.IN_PROGRESS,
        ),
        (
            "vm ready",
            OpKind.VM_PUT,
            {"vmName": "vm1"},
            set_row(0),
            [ready(0, vm_name="vm1")],
            {0: RUNNING},
            OpStatus.SUCCEEDED,
        ),
        ("vm gone before ready", OpKind.VM_PUT, {"vmName": "vm1"}, set_row(0), [], {}, OpStatus.FAILED),
        ("vm deleted", OpKind.VM_DELETE, {"vmName": "vm1"}, set_row(0), [], {}, OpStatus.SUCCEEDED),
    ],
    ids=lambda v: v if isinstance(v, str) and " " in v else None,
)
def test_operation_status(
    case: str, kind: OpKind, target: dict[str, Any], row: Any, instances: list[Any], observed: Any, want: OpStatus
) -> None:
    outcome = status(kind, target, row, instances, observed)
    assert outcome.status is want, case
    assert (outcome.error is not None) == (want is OpStatus.FAILED)
    if outcome.error is not None:
        assert {"code", "message", "details"} <= set(outcome.error)


def test_a_stopped_instance_counts_as_stopped_once_its_domain_is_gone_too() -> None:
    assert instance_settled(ready(0, desired_power="stopped"), GONE)
    assert not instance_settled(ready(0, desired_power="running"), GONE)
