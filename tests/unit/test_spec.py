"""Azure-shaped scale-set bodies: what is accepted, what is refused (one line), and the view."""

from __future__ import annotations

from typing import Any

import pytest

from localvmss.errors import InvalidSpec, LocalVMSSError
from localvmss.model import OrchestrationMode
from localvmss.spec import parse_scale_set_body, spec_to_azure

IMAGES = {"base"}
LB = {"loadBalancingRules": [{"protocol": "Tcp", "frontendPort": 8080, "backendPort": 80}]}


def uniform(capacity: int = 2, **props: Any) -> dict[str, Any]:
    vmp = {"storageProfile": {"imageReference": {"id": "base"}}}
    return {"sku": {"capacity": capacity}, "properties": {"virtualMachineProfile": vmp, **props}}


def flexible(**props: Any) -> dict[str, Any]:
    return {"properties": {"orchestrationMode": "Flexible", **props}}


@pytest.mark.parametrize(
    ("body", "mode", "capacity", "fds"),
    [
        (uniform(), OrchestrationMode.UNIFORM, 2, 1),
        (uniform(1000), OrchestrationMode.UNIFORM, 1000, 1),
        (uniform(0, orchestrationMode="ScaleSetVM", platformFaultDomainCount=5), OrchestrationMode.UNIFORM, 0, 5),
        (flexible(), OrchestrationMode.FLEXIBLE, 0, 2),
        ({"properties": {"orchestrationMode": "VM", "platformFaultDomainCount": 3}}, OrchestrationMode.FLEXIBLE, 0, 3),
        ({**flexible(platformFaultDomainCount=5), "zones": ["1"]}, OrchestrationMode.FLEXIBLE, 0, 5),
    ],
)
def test_accepted_bodies(body: dict[str, Any], mode: OrchestrationMode, capacity: int, fds: int) -> None:
    spec, got = parse_scale_set_body("web", body, IMAGES)
    assert (spec.mode, got, spec.platform_fault_domain_count) == (mode, capacity, fds)


@pytest.mark.parametrize(
    ("name", "body", "error", "words"),
    [
        ("web", uniform(1001), InvalidSpec, "from 0 to 1000"),
        ("web", uniform(-1), InvalidSpec, "capacity"),
        ("web", {"sku": {"capacity": 1}}, InvalidSpec, "virtualMachineProfile is required in Uniform"),
        ("web", uniform(platformFaultDomainCount=6), InvalidSpec, "platformFaultDomainCount"),
        ("web", flexible(platformFaultDomainCount=4), InvalidSpec, "platformFaultDomainCount"),
        ("web", {**flexible(), "sku": {"capacity": 3}}, InvalidSpec, "sku.capacity is not used"),
        ("web", {**flexible(), "zones": ["1", "2"]}, InvalidSpec, "single zone"),
        ("web", flexible(upgradePolicy={"mode": "Rolling"}), InvalidSpec, "not supported in VM orchestration mode"),
        ("web", {"properties": {"orchestrationMode": "Sideways"}}, InvalidSpec, "Sideways"),
        ("web", {**uniform(), "zones": ["1", "1"]}, InvalidSpec, "duplicates"),
        ("web", {**uniform(), "colour": "red"}, InvalidSpec, "colour"),
        ("web", [1, 2], InvalidSpec, "JSON object"),
        ("web/../x", uniform(), InvalidSpec, "scale set name"),
        ("web;reboot", uniform(), InvalidSpec, "scale set name"),
        ("web", uniform(automaticRepairsPolicy={"enabled": True, "gracePeriod": "5 minutes"}), InvalidSpec, "ISO"),
    ],
)
def test_refused_bodies(name: str, body: Any, error: type[LocalVMSSError], words: str) -> None:
    with pytest.raises(error) as exc:
        parse_scale_set_body(name, body, IMAGES)
    assert words in exc.value.message and "\n" not in exc.value.message


def test_unknown_image_names_the_known_ones() -> None:
    body = uniform()
    body["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"]["id"] = "nope"
    with pytest.raises(InvalidSpec, match="image 'nope' is unknown; known images: base"):
        parse_scale_set_body("web", body, IMAGES)


def test_bad_probe_path_is_refused() -> None:
    body = uniform()
    body["properties"]["virtualMachineProfile"]["networkProfile"] = {"healthProbe": {"path": "healthz"}}
    with pytest.raises(InvalidSpec, match="must start with '/'"):
        parse_scale_set_body("web", body, IMAGES)


def test_flexible_without_a_model_shows_none() -> None:
    spec, capacity = parse_scale_set_body("flex", flexible(), IMAGES)
    assert spec_to_azure("flex", spec, capacity)["properties"]["virtualMachineProfile"] is None


def test_flexible_with_only_a_load_balancer_shows_it() -> None:
    body = flexible(virtualMachineProfile={"networkProfile": {"loadBalancer": LB}})
    spec, capacity = parse_scale_set_body("flex", body, IMAGES)
    shown = spec_to_azure("flex", spec, capacity)["properties"]["virtualMachineProfile"]
    assert shown["networkProfile"]["loadBalancer"] == LB and "storageProfile" not in shown


@pytest.mark.parametrize("body", [uniform(3, platformFaultDomainCount=2), flexible()])
def test_the_view_reads_back_as_the_same_spec(body: dict[str, Any]) -> None:
    spec, capacity = parse_scale_set_body("web", body, IMAGES)
    view = spec_to_azure("web", spec, capacity)
    again = {k: v for k, v in view.items() if k in ("sku", "zones")}
    props = {k: v for k, v in view["properties"].items() if v is not None}
    props.pop("faultDomainMapping")
    vmp = props.get("virtualMachineProfile")
    if vmp:
        vmp["osProfile"].pop("customData")
    again["properties"] = props
    assert parse_scale_set_body("web", again, IMAGES) == (spec, capacity)


@pytest.mark.parametrize(("given", "stored"), [(None, "root"), ("azureuser", "azureuser"), ("_svc-1", "_svc-1")])
def test_admin_username_is_kept_in_the_model_and_shown(given: str | None, stored: str) -> None:
    body = uniform()
    if given is not None:
        body["properties"]["virtualMachineProfile"]["osProfile"] = {"adminUsername": given}
    spec, _ = parse_scale_set_body("web", body, IMAGES)
    assert spec.admin_username == stored
    assert spec_to_azure("web", spec, 2)["properties"]["virtualMachineProfile"]["osProfile"]["adminUsername"] == stored


@pytest.mark.parametrize("bad", ["Azure", "9lives", "a:b", "x" * 33])
def test_a_bad_admin_username_is_one_line(bad: str) -> None:
    body = uniform()
    body["properties"]["virtualMachineProfile"]["osProfile"] = {"adminUsername": bad}
    with pytest.raises(InvalidSpec, match="adminUsername") as err:
        parse_scale_set_body("web", body, IMAGES)
    assert "\n" not in err.value.message
