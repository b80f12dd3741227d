"""Typed request bodies for the OpenAPI document (``/openapi.json``).

Routes read their bodies raw and validate them in the service (one place, the same one-line
errors for the short paths and ARM's), so FastAPI is given the schemas to publish instead:
``documented_body(Model)`` returns a route's ``openapi_extra`` and registers the model, and
``publish_schemas(app)`` puts every registered schema into ``components.schemas``. Where a
model comes from ``localvmss.spec`` or the autoscale settings, it is that very model, so what
the document says is what the service checks. ARM bodies also take fields with no local
meaning (kept and named, ``localvmss.armbody``): their schemas allow additional properties.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from localvmss.autoscale.settings import AutoscaleSetting
from localvmss.spec import AzScaleSetBody, StandbyPoolPolicy

_SCHEMAS: dict[str, dict[str, Any]] = {}


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


ArmScaleSet = AzScaleSetBody


def _open_schema(node: Any) -> Any:
    """The schema with ``additionalProperties: false`` lifted (ARM bodies keep extra fields)."""
    if isinstance(node, dict):
        return {k: _open_schema(v) for k, v in node.items() if not (k == "additionalProperties" and v is False)}
    if isinstance(node, list):
        return [_open_schema(v) for v in node]
    return node


def documented_body(model: type[BaseModel], required: bool = True, *, open_schema: bool = True) -> dict[str, Any]:
    """``openapi_extra`` giving a route the request body ``model`` (its schema registered)."""
    schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        _SCHEMAS[name] = _open_schema(sub) if open_schema else sub
    _SCHEMAS[model.__name__] = _open_schema(schema) if open_schema else schema
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": ref}}}}


def publish_schemas(app: FastAPI) -> None:
    """Every registered body schema in the app's OpenAPI ``components.schemas``."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = build()
            doc.setdefault("components", {}).setdefault("schemas", {}).update(_SCHEMAS)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


__all__ = [
    "ArmAutoscaleSetting",
    "ArmInstanceIds",
    "ArmResourceGroup",
    "ArmRunCommand",
    "ArmScaleSet",
    "ArmScaleSetUpdate",
    "ArmVirtualMachine",
    "ArmVmUpdate",
    "StandbyPoolPolicy",
    "documented_body",
    "publish_schemas",
]
