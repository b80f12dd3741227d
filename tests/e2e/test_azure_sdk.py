"""Azure's own Python SDKs against the running daemon: ``azure-mgmt-compute`` and
``azure-mgmt-monitor`` over the TCP API on loopback, with TLS (the certificate the daemon made on
first start, trusted as a file) and a static bearer token, exactly as a user points them at it.
Every step of the compute test is checked against what libvirt itself reports.

The resource group is made with a plain PUT (azure-mgmt-resource is not a dependency); the
group's body is ARM's own shape, as azure-mgmt-resource would send it."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ResourceNotFoundError, ServiceRequestError
from azure.core.polling import LROPoller
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import (
    ImageReference,
    Sku,
    UpgradePolicy,
    VirtualMachineScaleSet,
    VirtualMachineScaleSetOSProfile,
    VirtualMachineScaleSetProperties,
    VirtualMachineScaleSetStorageProfile,
    VirtualMachineScaleSetUpdate,
    VirtualMachineScaleSetVMInstanceIDs,
    VirtualMachineScaleSetVMProfile,
)
from azure.mgmt.monitor import MonitorManagementClient
from azure.mgmt.monitor.models import (
    AutoscaleProfile,
    AutoscaleSettingResource,
    MetricTrigger,
    ScaleAction,
    ScaleCapacity,
    ScaleRule,
)

from localvmss.cli.client import ApiClient
from localvmss.config import load_config
from localvmss.lab.testbed import DaemonProcess, Testbed
from tests.conftest import IMAGE_NAME
from tests.e2e.helpers import libvirt_view, wait_until

RESOURCES_API_VERSION = "2021-04-01"  # what azure-mgmt-resource's resource_groups use
LRO_TIMEOUT_S = 600


class StaticToken:
    """A TokenCredential that always hands out the daemon's token (no Entra ID here)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


@dataclass
class Arm:
    """Where the SDKs go and what they need there."""

    base_url: str
    token: str
    cert: Path
    subscription: str
    location: str
    socket_path: Path

    def client_options(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "connection_verify": str(self.cert),  # the daemon's own certificate, not a CA bundle
            "credential_scopes": ["https://management.azure.com/.default"],
            "polling_interval": 1,  # the SDK's default is 30 s; the daemon says Retry-After: 1
            "retry_total": 0,  # a server error is the test's failure, not something to retry quietly
        }

    def compute(self) -> ComputeManagementClient:
        return ComputeManagementClient(StaticToken(self.token), self.subscription, **self.client_options())

    def monitor(self) -> MonitorManagementClient:
        return MonitorManagementClient(StaticToken(self.token), self.subscription, **self.client_options())

    def http(self) -> httpx.Client:
        trust = ssl.create_default_context(cafile=str(self.cert))
        return httpx.Client(base_url=self.base_url, verify=trust, headers={"Authorization": f"Bearer {self.token}"})

    def set_id(self, group: str, name: str) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{group}"
            f"/providers/Microsoft.Compute/virtualMachineScaleSets/{name}"
        )


@pytest.fixture(scope="module")
def arm(daemon: DaemonProcess) -> Arm:
    base_url, token, cert = daemon.tcp_api()
    assert base_url.startswith("https://") and cert is not None, "the session daemon serves TCP with TLS"
    cfg = load_config(daemon.config_path, {})
    found = Arm(base_url, token, cert, cfg.subscription_id, cfg.location, daemon.socket_path)
    with found.http() as http:  # the TCP server starts beside the unix one: wait for it too

        def answers() -> bool:
            try:
                return http.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answers, 30, f"the TCP API at {base_url}", interval=0.3)
    return found


@pytest.fixture
def compute(arm: Arm) -> Iterator[ComputeManagementClient]:
    with arm.compute() as client:  # closed: an idle keep-alive connection left open is a client's habit, not ours
        yield client


@pytest.fixture
def group(arm: Arm, name: str) -> Iterator[str]:
    """A resource group of this test's own, with whatever a failed test left in it removed."""
    rg = f"rg-{name}"
    with arm.http() as http:
        resp = http.put(
            f"/subscriptions/{arm.subscription}/resourcegroups/{rg}",
            params={"api-version": RESOURCES_API_VERSION},
            json={"location": arm.location},
        )
        assert resp.status_code in (200, 201), f"PUT resource group {rg}: {resp.status_code} {resp.text}"
        assert resp.json()["name"] == rg
    yield rg
    api = ApiClient(str(arm.socket_path), timeout=60, resource_group=rg)
    try:
        for s in api.get("/scaleSets")["value"]:
            if s.get("resourceGroup", rg).lower() == rg.lower():
                api.delete(f"/scaleSets/{s['name']}")
    except Exception:
        pass
    finally:
        api.close()
    with arm.http() as http:
        http.delete(
            f"/subscriptions/{arm.subscription}/resourcegroups/{rg}", params={"api-version": RESOURCES_API_VERSION}
        )


def finished(poller: LROPoller[Any]) -> Any:
    """The poller's result once the operation has finished (Succeeded); fails if it has not."""
    result = poller.result(timeout=LRO_TIMEOUT_S)
    assert poller.done(), f"the operation did not finish within {LRO_TIMEOUT_S} s ({poller.status()})"
    assert poller.status().lower() == "succeeded", poller.status()
    return result


def _domains(testbed: Testbed, name: str) -> dict[str, str]:
    """Domain name -> libvirt power state, for the set, across the lab's hosts."""
    return {dom: state for dom, (_host, state) in libvirt_view(testbed, name)["domains"].items()}


def _power(compute: ComputeManagementClient, group: str, name: str, instance_id: str) -> str:
    view = compute.virtual_machine_scale_set_vms.get_instance_view(group, name, instance_id)
    codes = [s.code for s in view.statuses or [] if s.code and s.code.startswith("PowerState/")]
    assert len(codes) == 1, f"instance {instance_id} reports {codes}"
    return codes[0].removeprefix("PowerState/")


def _model(arm: Arm, name: str, capacity: int) -> VirtualMachineScaleSet:
    return VirtualMachineScaleSet(
        location=arm.location,
        sku=Sku(name="Standard_B1ls", tier="Standard", capacity=capacity),
        properties=VirtualMachineScaleSetProperties(
            orchestration_mode="Uniform",
            upgrade_policy=UpgradePolicy(mode="Manual"),
            virtual_machine_profile=VirtualMachineScaleSetVMProfile(
                storage_profile=VirtualMachineScaleSetStorageProfile(image_reference=ImageReference(id=IMAGE_NAME)),
                os_profile=VirtualMachineScaleSetOSProfile(computer_name_prefix=name, admin_username="azureuser"),
            ),
        ),
    )


def test_compute_sdk_creates_reads_scales_powers_off_and_deletes(
    arm: Arm, compute: ComputeManagementClient, testbed: Testbed, group: str, name: str
) -> None:
    set_id = arm.set_id(group, name)
    doms = [f"lvmss-{name}-{i}" for i in range(3)]

    created = finished(compute.virtual_machine_scale_sets.begin_create_or_update(group, name, _model(arm, name, 2)))
    assert created.id.lower() == set_id.lower() and created.name == name
    assert created.sku.capacity == 2
    assert created.properties.provisioning_state == "Succeeded"
    assert _domains(testbed, name) == {doms[0]: "running", doms[1]: "running"}, "both instances run once it succeeded"

    got = compute.virtual_machine_scale_sets.get(group, name)
    assert got.id.lower() == set_id.lower() and got.location == arm.location
    assert (got.sku.name, got.sku.capacity) == ("Standard_B1ls", 2)
    assert got.properties.orchestration_mode == "Uniform"
    assert got.properties.upgrade_policy.mode == "Manual"
    assert got.properties.virtual_machine_profile.storage_profile.image_reference.id == IMAGE_NAME
    assert [s.name for s in compute.virtual_machine_scale_sets.list(group)] == [name]

    vms = list(compute.virtual_machine_scale_set_vms.list(group, name))
    assert sorted(vm.instance_id for vm in vms) == ["0", "1"]
    assert sorted(vm.name for vm in vms) == [f"{name}_0", f"{name}_1"]
    assert sorted(vm.id.lower() for vm in vms) == [f"{set_id}/virtualMachines/{i}".lower() for i in ("0", "1")]
    assert all(vm.properties.provisioning_state == "Succeeded" for vm in vms)
    assert {i: _power(compute, group, name, i) for i in ("0", "1")} == {"0": "running", "1": "running"}

    update = VirtualMachineScaleSetUpdate(sku=Sku(capacity=3))
    scaled = finished(compute.virtual_machine_scale_sets.begin_update(group, name, update))
    assert scaled.sku.capacity == 3
    assert _domains(testbed, name) == dict.fromkeys(doms, "running"), "the third instance runs once it succeeded"
    assert sorted(vm.instance_id for vm in compute.virtual_machine_scale_set_vms.list(group, name)) == ["0", "1", "2"]

    ids = VirtualMachineScaleSetVMInstanceIDs(instance_ids=["0"])
    finished(compute.virtual_machine_scale_sets.begin_power_off(group, name, ids))
    assert _domains(testbed, name) == {doms[0]: "stopped", doms[1]: "running", doms[2]: "running"}
    assert _power(compute, group, name, "0") == "stopped"
    assert compute.virtual_machine_scale_sets.get(group, name).sku.capacity == 3, "a stopped instance still counts"

    finished(compute.virtual_machine_scale_sets.begin_delete(group, name))
    view = libvirt_view(testbed, name)
    assert view["domains"] == {} and view["volumes"] == [], "deleted in libvirt once it succeeded"
    with pytest.raises(ResourceNotFoundError):
        compute.virtual_machine_scale_sets.get(group, name)
    assert list(compute.virtual_machine_scale_sets.list(group)) == []


def test_monitor_sdk_creates_and_reads_an_autoscale_setting(
    arm: Arm, compute: ComputeManagementClient, testbed: Testbed, group: str, name: str
) -> None:
    finished(compute.virtual_machine_scale_sets.begin_create_or_update(group, name, _model(arm, name, 1)))
    set_id = arm.set_id(group, name)
    with arm.monitor() as monitor:
        _autoscale_setting_round_trip(arm, monitor, group, set_id)
    finished(compute.virtual_machine_scale_sets.begin_delete(group, name))
    assert libvirt_view(testbed, name)["domains"] == {}


def _autoscale_setting_round_trip(arm: Arm, monitor: MonitorManagementClient, group: str, set_id: str) -> None:
    rule = ScaleRule(
        metric_trigger=MetricTrigger(
            metric_name="Percentage CPU",
            metric_resource_uri=set_id,
            time_grain=timedelta(minutes=1),
            statistic="Average",
            time_window=timedelta(minutes=5),
            time_aggregation="Average",
            operator="GreaterThan",
            threshold=70,
        ),
        scale_action=ScaleAction(direction="Increase", type="ChangeCount", value="1", cooldown=timedelta(minutes=5)),
    )
    setting = AutoscaleSettingResource(
        location=arm.location,
        target_resource_uri=set_id,
        profiles=[
            AutoscaleProfile(
                name="default", capacity=ScaleCapacity(minimum="1", maximum="3", default="1"), rules=[rule]
            )
        ],
        enabled=True,
    )
    made = monitor.autoscale_settings.create_or_update(group, "cpu-autoscale", setting)
    assert made.name == "cpu-autoscale"

    got = monitor.autoscale_settings.get(group, "cpu-autoscale")
    assert got.name == "cpu-autoscale" and got.enabled is True
    assert got.target_resource_uri.lower() == set_id.lower()
    setting_id = f"/subscriptions/{arm.subscription}/resourceGroups/{group}/providers/Microsoft.Insights"
    assert got.id.lower() == f"{setting_id}/autoscalesettings/cpu-autoscale".lower()
    assert len(got.profiles) == 1
    profile = got.profiles[0]
    assert profile.name == "default"
    assert (profile.capacity.minimum, profile.capacity.maximum, profile.capacity.default) == ("1", "3", "1")
    assert len(profile.rules) == 1
    trigger, action = profile.rules[0].metric_trigger, profile.rules[0].scale_action
    assert trigger.metric_name == "Percentage CPU"
    assert trigger.metric_resource_uri.lower() == set_id.lower()
    assert (trigger.time_grain, trigger.time_window) == (timedelta(minutes=1), timedelta(minutes=5))
    assert (trigger.statistic, trigger.time_aggregation) == ("Average", "Average")
    assert (trigger.operator, trigger.threshold) == ("GreaterThan", 70)
    assert (action.direction, action.type, action.value) == ("Increase", "ChangeCount", "1")
    assert action.cooldown == timedelta(minutes=5)
    assert [s.name for s in monitor.autoscale_settings.list_by_resource_group(group)] == ["cpu-autoscale"]

    monitor.autoscale_settings.delete(group, "cpu-autoscale")
    with pytest.raises(ResourceNotFoundError):
        monitor.autoscale_settings.get(group, "cpu-autoscale")


def test_clients_trust_the_certificate_file_and_nothing_else(
    arm: Arm, daemon: DaemonProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What docs/TLS.md tells users: the SDK trusts the file through REQUESTS_CA_BUNDLE too, the
    CLI through SSL_CERT_FILE; a client that does not trust it, or speaks plain HTTP, gets nowhere."""
    options = {k: v for k, v in arm.client_options().items() if k != "connection_verify"}
    with ComputeManagementClient(StaticToken(arm.token), arm.subscription, **options) as untrusting:
        with pytest.raises(ServiceRequestError, match="CERTIFICATE_VERIFY_FAILED"):
            list(untrusting.virtual_machine_scale_sets.list_all())
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(arm.cert))
    with ComputeManagementClient(StaticToken(arm.token), arm.subscription, **options) as trusting:
        assert isinstance(list(trusting.virtual_machine_scale_sets.list_all()), list)

    cli = [str(Path(sys.executable).parent / "localvmss"), "--url", arm.base_url, "--token", arm.token, "list"]
    env = {k: v for k, v in os.environ.items() if k not in {"SSL_CERT_FILE", "SSL_CERT_DIR", "LOCALVMSS_SOCKET"}}
    refused = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=60)
    assert refused.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr, refused.stderr
    listed = subprocess.run(
        cli, capture_output=True, text=True, env={**env, "SSL_CERT_FILE": str(arm.cert)}, timeout=60
    )
    assert listed.returncode == 0, listed.stderr

    with arm.http() as http:
        assert http.get("/healthz", headers={"Authorization": ""}).status_code == 401, (
            "TLS is no substitute for the token"
        )
    plain = arm.base_url.replace("https://", "http://")
    with pytest.raises(httpx.TransportError):  # the TLS port does not answer plain HTTP
        httpx.get(f"{plain}/healthz", headers={"Authorization": f"Bearer {arm.token}"}, timeout=10)
