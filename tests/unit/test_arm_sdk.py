"""Microsoft's own SDK (azure-mgmt-compute) against the ARM routes over a real Service with fake
hosts, served by uvicorn on loopback: the request and response shapes, the pollers, Azure's
errors as the SDK raises them. (tests/e2e/test_azure_sdk.py drives the real daemon and VMs.)"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute import models as m

from localvmss.api.app import create_app
from tests.unit.servicefake import Harness, add_instances, make_service

SUB = "00000000-0000-0000-0000-000000000000"
PLAIN = {"enforce_https": False}  # loopback without TLS here; the e2e test uses TLS


class StaticToken:
    def get_token(self, *_scopes: str, **_kw: Any) -> AccessToken:
        return AccessToken("t", int(time.time()) + 3600)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Harness, ComputeManagementClient]]:
    h = make_service(tmp_path)
    h.service.put_group("rg1", {"location": "local"})
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(h.service, token="t"), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        yield h, ComputeManagementClient(StaticToken(), SUB, base_url=url)  # type: ignore[arg-type]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def model(capacity: int) -> m.VirtualMachineScaleSet:
    return m.VirtualMachineScaleSet(
        location="local",
        sku=m.Sku(name="Standard_B1ls", tier="Standard", capacity=capacity),
        properties=m.VirtualMachineScaleSetProperties(
            upgrade_policy=m.UpgradePolicy(mode="Manual"),
            virtual_machine_profile=m.VirtualMachineScaleSetVMProfile(
                storage_profile=m.VirtualMachineScaleSetStorageProfile(image_reference=m.ImageReference(id="base"))
            ),
        ),
    )


def converge(h: Harness, name: str, count: int) -> None:
    """What the reconciler would do: the instances ready, the set Succeeded."""
    have = len(h.store.instances(name))
    add_instances(h.store, name, count - have, ready_at=1.0)
    h.store.record_set_status(name, provisioning_state="Succeeded")


def test_the_sdk_creates_reads_scales_powers_off_and_deletes(served: tuple[Harness, ComputeManagementClient]) -> None:
    h, compute = served
    sets = compute.virtual_machine_scale_sets
    poller = sets.begin_create_or_update("rg1", "web", model(2), **PLAIN)
    time.sleep(1.5)  # the poller's first look (after Retry-After: 1 s) finds it InProgress
    assert not poller.done()
    converge(h, "web", 2)
    created = poller.result(timeout=30)
    assert poller.done(), "the poller waits Retry-After (1 s) between looks, so it is done well within 30 s"
    assert created.sku.capacity == 2 and created.id.endswith(
        "/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/web"
    )
    assert [vm.instance_id for vm in compute.virtual_machine_scale_set_vms.list("rg1", "web", **PLAIN)] == ["0", "1"]

    poller = sets.begin_update("rg1", "web", m.VirtualMachineScaleSetUpdate(sku=m.Sku(capacity=3)), **PLAIN)
    assert h.store.scale_set("web").capacity == 3
    converge(h, "web", 3)
    assert poller.result(timeout=30).sku.capacity == 3

    ids = m.VirtualMachineScaleSetVMInstanceIDs(instance_ids=["0"])
    sets.begin_power_off("rg1", "web", vm_instance_i_ds=ids, **PLAIN).result(timeout=30)
    assert h.store.instance("web", 0).desired_power == "stopped"

    poller = sets.begin_delete("rg1", "web", **PLAIN)
    assert h.store.scale_set("web").deleting
    h.store.delete_scale_set_row("web")  # the reconciler's last step
    poller.result(timeout=30)
    with pytest.raises(ResourceNotFoundError):
        sets.get("rg1", "web", **PLAIN)


def test_the_sdk_raises_azures_error_codes(served: tuple[Harness, ComputeManagementClient]) -> None:
    h, compute = served
    with pytest.raises(ResourceNotFoundError) as missing:
        compute.virtual_machine_scale_sets.get("nogroup", "web", **PLAIN)
    assert missing.value.error is not None and missing.value.error.code == "ResourceGroupNotFound"
    bad = model(1001)
    with pytest.raises(HttpResponseError) as refused:
        compute.virtual_machine_scale_sets.begin_create_or_update("rg1", "web", bad, **PLAIN)
    assert refused.value.status_code == 400 and refused.value.error.code == "InvalidParameter"
    assert h.store.scale_sets() == []
