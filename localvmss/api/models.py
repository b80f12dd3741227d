"""Typed request bodies for the OpenAPI document (``/openapi.json``).

Routes read their bodies raw and validate them in the service (one place, the same one-line
errors for the short paths and ARM's), so FastAPI is given the schemas to publish instead:
``documented_body(Model)`` returns a route's ``openapi_extra`` and registers the model, and
``publish_schemas(app)`` puts every registered schema into ``components.schemas``. Where a
model comes from ``localvmss.spec`` or the autoscale settings, it is that very model, so what
the document says is what the service checks. ARM bodies also take fields with no local
meaning (kept and named, ``localvmss.armbody``): their schemas allow additional properties.
``publish_schemas`` also documents, on every route in one place, the refusals any route can
answer (``ERROR_RESPONSES``: Azure's error body) and drops FastAPI's 422, which this API never
answers (a bad request is a 400 in Azure's shape).
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from localvmss.autoscale.settings import AutoscaleSetting
from localvmss.spec import AzScaleSetBody, StandbyPoolPolicy

# The body models the routes document, with whether their schemas stay open; their schemas are
# made when the OpenAPI document is first asked for, not at import (they are large, and a daemon
# that is never asked for its document should not keep them).
# Kept in the order of each pair's last registration: a schema both closed and open (a short
# path's and ARM's body) is published as its last registration made it.
_DOCUMENTED: dict[tuple[type[BaseModel], bool], None] = {}


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ArmSku(_Open):
    name: str | None = None
    tier: str | None = None
    capacity: int | None = Field(None, ge=0, le=1000)


class ArmScaleSetUpdate(_Open):
    """PATCH of a scale set: its capacity, its tags, or properties laid over the model."""

    sku: ArmSku | None = None
    tags: dict[str, str] | None = None
    properties: dict[str, Any] | None = None


class ArmInstanceIds(_Open):
    instance_ids: list[str] | None = Field(None, alias="instanceIds", description='instance ids, or ["*"]')


class ArmProtectionPolicy(_Open):
    protect_from_scale_in: bool | None = Field(None, alias="protectFromScaleIn")
    protect_from_scale_set_actions: bool | None = Field(None, alias="protectFromScaleSetActions")


class ArmVmUpdateProperties(_Open):
    protection_policy: ArmProtectionPolicy = Field(alias="protectionPolicy")


class ArmVmUpdate(_Open):
    properties: ArmVmUpdateProperties


class ArmRunCommandParameter(_Open):
    name: str
    value: str = ""


class ArmRunCommand(_Open):
    command_id: str = Field("RunShellScript", alias="commandId")
    script: list[str] | str = Field(default_factory=list)
    parameters: list[ArmRunCommandParameter] = Field(default_factory=list)


class ArmSubResource(_Open):
    id: str


class ArmVmHardware(_Open):
    vm_size: str | None = Field(None, alias="vmSize")
    vm_size_properties: dict[str, int] | None = Field(None, alias="vmSizeProperties")


class ArmVirtualMachineProperties(_Open):
    virtual_machine_scale_set: ArmSubResource = Field(alias="virtualMachineScaleSet")
    storage_profile: dict[str, Any] | None = Field(None, alias="storageProfile")
    hardware_profile: ArmVmHardware | None = Field(None, alias="hardwareProfile")
    os_profile: dict[str, Any] | None = Field(None, alias="osProfile")
    platform_fault_domain: int | None = Field(None, alias="platformFaultDomain")
    initial_power_state: str | None = Field(None, alias="initialPowerState", description="running | stopped")


class ArmVirtualMachine(_Open):
    """A Flexible set's VM (Microsoft.Compute/virtualMachines), attached to its set at creation."""

    location: str | None = None
    tags: dict[str, str] | None = None
    zones: list[str] | None = None
    properties: ArmVirtualMachineProperties


class ArmResourceGroup(_Open):
    location: str | None = None
    tags: dict[str, str] | None = None


class ArmAutoscaleSetting(_Open):
    """Microsoft.Insights/autoscalesettings: the setting's own fields under ``properties``."""

    location: str | None = None
    tags: dict[str, str] | None = None
    properties: AutoscaleSetting


class ArmAutoscaleSettingUpdate(_Open):
    """PATCH of an autoscale setting: tags, and properties laid over the stored ones."""

    tags: dict[str, str] | None = None
    properties: dict[str, Any] | None = None


ArmScaleSet = AzScaleSetBody


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ScaleSetCapacity(_Closed):
    capacity: int = Field(ge=0, le=1000)


class ScaleSetCapacityUpdate(_Closed):
    """PATCH /scaleSets/{name}: the capacity only (the model changes with PUT)."""

    sku: ScaleSetCapacity


class OrchestrationServiceState(_Closed):
    """setOrchestrationServiceState: suspend or resume the set's automatic repairs."""

    service_name: Literal["AutomaticRepairs"] = Field(alias="serviceName")
    action: Literal["Suspend", "Resume"]


class AutoscaleSimulation(_Closed):
    """What a setting (the stored one unless given) would have done between start and end."""

    start: datetime
    end: datetime
    step: float | None = Field(None, gt=0, description="seconds between evaluations")
    setting: AutoscaleSetting | None = None


class GuestMetrics(_Closed):
    port: int | None = Field(None, ge=1, le=65535)
    path: str | None = Field(None, description="an absolute URL path, e.g. /metrics")


class ImageImport(_Closed):
    """PUT /images/{name}: exactly one of sourceDirectory (image.json and its files) and
    sourceFile (a qcow2 or raw disk that boots itself), absolute paths on the daemon's machine."""

    source_directory: str | None = Field(None, alias="sourceDirectory")
    source_file: str | None = Field(None, alias="sourceFile")
    guest_metrics: GuestMetrics | None = Field(None, alias="guestMetrics")


class HostAdd(_Closed):
    """PUT /hosts/{name}: a libvirt host by its URI."""

    uri: str = Field(description="qemu+ssh://user@host/system, qemu+tcp://..., qemu:///system")
    zone: str | None = Field(None, min_length=1)
    network: str = Field("default", min_length=1, max_length=64)
    static_addresses: str | None = Field(
        None,
        alias="staticAddresses",
        description="FIRST-LAST of the network's subnet outside its DHCP range: addresses told to each guest "
        "in its seed, with no DHCP host entry",
    )


class ErrorDetail(BaseModel):
    code: str
    message: str = Field(description="one line: what and why")
    target: str | None = None
    details: list[ErrorDetail] | None = None


class ErrorResponse(BaseModel):
    """Azure's error body, the answer to every refused request."""

    error: ErrorDetail


_ERROR_REASONS = {
    400: "Bad request (InvalidParameter and its kinds); nothing was changed",
    401: "No valid bearer token (over TCP)",
    404: "No such resource",
    409: "Conflicts with the current state (or not enough capacity); nothing was changed",
    413: "Request body too large",
    503: "A host, the state store or a guest agent is unavailable now; retry later",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "description": reason,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }
    for status, reason in _ERROR_REASONS.items()
}
# Success answers beside a route's own status code (a PUT that created, a what-if answered at once).
CREATED: dict[int | str, dict[str, Any]] = {201: {"description": "Created"}}
ANSWERED: dict[int | str, dict[str, Any]] = {200: {"description": "Done at once (nothing left running)"}}
RUNNING: dict[int | str, dict[str, Any]] = {202: {"description": "Still running"}}


def _open_schema(node: Any) -> Any:
    """The schema with ``additionalProperties: false`` lifted (ARM bodies keep extra fields)."""
    if isinstance(node, dict):
        return {k: _open_schema(v) for k, v in node.items() if not (k == "additionalProperties" and v is False)}
    if isinstance(node, list):
        return [_open_schema(v) for v in node]
    return node


def documented_body(model: type[BaseModel], required: bool = True, *, open_schema: bool = True) -> dict[str, Any]:
    """``openapi_extra`` giving a route the request body ``model`` (its schema registered)."""
    _DOCUMENTED.pop((model, open_schema), None)
    _DOCUMENTED[(model, open_schema)] = None
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": ref}}}}


@functools.cache
def _schemas_of(model: type[BaseModel], open_schema: bool) -> dict[str, Any]:
    """The component schemas of ``model`` (itself and what it refers to); made once per process,
    as every app (the daemon's, each test's) mounts the same routes."""
    schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    out = {name: _open_schema(sub) if open_schema else sub for name, sub in schema.pop("$defs", {}).items()}
    out[model.__name__] = _open_schema(schema) if open_schema else schema
    return out


def _documented_schemas() -> dict[str, Any]:
    """Every registered body schema, and Azure's error body, by name."""
    out: dict[str, Any] = {}
    for model, open_schema in [*_DOCUMENTED, (ErrorResponse, False)]:
        out.update(_schemas_of(model, open_schema))
    return out


def publish_schemas(app: FastAPI) -> None:
    """Every registered body schema in the app's OpenAPI ``components.schemas``, and every
    route's refusals (``ERROR_RESPONSES``) documented; call it once every route is mounted."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = build()
            # Here, not on the routes: included routers' routes are not all in ``app.routes``.
            for operations in doc.get("paths", {}).values():
                for operation in operations.values():
                    answers = operation.setdefault("responses", {})
                    answers.pop("422", None)  # refused as 400 (see ERROR_RESPONSES)
                    for status, answer in ERROR_RESPONSES.items():
                        answers.setdefault(str(status), answer)
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
            schemas.update(_documented_schemas())
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


__all__ = [
    "ANSWERED",
    "CREATED",
    "ERROR_RESPONSES",
    "RUNNING",
    "ArmAutoscaleSetting",
    "ArmAutoscaleSettingUpdate",
    "AutoscaleSimulation",
    "ErrorResponse",
    "HostAdd",
    "ImageImport",
    "OrchestrationServiceState",
    "ScaleSetCapacityUpdate",
    "ArmInstanceIds",
    "ArmResourceGroup",
    "ArmRunCommand",
    "ArmScaleSet",
    "ArmScaleSetUpdate",
    "ArmVirtualMachine",
    "ArmVmUpdate",
    "AutoscaleSetting",
    "StandbyPoolPolicy",
    "documented_body",
    "publish_schemas",
]
