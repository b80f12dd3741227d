"""The ARM routes over a real Service (fake hosts): paths, api-version, Azure's example bodies,
resource groups, long-running answers and Azure's error shape; a refusal changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from localvmss.api.arm import COMPUTE_API_VERSIONS, canonical_path
from tests.unit.servicefake import Harness, add_instances, api_client, make_service, snapshot

SUB = "00000000-0000-0000-0000-000000000000"
V = f"api-version={COMPUTE_API_VERSIONS[-1]}"
RG = f"/subscriptions/{SUB}/resourceGroups/rg1"
SETS = f"{RG}/providers/Microsoft.Compute/virtualMachineScaleSets"

# Microsoft's own example (VirtualMachineScaleSet_Create_WithPasswordAuthentication, trimmed of
# its Windows-only parts): a marketplace image, an osDisk, NIC configurations and a password.
AZURE_EXAMPLE = {
    "sku": {"tier": "Standard", "capacity": 2, "name": "Standard_B1s"},
    "location": "westus",
    "tags": {"env": "lab"},
    "properties": {
        "overprovision": False,
        "virtualMachineProfile": {
            "storageProfile": {
                "imageReference": {
                    "publisher": "Canonical",
                    "offer": "0001-com-ubuntu-server-jammy",
                    "sku": "22_04-lts",
                    "version": "latest",
                },
                "osDisk": {
                    "caching": "ReadWrite",
                    "managedDisk": {"storageAccountType": "Standard_LRS"},
                    "createOption": "FromImage",
                },
            },
            "osProfile": {"computerNamePrefix": "web", "adminUsername": "azureuser", "adminPassword": "s3cr3t!"},
            "networkProfile": {
                "networkInterfaceConfigurations": [
                    {
                        "name": "nic",
                        "properties": {
                            "primary": True,
                            "enableIPForwarding": True,
                            "ipConfigurations": [{"name": "ip", "properties": {"subnet": {"id": "/sub/net"}}}],
                        },
                    }
                ]
            },
        },
        "upgradePolicy": {"mode": "Manual"},
    },
}


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    harness = make_service(tmp_path)
    client = api_client(harness)
    assert (
        client.put(
            f"/subscriptions/{SUB}/resourcegroups/rg1?api-version=2021-04-01", json={"location": "westus"}
        ).status_code
        == 201
    )
    return harness


@pytest.mark.parametrize(
    "sent, routed",
    [
        (f"/subscriptions/{SUB}/resourcegroups/rg1", f"/subscriptions/{SUB}/resourceGroups/rg1"),
        (
            f"/subscriptions/{SUB}/resourceGroups/rg1/providers/microsoft.compute/VIRTUALMACHINESCALESETS/web/poweroff",
            f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/web/powerOff",
        ),
        # A name that is also a path word stays as sent: only words in word positions change.
        (
            f"/subscriptions/{SUB}/resourceGroups/Skus/providers/Microsoft.Compute/virtualMachineScaleSets/start/START",
            f"/subscriptions/{SUB}/resourceGroups/Skus/providers/Microsoft.Compute/virtualMachineScaleSets/start/start",
        ),
        (
            f"/subscriptions/{SUB}/resourceGroups/g/providers/Microsoft.Compute/virtualMachineScaleSets/w/manualupgrade",
            f"/subscriptions/{SUB}/resourceGroups/g/providers/Microsoft.Compute/virtualMachineScaleSets/w/manualUpgrade",
        ),
        ("/scaleSets/web/POWEROFF", "/scaleSets/web/POWEROFF"),  # short paths: the route matches case itself
    ],
)
def test_arm_path_words_match_whatever_their_case(sent: str, routed: str) -> None:
    assert canonical_path(sent) == routed


def test_azures_example_body_is_taken_its_extra_fields_kept_named_and_echoed(h: Harness) -> None:
    client = api_client(h)
    resp = client.put(f"{SETS}/web?{V}", json=AZURE_EXAMPLE)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    ignored = body["localvmss"]["ignoredProperties"]
    assert "properties.virtualMachineProfile.storageProfile.osDisk" in ignored
    assert "properties.virtualMachineProfile.osProfile.adminPassword" in ignored
    assert "properties.virtualMachineProfile.networkProfile.networkInterfaceConfigurations" in ignored
    assert any("22_04-lts" in n and "'base'" in n for n in body["localvmss"]["notes"])
    for header in ("Azure-AsyncOperation", "Location", "Retry-After"):
        assert header in resp.headers
    got = client.get(f"{SETS}/web?{V}").json()
    assert got["id"] == f"{SETS}/web" and got["location"] == "westus" and got["tags"] == {"env": "lab"}
    vmp = got["properties"]["virtualMachineProfile"]
    assert vmp["storageProfile"]["osDisk"]["createOption"] == "FromImage"
    assert vmp["networkProfile"]["networkInterfaceConfigurations"][0]["name"] == "nic"
    assert "adminPassword" not in vmp["osProfile"]  # a secret is named, never stored
    assert h.store.scale_set("web").spec.image == "base" and h.store.scale_set("web").capacity == 2


@pytest.mark.parametrize(
    "method, path, body, status, code",
    [
        ("get", f"{SETS}/web", None, 400, "MissingApiVersionParameter"),
        ("put", f"{SETS}/web?api-version=2099-01-01", AZURE_EXAMPLE, 400, "InvalidApiVersionParameter"),
        (
            "put",
            f"/subscriptions/{SUB}/resourceGroups/nogroup/providers/Microsoft.Compute/virtualMachineScaleSets/web?{V}",
            AZURE_EXAMPLE,
            404,
            "ResourceGroupNotFound",
        ),
        (
            "put",
            f"/subscriptions/11111111-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/web?{V}",
            AZURE_EXAMPLE,
            404,
            "SubscriptionNotFound",
        ),
        ("put", f"{SETS}/Web?{V}", AZURE_EXAMPLE, 400, "InvalidParameter"),
        ("put", f"{SETS}/web?{V}", {**AZURE_EXAMPLE, "sku": {"capacity": 1001}}, 400, "InvalidParameter"),
        ("put", f"{SETS}/web?{V}", {**AZURE_EXAMPLE, "tags": {"a/b": "x"}}, 400, "InvalidParameter"),
        ("put", f"{SETS}/web?{V}", [1, 2], 400, "InvalidParameter"),
        ("get", f"{SETS}/nope?{V}", None, 404, "ResourceNotFound"),
        ("post", f"{SETS}/nope/powerOff?{V}", {}, 404, "ResourceNotFound"),
        ("delete", f"/subscriptions/{SUB}/resourceGroups/rg1?api-version=2021-04-01", None, 409, "Conflict"),
    ],
)
def test_refusals_are_azures_error_shape_and_change_nothing(
    h: Harness, method: str, path: str, body: Any, status: int, code: str
) -> None:
    client = api_client(h)
    assert client.put(f"{SETS}/web?{V}", json=AZURE_EXAMPLE).status_code == 201
    before = snapshot(h.store)
    resp = client.request(method.upper(), path, json=body)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code and error["message"] and isinstance(error["details"], list), error
    assert snapshot(h.store) == before


def test_a_set_is_found_only_under_its_own_group(h: Harness) -> None:
    client = api_client(h)
    client.put(f"/subscriptions/{SUB}/resourceGroups/rg2?api-version=2021-04-01", json={"location": "westus"})
    assert client.put(f"{SETS}/web?{V}", json=AZURE_EXAMPLE).status_code == 201
    other = f"/subscriptions/{SUB}/resourceGroups/rg2/providers/Microsoft.Compute/virtualMachineScaleSets"
    assert client.get(f"{other}/web?{V}").json()["error"]["code"] == "ResourceNotFound"
    assert [s["name"] for s in client.get(f"{other}?{V}").json()["value"]] == []
    assert [s["name"] for s in client.get(f"{SETS}?{V}").json()["value"]] == ["web"]
    # The same name in another group: refused, since names are unique on a daemon.
    resp = client.put(f"{other}/web?{V}", json=AZURE_EXAMPLE)
    assert resp.status_code == 409 and "rg1" in resp.json()["error"]["message"]
    # Short paths take the group as a query parameter.
    assert client.get("/scaleSets/web?resourceGroup=rg2").status_code == 404
    assert client.get("/scaleSets/web?resourceGroup=RG1").status_code == 200


def test_long_running_answers_point_at_an_operation_that_says_when_it_is_done(h: Harness) -> None:
    client = api_client(h)
    resp = client.put(f"{SETS}/web?{V}", json=AZURE_EXAMPLE)
    status_url = resp.headers["Azure-AsyncOperation"]
    assert client.get(status_url).json()["status"] == "InProgress"  # nothing booted yet
    assert client.get(resp.headers["Location"]).status_code == 202
    # The reconciler's work, done: both instances ready and the set recorded Succeeded.
    add_instances(h.store, "web", 2, ready_at=1.0)
    h.store.record_set_status("web", provisioning_state="Succeeded")
    done = client.get(status_url).json()
    assert done["status"] == "Succeeded" and "endTime" in done
    assert client.get(resp.headers["Location"]).status_code == 200

    resp = client.post(f"{SETS}/web/poweroff?{V}", json={"instanceIds": ["0"]})  # az and the SDK send lowercase
    assert resp.status_code == 202, resp.text
    assert h.store.instance("web", 0).desired_power == "stopped"
    # The fake host reports every domain stopped: the power-off has taken effect once nothing is pending.
    assert client.get(resp.headers["Azure-AsyncOperation"]).json()["status"] == "Succeeded"

    resp = client.delete(f"{SETS}/web?{V}")
    assert resp.status_code == 202
    assert client.get(resp.headers["Azure-AsyncOperation"]).json()["status"] == "InProgress"
    h.store.delete_scale_set_row("web")
    assert client.get(resp.headers["Azure-AsyncOperation"]).json()["status"] == "Succeeded"


def test_patch_scales_and_retags(h: Harness) -> None:
    client = api_client(h)
    client.put(f"{SETS}/web?{V}", json=AZURE_EXAMPLE)
    resp = client.patch(f"{SETS}/web?{V}", json={"sku": {"capacity": 3}, "tags": {"env": "prod"}})
    assert resp.status_code == 200, resp.text
    assert "Azure-AsyncOperation" in resp.headers
    row = h.store.scale_set("web")
    assert row.capacity == 3 and row.arm["tags"] == {"env": "prod"}


def test_the_openapi_document_describes_the_bodies(h: Harness) -> None:
    doc = api_client(h).get("/openapi.json").json()
    op = doc["paths"][
        "/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}"
    ]["put"]
    ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rpartition("/")[2]
    schema = doc["components"]["schemas"][ref]
    assert {"sku", "properties", "location", "tags", "zones"} <= set(schema["properties"])
    short = doc["paths"]["/scaleSets/{name}"]["put"]["requestBody"]["content"]["application/json"]["schema"]
    assert short["$ref"].endswith("/AzScaleSetBody")


def test_a_read_modify_put_round_trip_keeps_custom_data_and_the_model_version(h: Harness) -> None:
    client = api_client(h)
    body = {**AZURE_EXAMPLE}
    body["properties"] = {
        **AZURE_EXAMPLE["properties"],
        "virtualMachineProfile": {
            **AZURE_EXAMPLE["properties"]["virtualMachineProfile"],
            "osProfile": {"computerNamePrefix": "web", "customData": "I2Nsb3VkLWNvbmZpZw=="},
        },
    }
    assert client.put(f"{SETS}/web?{V}", json=body).status_code == 201
    read = client.get(f"{SETS}/web?{V}").json()
    assert client.put(f"{SETS}/web?{V}", json=read).status_code == 200, "the SDK's read-modify-write"
    row = h.store.scale_set("web")
    assert row.spec.custom_data == "I2Nsb3VkLWNvbmZpZw==" and row.model_version == 1
    resp = client.patch(f"{SETS}/web?{V}", json={"properties": {"overprovision": True}})
    assert resp.status_code == 200, resp.text
    row = h.store.scale_set("web")
    assert row.spec.overprovision and row.spec.custom_data == "I2Nsb3VkLWNvbmZpZw==" and row.model_version == 1


@pytest.mark.parametrize(
    "body",
    [
        {"properties": None},
        {"sku": {"capacity": 1001}, "tags": {"env": "prod"}},
        {"sku": {"capacity": 3}, "tags": {"bad/name": "x"}},
        {"tags": {"env": "prod"}, "properties": {"upgradePolicy": {"mode": "Sometimes"}}},
        {"sku": 3},
        {"properties": {"overprovision": True}, "sku": {"capacity": 1001}},
    ],
    ids=["null properties", "capacity out of range", "bad tag", "bad policy", "sku not an object", "model then scale"],
)
def test_a_refused_patch_changes_nothing(h: Harness, body: dict[str, Any]) -> None:
    """Found by the fuzzer: a PATCH once wrote its first part before refusing the next."""
    client = api_client(h)
    assert client.put(f"{SETS}/web?{V}", json=AZURE_EXAMPLE).status_code == 201
    before = snapshot(h.store)
    resp = client.patch(f"{SETS}/web?{V}", json=body)
    assert resp.status_code == 400, resp.text
    assert snapshot(h.store) == before
