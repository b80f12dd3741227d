"""ARM's REST shape over the same ``Service``: what Azure's SDKs, az and Terraform send.

``/subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.Compute/virtualMachineScaleSets/...``
and its ``virtualMachines``, ``Microsoft.Compute/virtualMachines`` (Flexible members),
``Microsoft.Insights/autoscalesettings``, resource groups, and the operation-status resources.
What ARM does and these routes do too:

* ``api-version`` is required and checked per resource provider (``API_VERSIONS``); a missing
  or unknown one is refused with Azure's codes.
* Path words (``resourcegroups``, ``poweroff``, ``manualupgrade``) match case-insensitively:
  ``CaseInsensitivePaths`` rewrites them to one spelling before routing; names are left alone.
* Long-running requests answer at once (PUT 200/201, PATCH 200, DELETE and POST actions 202)
  with ``Azure-AsyncOperation`` (status: InProgress, then Succeeded or Failed) and ``Location``
  (202 until done, then 200), and ``Retry-After``; ``localvmss.operations`` says when it is done.
* Request bodies keep what has no local meaning (``localvmss.armbody``) and name it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request, Response

from localvmss import armids, lifecycle
from localvmss.api.models import (
    ANSWERED,
    CREATED,
    RUNNING,
    ArmAutoscaleSetting,
    ArmAutoscaleSettingUpdate,
    ArmInstanceIds,
    ArmResourceGroup,
    ArmRunCommand,
    ArmScaleSet,
    ArmScaleSetUpdate,
    ArmVirtualMachine,
    ArmVmUpdate,
    documented_body,
)
from localvmss.api.params import ARM_INSTANCE_BODY_EXTRAS, actor, flag, instance_ids
from localvmss.errors import InvalidApiVersion, InvalidSpec, NotFound, SubscriptionNotFound
from localvmss.operations import OpKind
from localvmss.service import Service, check_tags
from localvmss.spec import without_computed

COMPUTE_API_VERSIONS = (
    "2021-03-01",
    "2021-04-01",
    "2021-07-01",
    "2021-11-01",
    "2022-03-01",
    "2022-08-01",
    "2022-11-01",
    "2023-03-01",
    "2023-07-01",
    "2023-09-01",
    "2024-03-01",
    "2024-07-01",
    "2024-11-01",
    "2025-04-01",
    "2025-11-01",
    "2026-03-01",
    "2026-04-01",
)
INSIGHTS_API_VERSIONS = ("2015-04-01", "2021-05-01-preview", "2022-10-01")
RESOURCES_API_VERSIONS = ("2021-04-01", "2022-09-01", "2023-07-01", "2024-03-01", "2024-07-01", "2024-11-01")
API_VERSIONS = {
    "Microsoft.Compute": COMPUTE_API_VERSIONS,
    "Microsoft.Insights": INSIGHTS_API_VERSIONS,
    "Microsoft.Resources": RESOURCES_API_VERSIONS,
}
RETRY_AFTER_S = "1"

SUB = "/subscriptions/{subscription}"
GROUP = SUB + "/resourceGroups/{group}"
VMSS = GROUP + "/providers/Microsoft.Compute/virtualMachineScaleSets"
ONE_SET = VMSS + "/{name}"
SET_VMS = ONE_SET + "/virtualMachines"
ONE_SET_VM = SET_VMS + "/{instance_id}"
VMS = GROUP + "/providers/Microsoft.Compute/virtualMachines"
ONE_VM = VMS + "/{vm_name}"
AUTOSCALE = GROUP + "/providers/Microsoft.Insights/autoscalesettings"
OPERATIONS = SUB + "/providers/Microsoft.Compute/locations/{location}"

# The one spelling of every fixed path word, looked up by its lower case.
PATH_WORDS = {
    w.lower(): w
    for w in (
        "subscriptions",
        "resourceGroups",
        "providers",
        "Microsoft.Compute",
        "Microsoft.Insights",
        "virtualMachineScaleSets",
        "virtualMachines",
        "autoscalesettings",
        "locations",
        "operations",
        "operationResults",
        "instanceView",
        "skus",
        "rollingUpgrades",
        "latest",
        "cancel",
        "osUpgradeHistory",
        "osRollingUpgrade",
        "setOrchestrationServiceState",
        "manualUpgrade",
        "runCommand",
        "reimageAll",
        "retrieveBootDiagnosticsData",
        *(a.api_name for a in lifecycle.ACTIONS),
    )
}
# After these words comes a name, which is never rewritten.
NAME_FOLLOWS = {"subscriptions", "resourceGroups", "virtualMachineScaleSets", "virtualMachines", "autoscalesettings"}
NAME_FOLLOWS |= {"locations", "operations", "operationResults"}


def canonical_path(path: str) -> str:
    """ARM's path words in one spelling (``/subscriptions/s/resourcegroups/g/...`` ->
    ``resourceGroups``); a segment right after a word that names something is kept as sent."""
    if not path.lower().startswith("/subscriptions/"):
        return path
    segments = path.split("/")
    out = [segments[0]]
    previous = ""
    for segment in segments[1:]:
        word = segment if previous in NAME_FOLLOWS else PATH_WORDS.get(segment.lower(), segment)
        out.append(word)
        previous = word if word in PATH_WORDS.values() and previous not in NAME_FOLLOWS else ""
    return "/".join(out)


class CaseInsensitivePaths:
    """ASGI middleware: ARM paths routed whatever the case of their fixed words."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = canonical_path(scope.get("path", ""))
            if path != scope.get("path"):
                scope = {**scope, "path": path, "raw_path": path.encode()}
        await self.app(scope, receive, send)


def _api_version(provider: str) -> Callable[..., str]:
    """A dependency checking ``api-version`` against the provider's list, as ARM does."""
    known = API_VERSIONS[provider]

    def check(api_version: str | None = Query(None, alias="api-version")) -> str:
        if not api_version:
            err = InvalidApiVersion("The api-version query parameter (?api-version=) is required for all requests.")
            err.code = "MissingApiVersionParameter"
            raise err
        if api_version not in known:
            raise InvalidApiVersion(
                f"The resource provider {provider!r} does not support api-version {api_version!r}. "
                f"The supported api-versions are '{', '.join(known)}'."
            )
        return api_version

    return check


def register(app: FastAPI, service: Service) -> None:
    """Mount the ARM routes on ``app``."""

    def subscription(subscription: str) -> None:
        """Every ARM path names the subscription: this daemon answers for one."""
        if subscription.lower() != service.cfg.subscription_id.lower():
            raise SubscriptionNotFound(f"The subscription '{subscription}' could not be found.")

    def router(provider: str) -> APIRouter:
        checks = [Depends(subscription), Depends(_api_version(provider))]
        return APIRouter(tags=[f"ARM: {provider}"], dependencies=checks)

    compute, insights, resources = (
        router("Microsoft.Compute"),
        router("Microsoft.Insights"),
        router("Microsoft.Resources"),
    )

    def lro(request: Request, response: Response, kind: OpKind, scale_set: str, **target: Any) -> None:
        """Record the operation; point the caller at its status and its result."""
        op = service.begin_operation(kind, scale_set, **target)
        base = str(request.base_url).rstrip("/")
        version = request.query_params.get("api-version", COMPUTE_API_VERSIONS[-1])
        sub_id, location = service.cfg.subscription_id, service.cfg.location
        status_url = f"{base}{armids.operation_path(sub_id, location, op.id)}?api-version={version}"
        result_url = f"{base}{armids.operation_path(sub_id, location, op.id, result=True)}?api-version={version}"
        response.headers["Azure-AsyncOperation"] = status_url
        response.headers["Location"] = result_url
        response.headers["Retry-After"] = RETRY_AFTER_S

    # -- resource groups (Microsoft.Resources) -------------------------------------------------
    @resources.get(SUB + "/resourceGroups")
    def list_groups() -> dict[str, Any]:
        return {"value": service.list_groups()}

    @resources.put(
        SUB + "/resourceGroups/{group}",
        status_code=200,
        responses=CREATED,
        openapi_extra=documented_body(ArmResourceGroup),
    )
    def put_group(group: str, response: Response, body: Any = Body(...)) -> Any:
        view, created = service.put_group(group, body)
        response.status_code = 201 if created else 200
        return view

    @resources.get(SUB + "/resourceGroups/{group}")
    def get_group(group: str) -> dict[str, Any]:
        return service.get_group(group)

    @resources.head(SUB + "/resourceGroups/{group}", status_code=204)
    def group_exists_head(group: str, response: Response) -> None:
        try:
            service.get_group(group)
        except NotFound:
            response.status_code = 404

    @resources.delete(SUB + "/resourceGroups/{group}", status_code=200)
    def delete_group(group: str) -> None:
        service.delete_group(group)

    # -- scale sets ---------------------------------------------------------------------------
    @compute.get(SUB + "/providers/Microsoft.Compute/virtualMachineScaleSets")
    def list_all_sets() -> dict[str, Any]:
        return {"value": service.list_sets()}

    @compute.get(VMSS)
    def list_sets(group: str) -> dict[str, Any]:
        service.get_group(group)
        return {"value": [s for s in service.list_sets() if s["resourceGroup"].lower() == group.lower()]}

    @compute.put(ONE_SET, status_code=200, responses=CREATED, openapi_extra=documented_body(ArmScaleSet))
    def put_set(group: str, name: str, request: Request, response: Response, body: Any = Body(...)) -> Any:
        view, created = service.put_set(
            name,
            body,
            create_only=request.headers.get("if-none-match") == "*",
            actor=actor(request, "arm"),
            group=group,
            keep_unknown=True,
        )
        response.status_code = 201 if created else 200
        lro(request, response, OpKind.SET_PUT, name)
        return view

    @compute.get(ONE_SET)
    def get_set(group: str, name: str) -> dict[str, Any]:
        service.check_group(name, group)
        return service.get_set(name)

    @compute.patch(ONE_SET, openapi_extra=documented_body(ArmScaleSetUpdate))
    def patch_set(group: str, name: str, request: Request, response: Response, body: Any = Body(...)) -> Any:
        """ARM's update. Only ``sku.capacity`` and ``tags``: a scale (the same rule as every
        scale) and new tags. With ``properties``: those laid over the model, as one PUT. Either
        way everything is checked before anything is written."""
        service.check_group(name, group)
        if not isinstance(body, dict):
            raise InvalidSpec("request body must be a JSON object")
        for key in ("sku", "properties", "tags"):
            if key in body and not isinstance(body[key], dict):
                raise InvalidSpec(f"{key} must be a JSON object")
        sku = body.get("sku") or {}
        if set(body) <= {"sku", "tags"} and set(sku) <= {"capacity", "name", "tier"}:
            tags = check_tags(body["tags"]) if "tags" in body else None
            if "capacity" in sku:
                service.set_capacity(name, sku["capacity"])
            if tags is not None:
                service.update_tags(name, tags)
            view = service.get_set(name)
        else:
            view, _ = service.put_set(name, _merged_update(service.get_set(name), body), group=group, keep_unknown=True)
        lro(request, response, OpKind.SET_PUT, name)
        return view

    @compute.delete(ONE_SET, status_code=202)
    def delete_set(group: str, name: str, request: Request, response: Response) -> None:
        service.check_group(name, group)
        service.delete_set(name)
        lro(request, response, OpKind.SET_DELETE, name)

    @compute.get(ONE_SET + "/instanceView")
    def set_instance_view(group: str, name: str) -> dict[str, Any]:
        service.check_group(name, group)
        return service.set_instance_view(name)

    @compute.get(ONE_SET + "/skus")
    def set_skus(group: str, name: str) -> dict[str, Any]:
        """Azure's VirtualMachineScaleSetListSkusResult: the sizes the set may take."""
        service.check_group(name, group)
        return {
            "value": [
                {
                    "resourceType": "Microsoft.Compute/virtualMachineScaleSets",
                    "sku": {"name": s["name"], "tier": "Standard"},
                    "capacity": {"minimum": 0, "maximum": 1000, "defaultCapacity": 1, "scaleType": "Automatic"},
                }
                for s in service.list_skus()
            ]
        }

    @compute.get(ONE_SET + "/rollingUpgrades/latest")
    def latest_rolling_upgrade(group: str, name: str) -> dict[str, Any]:
        service.check_group(name, group)
        return service.latest_rolling_upgrade(name)

    @compute.get(ONE_SET + "/osUpgradeHistory")
    def os_upgrade_history(group: str, name: str) -> dict[str, Any]:
        service.check_group(name, group)
        return service.os_upgrade_history(name)

    @compute.post(ONE_SET + "/rollingUpgrades/cancel", status_code=202)
    def cancel_rolling_upgrade(group: str, name: str, request: Request) -> None:
        service.check_group(name, group)
        service.cancel_rolling_upgrade(name, actor=actor(request, "arm"))

    @compute.post(
        ONE_SET + "/{action}",
        status_code=202,
        responses=ANSWERED,
        openapi_extra=documented_body(ArmInstanceIds, False),
    )
    def set_action(
        group: str,
        name: str,
        action: str,
        request: Request,
        response: Response,
        skip_shutdown: str | None = Query(None, alias="skipShutdown"),
        body: Any = Body(None),
    ) -> Any:
        """start, powerOff, restart, deallocate, reimage, reimageAll, redeploy, delete (the
        instances in ``instanceIds``), manualUpgrade, osRollingUpgrade, setOrchestrationServiceState."""
        service.check_group(name, group)
        if action == "setOrchestrationServiceState":
            response.status_code = 200
            return service.set_orchestration_service_state(name, body)
        if action == "osRollingUpgrade":
            service.start_rolling_upgrade(name, actor=actor(request, "arm"))
            lro(request, response, OpKind.SET_PUT, name)
            return None
        ids = instance_ids(body, ARM_INSTANCE_BODY_EXTRAS)
        if action == "manualUpgrade":
            answer = service.update_instances(name, ids)
            lro(request, response, OpKind.INSTANCES, name, instanceIds=answer.get("instanceIds") or _all(service, name))
            return None
        if action == "reimageAll":
            action = "reimage"
        canonical = lifecycle.find_action(action).api_name
        answer = service.instance_action(name, canonical, ids, flag("skipShutdown", skip_shutdown))
        kind = OpKind.INSTANCES_DELETE if canonical == "delete" else OpKind.INSTANCES
        lro(request, response, kind, name, instanceIds=answer.get("instanceIds", []))
        return None

    # -- scale-set VMs --------------------------------------------------------------------------
    @compute.get(SET_VMS)
    def list_set_vms(group: str, name: str) -> dict[str, Any]:
        service.check_group(name, group)
        return {"value": service.list_instances(name)}

    @compute.get(ONE_SET_VM)
    def get_set_vm(
        group: str, name: str, instance_id: str, expand: str | None = Query(None, alias="$expand")
    ) -> dict[str, Any]:
        service.check_group(name, group)
        if expand is not None and expand.lower() == "instanceview":
            view = service.get_instance(name, instance_id)
            view["properties"]["instanceView"] = service.instance_view(name, instance_id)
            return view
        return service.get_instance(name, instance_id)

    @compute.put(ONE_SET_VM, openapi_extra=documented_body(ArmVmUpdate))
    def put_set_vm(
        group: str,
        name: str,
        instance_id: str,
        request: Request,
        response: Response,
        body: Any = Body(...),
    ) -> Any:
        """An instance's update: its protectionPolicy (the only per-instance setting of a Uniform set)."""
        service.check_group(name, group)
        policy = ((body or {}).get("properties") or {}).get("protectionPolicy") if isinstance(body, dict) else None
        if not isinstance(policy, dict):
            raise InvalidSpec("an instance update takes properties.protectionPolicy {protectFromScaleIn, ...}")
        view = service.set_protection(
            name, instance_id, policy.get("protectFromScaleIn"), policy.get("protectFromScaleSetActions")
        )
        lro(request, response, OpKind.INSTANCES, name, instanceIds=[instance_id])
        return view

    @compute.delete(ONE_SET_VM, status_code=202)
    def delete_set_vm(group: str, name: str, instance_id: str, request: Request, response: Response) -> None:
        service.check_group(name, group)
        service.delete_instances(name, [instance_id])
        lro(request, response, OpKind.INSTANCES_DELETE, name, instanceIds=[instance_id])

    @compute.get(ONE_SET_VM + "/instanceView")
    def set_vm_instance_view(group: str, name: str, instance_id: str) -> dict[str, Any]:
        service.check_group(name, group)
        return service.instance_view(name, instance_id)

    @compute.post(ONE_SET_VM + "/runCommand", openapi_extra=documented_body(ArmRunCommand))
    def set_vm_run_command(group: str, name: str, instance_id: str, body: Any = Body(...)) -> dict[str, Any]:
        service.check_group(name, group)
        return service.run_command(name, instance_id, body)

    @compute.post(ONE_SET_VM + "/{action}", status_code=202)
    def set_vm_action(
        group: str,
        name: str,
        instance_id: str,
        action: str,
        request: Request,
        response: Response,
        skip_shutdown: str | None = Query(None, alias="skipShutdown"),
    ) -> None:
        service.check_group(name, group)
        canonical = lifecycle.find_action(action).api_name
        answer = service.instance_action(name, canonical, [instance_id], flag("skipShutdown", skip_shutdown))
        kind = OpKind.INSTANCES_DELETE if canonical == "delete" else OpKind.INSTANCES
        lro(request, response, kind, name, instanceIds=answer.get("instanceIds", [instance_id]))

    # -- Flexible members: Microsoft.Compute/virtualMachines -----------------------------------
    def vm_in_group(group: str, vm_name: str) -> None:
        service.get_group(group)
        if service.group_of_vm(vm_name).lower() != group.lower():
            resource = f"Microsoft.Compute/virtualMachines/{vm_name}"
            raise NotFound(f"The Resource '{resource}' under resource group '{group}' was not found.")

    @compute.get(VMS)
    def list_vms(group: str) -> dict[str, Any]:
        service.get_group(group)
        return {"value": [v for v in service.list_vms() if service.group_of_vm(v["name"]).lower() == group.lower()]}

    @compute.put(ONE_VM, status_code=201, openapi_extra=documented_body(ArmVirtualMachine))
    def put_vm(group: str, vm_name: str, request: Request, response: Response, body: Any = Body(...)) -> Any:
        service.get_group(group)
        service.check_uniform_instance_via_vm_api(vm_name)
        set_name = service.scale_set_named_by_vm_body(body)
        service.check_group(set_name, group)
        view = service.put_vm(vm_name, body)
        lro(request, response, OpKind.VM_PUT, set_name, vmName=vm_name)
        return view

    @compute.get(ONE_VM)
    def get_vm(group: str, vm_name: str) -> dict[str, Any]:
        vm_in_group(group, vm_name)
        return service.get_vm(vm_name)

    @compute.get(ONE_VM + "/instanceView")
    def vm_instance_view(group: str, vm_name: str) -> dict[str, Any]:
        vm_in_group(group, vm_name)
        return dict(service.get_vm(vm_name)["properties"]["instanceView"])

    @compute.delete(ONE_VM, status_code=202)
    def delete_vm(group: str, vm_name: str, request: Request, response: Response) -> None:
        vm_in_group(group, vm_name)
        set_name = service.get_vm(vm_name)["properties"]["virtualMachineScaleSet"]["id"].rpartition("/")[2]
        service.vm_action(vm_name, "delete")
        lro(request, response, OpKind.VM_DELETE, set_name, vmName=vm_name)

    @compute.post(ONE_VM + "/{action}", status_code=202)
    def vm_action(
        group: str,
        vm_name: str,
        action: str,
        request: Request,
        response: Response,
        skip_shutdown: str | None = Query(None, alias="skipShutdown"),
    ) -> None:
        vm_in_group(group, vm_name)
        canonical = lifecycle.find_action(action).api_name
        view = service.get_vm(vm_name)
        service.vm_action(vm_name, canonical, flag("skipShutdown", skip_shutdown))
        set_name = view["properties"]["virtualMachineScaleSet"]["id"].rpartition("/")[2]
        if canonical == "delete":
            lro(request, response, OpKind.VM_DELETE, set_name, vmName=vm_name)
        else:
            lro(request, response, OpKind.INSTANCES, set_name, instanceIds=[view["instanceId"]])

    # -- SKUs ----------------------------------------------------------------------------------
    @compute.get(SUB + "/providers/Microsoft.Compute/skus")
    def skus() -> dict[str, Any]:
        return {"value": service.list_skus()}

    # -- operations ------------------------------------------------------------------------------
    @compute.get(OPERATIONS + "/operations/{op_id}")
    def operation_status(location: str, op_id: str, response: Response) -> dict[str, Any]:
        status = service.operation(op_id)
        if status["status"] == "InProgress":
            response.headers["Retry-After"] = RETRY_AFTER_S  # pollers wait this long, not their default 30 s
        return status

    @compute.get(OPERATIONS + "/operationResults/{op_id}", responses=RUNNING)
    def operation_result(location: str, op_id: str, request: Request, response: Response) -> Any:
        """ARM's Location: 202 while the operation runs, then 200 (or its error, once failed)."""
        status = service.operation(op_id)
        if status["status"] == "InProgress":
            response.status_code = 202
            response.headers["Location"] = str(request.url)
            response.headers["Retry-After"] = RETRY_AFTER_S
            return None
        if status["status"] == "Failed":
            response.status_code = 200
        return status

    # -- autoscale settings (Microsoft.Insights) ----------------------------------------------------
    @insights.get(AUTOSCALE)
    def list_autoscale(group: str) -> dict[str, Any]:
        service.get_group(group)
        return {"value": service.list_autoscale_resources(group)}

    @insights.put(
        AUTOSCALE + "/{setting}",
        status_code=200,
        responses=CREATED,
        openapi_extra=documented_body(ArmAutoscaleSetting),
    )
    def put_autoscale(group: str, setting: str, response: Response, body: Any = Body(...)) -> Any:
        service.get_group(group)
        view, created = service.put_autoscale_resource(group, setting, body)
        response.status_code = 201 if created else 200
        return view

    @insights.patch(AUTOSCALE + "/{setting}", openapi_extra=documented_body(ArmAutoscaleSettingUpdate))
    def patch_autoscale(group: str, setting: str, body: Any = Body(...)) -> Any:
        service.get_group(group)
        return service.patch_autoscale_resource(group, setting, body)

    @insights.get(AUTOSCALE + "/{setting}")
    def get_autoscale(group: str, setting: str) -> dict[str, Any]:
        service.get_group(group)
        return service.get_autoscale_resource(group, setting)

    @insights.delete(AUTOSCALE + "/{setting}", status_code=200)
    def delete_autoscale(group: str, setting: str) -> None:
        service.get_group(group)
        service.delete_autoscale_resource(group, setting)

    app.include_router(resources)
    app.include_router(compute)
    app.include_router(insights)


def _merged_update(current: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """A PATCH as the whole PUT body it means (ARM's update semantics): the set as it is, the
    given ``properties`` laid over its model, ``sku`` and ``tags`` over its own; other fields
    pass on, to be kept and named as a PUT's are."""

    def over(base: Any, patch: Any) -> Any:
        if isinstance(base, dict) and isinstance(patch, dict):
            return {**base, **{k: over(base.get(k), v) for k, v in patch.items()}}
        return patch

    props = without_computed(over(current.get("properties") or {}, body.get("properties") or {}))
    out = {k: v for k, v in body.items() if k not in ("sku", "properties", "tags")}
    out["sku"] = over({"name": current["sku"]["name"], "capacity": current["sku"]["capacity"]}, body.get("sku") or {})
    out["tags"] = body.get("tags", current.get("tags") or {})
    out["properties"] = props
    if current.get("zones"):
        out["zones"] = current["zones"]
    return out


def _all(service: Service, name: str) -> list[str]:
    return [v["instanceId"] for v in service.list_instances(name)]
