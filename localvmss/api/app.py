"""The REST API (FastAPI; OpenAPI at /openapi.json) with Azure-shaped JSON.

Routes only translate HTTP to ``Service`` calls; every error is a ``LocalVMSSError`` answered
as ``{"error": {"code", "message"}}`` with its HTTP status. Requests arriving over TCP must carry
the configured bearer token; the unix socket is protected by its file mode instead. Which of the
two a request came through is read from the listening socket (``scope["server"]``: a unix socket
has no port), never from anything the client sends: proxy headers rewrite ``scope["client"]``.
Every request body is limited to MAX_BODY_BYTES, chunked ones included. Every refused request
is logged once (``log_refused``: method, path, status and the reason the client was given).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import Body, Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from localvmss import __version__, lifecycle
from localvmss.api import arm
from localvmss.api.models import (
    ANSWERED,
    CREATED,
    ArmInstanceIds,
    ArmResourceGroup,
    ArmRunCommand,
    ArmScaleSet,
    ArmVirtualMachine,
    ArmVmUpdate,
    AutoscaleSetting,
    AutoscaleSimulation,
    HostAdd,
    ImageImport,
    OrchestrationServiceState,
    ScaleSetCapacityUpdate,
    StandbyPoolPolicy,
    documented_body,
    publish_schemas,
)
from localvmss.api.params import actor, flag, instance_ids
from localvmss.errors import InvalidSpec, LocalVMSSError, NotFound
from localvmss.service import Service

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20  # customData (64 KiB decoded) and autoscale settings fit many times over

# How the daemon must run uvicorn: no proxy headers (nothing may tell us who the client is).
UVICORN_OPTIONS: dict[str, Any] = {"proxy_headers": False, "forwarded_allow_ips": ""}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def over_tcp(scope: Scope) -> bool:
    """True unless the request came through a unix socket. uvicorn sets ``server`` from the
    listening socket itself: None or (path, None) for a unix socket, (address, port) for TCP.
    Anything else counts as TCP, so the token is required when in doubt."""
    server = scope.get("server")
    if server is None:
        return False
    return not (isinstance(server, list | tuple) and len(server) == 2 and server[1] is None)


def token_matches(scope: Scope, token: str | None) -> bool:
    """Exactly one ``Authorization: Bearer <token>`` header, compared as bytes in constant time
    (a header that is not ASCII must be refused, not raise)."""
    if not token:
        return False
    given = [value for name, value in scope.get("headers", []) if name.lower() == b"authorization"]
    return len(given) == 1 and hmac.compare_digest(bytes(given[0]), f"Bearer {token}".encode())


def log_refused(method: str, path: str, status: int, code: str, reason: str) -> None:
    """Every refused request, once, with its reason (a 5xx is the daemon's failure: WARNING).
    The path is the client's (percent-decoded): control characters are escaped, so a request
    cannot start a log line of its own."""
    level = logging.INFO if status < 500 else logging.WARNING
    path, reason = _printable(path), _printable(reason)
    fields = {"method": method, "path": path, "status": status, "code": code, "reason": reason}
    log.log(level, "refused %s %s: %d %s: %s", method, path, status, code, reason, extra=fields)


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _refused(req: Request, status: int, body: dict[str, Any]) -> JSONResponse:
    error = body["error"]
    # One line whatever the client sent: a message quoting a name with a newline in it (a path
    # segment "%0A") must not answer two.
    error["message"] = _printable(str(error["message"]))
    log_refused(req.method, req.url.path, status, error["code"], error["message"])
    return JSONResponse(body, status_code=status)


async def _answer(scope: Scope, send: Send, status: int, code: str, message: str) -> None:
    log_refused(scope.get("method", ""), scope.get("path", ""), status, code, message)
    body = JSONResponse({"error": {"code": code, "message": message}}).body
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """Runs before any route: the token over TCP, then the body size. The body is read here
    whole (at most ``max_body`` bytes, whatever Content-Length said or chunking hid) and handed
    on, so no route ever sees a larger one."""

    def __init__(self, app: ASGIApp, token: str | None = None, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.token = token
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if over_tcp(scope) and not token_matches(scope, self.token):
            await _answer(scope, send, 401, "Unauthorized", "a valid bearer token is required over TCP")
            return
        too_large = f"request body is larger than {self.max_body} bytes; nothing was changed"
        for name, value in scope.get("headers", []):
            if name.lower() == b"content-length":
                if not value.isdigit():
                    await _answer(scope, send, 400, "InvalidParameter", "Content-Length must be a number of bytes")
                    return
                if int(value) > self.max_body:
                    await _answer(scope, send, 413, "RequestEntityTooLarge", too_large)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before its body was complete
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _answer(scope, send, 413, "RequestEntityTooLarge", too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def create_app(service: Service, token: str | None = None, extras: Any = None) -> FastAPI:
    app = FastAPI(
        title="localvmss",
        version=__version__,
        description="Azure-style virtual machine scale sets on libvirt/QEMU hosts.",
    )

    @app.exception_handler(LocalVMSSError)
    async def _project_error(req: Request, exc: LocalVMSSError) -> JSONResponse:
        return _refused(req, exc.http_status, exc.to_json())

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(req: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Starlette's own refusals (no such route, wrong method, a body that is not JSON) in
        the same Azure shape as every other error, one line."""
        code = {400: "InvalidParameter", 404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        message = " ".join(str(exc.detail).split()) or f"HTTP {exc.status_code}"
        return _refused(req, exc.status_code, {"error": {"code": code, "message": message}})

    @app.exception_handler(RequestValidationError)
    async def _bad_request(req: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": ["body"], "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", []))
        if tuple(first.get("loc", ())) == ("body",):
            message = "request body must be a JSON object"
        else:
            message = f"invalid request at {where}: {first.get('msg')}"
        return _refused(req, 400, InvalidSpec(message).to_json())

    app.add_middleware(arm.CaseInsensitivePaths)
    app.add_middleware(RequestGuard, token=token)

    def in_group(request: Request, resource_group: str | None = Query(None, alias="resourceGroup")) -> str | None:
        """``?resourceGroup=``: the set (or VM) a short path names must be in that group, as an
        ARM path would require; PUT creates the set there."""
        if resource_group is None:
            return None
        name = request.path_params.get("name")
        vm_name = request.path_params.get("vm_name")
        if name is not None and request.method != "PUT":
            service.check_group(name, resource_group)
        elif vm_name is not None and request.method != "PUT":
            service.get_group(resource_group)
            if service.group_of_vm(vm_name).lower() != resource_group.lower():
                raise NotFound(
                    f"The Resource 'Microsoft.Compute/virtualMachines/{vm_name}' under resource group "
                    f"'{resource_group}' was not found."
                )
        else:
            service.get_group(resource_group)
        return resource_group

    grouped = [Depends(in_group)]

    # -- daemon -------------------------------------------------------------------------------
    @app.get("/healthz", tags=["daemon"])
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    # -- scale sets ---------------------------------------------------------------------------
    @app.get("/scaleSets", dependencies=grouped, tags=["scaleSets"])
    def list_sets(resource_group: str | None = Query(None, alias="resourceGroup")) -> dict[str, Any]:
        sets = service.list_sets()
        if resource_group is not None:
            sets = [s for s in sets if s["resourceGroup"].lower() == resource_group.lower()]
        return {"value": sets}

    # -- resource groups and SKUs ---------------------------------------------------------------
    @app.get("/resourceGroups", tags=["resourceGroups"])
    def list_groups() -> dict[str, Any]:
        return {"value": service.list_groups()}

    @app.put(
        "/resourceGroups/{group}",
        tags=["resourceGroups"],
        responses=CREATED,
        openapi_extra=documented_body(ArmResourceGroup),
    )
    def put_group(group: str, response: Response, body: Any = Body(...)) -> dict[str, Any]:
        view, created = service.put_group(group, body)
        response.status_code = 201 if created else 200
        return view

    @app.get("/resourceGroups/{group}", tags=["resourceGroups"])
    def get_group(group: str) -> dict[str, Any]:
        return service.get_group(group)

    @app.delete("/resourceGroups/{group}", tags=["resourceGroups"])
    def delete_group(group: str) -> dict[str, Any]:
        service.delete_group(group)
        return {"status": "Deleted"}

    @app.get("/skus", tags=["scaleSets"])
    def list_skus() -> dict[str, Any]:
        """The VM sizes (az vmss list-skus), in the shape of Azure's resource SKUs."""
        return {"value": service.list_skus()}

    @app.put(
        "/scaleSets/{name}",
        dependencies=grouped,
        tags=["scaleSets"],
        status_code=200,
        responses=CREATED,
        openapi_extra=documented_body(ArmScaleSet, open_schema=False),
    )
    def put_set(
        name: str,
        request: Request,
        response: Response,
        body: Any = Body(...),
        resource_group: str | None = Query(None, alias="resourceGroup"),
    ) -> dict[str, Any]:
        # PUT is create-or-update, as in Azure; "If-None-Match: *" makes it create-only.
        view, created = service.put_set(
            name,
            body,
            create_only=request.headers.get("if-none-match") == "*",
            actor=actor(request),
            group=resource_group,
        )
        response.status_code = 201 if created else 200
        return view

    @app.get("/scaleSets/{name}", dependencies=grouped, tags=["scaleSets"])
    def get_set(name: str) -> dict[str, Any]:
        return service.get_set(name)

    @app.patch(
        "/scaleSets/{name}",
        dependencies=grouped,
        tags=["scaleSets"],
        openapi_extra=documented_body(ScaleSetCapacityUpdate, open_schema=False),
    )
    def patch_set(
        name: str,
        body: dict[str, Any] = Body(...),
        whatIf: str | None = Query(  # noqa: N803 (ARM's style)
            None, description="true: return the plan (what would be created or removed, and why); change nothing"
        ),
    ) -> dict[str, Any]:
        unknown = set(body) - {"sku"}
        sku = body.get("sku")
        if unknown or not isinstance(sku, dict) or set(sku) - {"capacity"} or "capacity" not in sku:
            raise InvalidSpec('PATCH takes {"sku": {"capacity": N}}; use PUT to change the model')
        if flag("whatIf", whatIf):
            return service.what_if_scale(name, sku["capacity"])
        return service.set_capacity(name, sku["capacity"])

    @app.delete("/scaleSets/{name}", dependencies=grouped, tags=["scaleSets"], status_code=202)
    def delete_set(name: str) -> dict[str, Any]:
        service.delete_set(name)
        return {"status": "Accepted"}

    @app.get("/scaleSets/{name}/virtualMachines", dependencies=grouped, tags=["instances"])
    def list_instances(name: str) -> dict[str, Any]:
        """The set's members (standby-pool instances are listed apart, under standbyPool)."""
        return {"value": service.list_instances(name)}

    @app.get("/scaleSets/{name}/standbyPool", dependencies=grouped, tags=["instances"])
    def standby_pool(name: str) -> dict[str, Any]:
        """The standby pool: policy, size and target, instances per state, and the instances."""
        return service.standby_pool(name)

    @app.put(
        "/scaleSets/{name}/standbyPool",
        dependencies=grouped,
        tags=["instances"],
        openapi_extra=documented_body(StandbyPoolPolicy, open_schema=False),
    )
    def put_standby_pool(name: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        """Attach or change the standby pool: {maxReadyCapacity, minReadyCapacity,
        virtualMachineState | vmStateDistribution, dynamicSizing, reuseOnScaleIn}."""
        return service.put_standby_pool(name, body)

    @app.delete("/scaleSets/{name}/standbyPool", dependencies=grouped, tags=["instances"], status_code=202)
    def delete_standby_pool(name: str) -> dict[str, Any]:
        service.delete_standby_pool(name)
        return {"status": "Accepted"}

    @app.get("/scaleSets/{name}/virtualMachines/{instance_id}", dependencies=grouped, tags=["instances"])
    def get_instance(name: str, instance_id: str) -> dict[str, Any]:
        return service.get_instance(name, instance_id)

    @app.patch(
        "/scaleSets/{name}/virtualMachines/{instance_id}",
        dependencies=grouped,
        tags=["instances"],
        openapi_extra=documented_body(ArmVmUpdate),
    )
    def patch_instance(name: str, instance_id: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        props = body.get("properties")
        policy = props.get("protectionPolicy") if isinstance(props, dict) else None
        if not isinstance(policy, dict) or set(policy) - {"protectFromScaleIn", "protectFromScaleSetActions"}:
            raise InvalidSpec(
                "PATCH of an instance takes properties.protectionPolicy "
                "{protectFromScaleIn, protectFromScaleSetActions}"
            )
        for key, value in policy.items():
            if not isinstance(value, bool):
                raise InvalidSpec(f"protectionPolicy.{key} must be true or false")
        return service.set_protection(
            name, instance_id, policy.get("protectFromScaleIn"), policy.get("protectFromScaleSetActions")
        )

    @app.delete(
        "/scaleSets/{name}/virtualMachines/{instance_id}", dependencies=grouped, tags=["instances"], status_code=202
    )
    def delete_instance(name: str, instance_id: str) -> dict[str, Any]:
        return service.delete_instances(name, [instance_id])

    @app.get("/scaleSets/{name}/virtualMachines/{instance_id}/instanceView", dependencies=grouped, tags=["instances"])
    def instance_view(name: str, instance_id: str) -> dict[str, Any]:
        return service.instance_view(name, instance_id)

    @app.post(
        "/scaleSets/{name}/virtualMachines/{instance_id}/runCommand",
        dependencies=grouped,
        tags=["instances"],
        openapi_extra=documented_body(ArmRunCommand),
    )
    def run_command(name: str, instance_id: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return service.run_command(name, instance_id, body)

    @app.post(
        "/scaleSets/{name}/virtualMachines/{instance_id}/{action}",
        dependencies=grouped,
        tags=["instances"],
        status_code=202,
    )
    def instance_action(
        name: str,
        instance_id: str,
        action: str,
        skipShutdown: str | None = None,  # noqa: N803 (Azure's name)
    ) -> dict[str, Any]:
        action = _check_action(action)
        skip = flag("skipShutdown", skipShutdown)
        return service.instance_action(name, action, [instance_id], skip)

    @app.get("/scaleSets/{name}/instanceView", dependencies=grouped, tags=["scaleSets"])
    def set_instance_view(name: str) -> dict[str, Any]:
        return service.set_instance_view(name)

    @app.post(
        "/scaleSets/{name}/setOrchestrationServiceState",
        dependencies=grouped,
        tags=["scaleSets"],
        status_code=200,
        openapi_extra=documented_body(OrchestrationServiceState, open_schema=False),
    )
    def set_orchestration_service_state(name: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return service.set_orchestration_service_state(name, body)

    @app.post(
        "/scaleSets/{name}/osRollingUpgrade",
        dependencies=grouped,
        tags=["rollingUpgrades"],
        status_code=202,
        responses=ANSWERED,
    )
    def start_rolling_upgrade(
        name: str,
        request: Request,
        response: Response,
        whatIf: str | None = Query(  # noqa: N803 (ARM's style)
            None, description="true: return the batches it would run, and why; change nothing"
        ),
    ) -> dict[str, Any]:
        if flag("whatIf", whatIf):
            response.status_code = 200
            return service.start_rolling_upgrade(name, what_if=True)
        return service.start_rolling_upgrade(name, actor=actor(request))

    @app.post(
        "/scaleSets/{name}/rollingUpgrades/cancel", dependencies=grouped, tags=["rollingUpgrades"], status_code=202
    )
    def cancel_rolling_upgrade(name: str, request: Request) -> dict[str, Any]:
        return service.cancel_rolling_upgrade(name, actor=actor(request))

    @app.get("/scaleSets/{name}/rollingUpgrades/latest", dependencies=grouped, tags=["rollingUpgrades"])
    def latest_rolling_upgrade(name: str) -> dict[str, Any]:
        return service.latest_rolling_upgrade(name)

    @app.get("/scaleSets/{name}/osUpgradeHistory", dependencies=grouped, tags=["rollingUpgrades"])
    def os_upgrade_history(name: str) -> dict[str, Any]:
        return service.os_upgrade_history(name)

    @app.post(
        "/scaleSets/{name}/manualUpgrade",
        dependencies=grouped,
        tags=["scaleSets"],
        status_code=202,
        openapi_extra=documented_body(ArmInstanceIds, False),
    )
    def manual_upgrade(name: str, body: dict[str, Any] = Body(default={})) -> dict[str, Any]:
        return service.update_instances(name, instance_ids(body))

    @app.post(
        "/scaleSets/{name}/{action}",
        dependencies=grouped,
        tags=["scaleSets"],
        status_code=202,
        openapi_extra=documented_body(ArmInstanceIds, False),
    )
    def set_action(
        name: str,
        action: str,
        body: dict[str, Any] = Body(default={}),
        skipShutdown: str | None = None,  # noqa: N803 (Azure's name)
    ) -> dict[str, Any]:
        action = _check_action(action)
        skip = flag("skipShutdown", skipShutdown)
        return service.instance_action(name, action, instance_ids(body), skip)

    @app.put(
        "/scaleSets/{name}/autoscale",
        dependencies=grouped,
        tags=["autoscale"],
        openapi_extra=documented_body(AutoscaleSetting),
    )
    def put_autoscale(name: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return service.put_autoscale(name, body)

    @app.get("/scaleSets/{name}/autoscale", dependencies=grouped, tags=["autoscale"])
    def get_autoscale(name: str) -> dict[str, Any]:
        return service.get_autoscale(name)

    @app.delete("/scaleSets/{name}/autoscale", dependencies=grouped, tags=["autoscale"])
    def delete_autoscale(name: str) -> dict[str, Any]:
        service.delete_autoscale(name)
        return {"status": "Deleted"}

    @app.post(
        "/scaleSets/{name}/autoscale/simulate",
        dependencies=grouped,
        tags=["autoscale"],
        openapi_extra=documented_body(AutoscaleSimulation),
    )
    def simulate_autoscale(name: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return {"value": service.simulate_autoscale(name, body)}

    @app.get("/scaleSets/{name}/activityLog", dependencies=grouped, tags=["scaleSets"])
    def activity(
        name: str,
        start_time: str | None = Query(None, alias="startTime", description="ISO-8601; UTC if no offset"),
        end_time: str | None = Query(None, alias="endTime", description="ISO-8601; UTC if no offset"),
        max_events: str | None = Query(None, alias="maxEvents", description="the newest N (default 200)"),
        instance_id: str | None = Query(None, alias="instanceId", description="entries naming this instance"),
        kind: str | None = Query(None, description="comma-separated kinds: scale,autoscale,repair,..."),
    ) -> dict[str, Any]:
        return {"value": service.activity(name, start_time, end_time, max_events, instance_id, kind)}

    @app.get("/scaleSets/{name}/instanceMetrics", dependencies=grouped, tags=["instances"])
    def instance_metrics(name: str) -> dict[str, Any]:
        """Power, health, CPU seconds, memory and load-balancer sessions of every instance."""
        return service.instance_metrics(name)

    @app.get("/scaleSets/{name}/virtualMachines/{instance_id}/bootLog", dependencies=grouped, tags=["bootDiagnostics"])
    def boot_log(name: str, instance_id: str) -> dict[str, Any]:
        """The serial console log since the instance's last start (az vmss boot-diagnostics get-boot-log)."""
        return service.boot_log(name, instance_id)

    # -- Flexible mode VMs ----------------------------------------------------------------------
    @app.get("/virtualMachines", dependencies=grouped, tags=["virtualMachines"])
    def list_vms() -> dict[str, Any]:
        return {"value": service.list_vms()}

    @app.put(
        "/virtualMachines/{vm_name}",
        dependencies=grouped,
        tags=["virtualMachines"],
        status_code=201,
        openapi_extra=documented_body(ArmVirtualMachine),
    )
    def put_vm(vm_name: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        service.check_uniform_instance_via_vm_api(vm_name)
        return service.put_vm(vm_name, body)

    @app.get("/virtualMachines/{vm_name}", dependencies=grouped, tags=["virtualMachines"])
    def get_vm(vm_name: str) -> dict[str, Any]:
        try:
            return service.get_vm(vm_name)
        except NotFound:
            service.check_uniform_instance_via_vm_api(vm_name)
            raise

    @app.delete("/virtualMachines/{vm_name}", dependencies=grouped, tags=["virtualMachines"], status_code=202)
    def delete_vm(vm_name: str) -> dict[str, Any]:
        service.check_uniform_instance_via_vm_api(vm_name)
        return service.vm_action(vm_name, "delete")

    @app.post("/virtualMachines/{vm_name}/{action}", dependencies=grouped, tags=["virtualMachines"], status_code=202)
    def vm_action(
        vm_name: str,
        action: str,
        skipShutdown: str | None = None,  # noqa: N803 (Azure's name)
    ) -> dict[str, Any]:
        action = _check_action(action)
        skip = flag("skipShutdown", skipShutdown)
        service.check_uniform_instance_via_vm_api(vm_name)
        return service.vm_action(vm_name, action, skip)

    # -- images and hosts -----------------------------------------------------------------------
    @app.get("/images", tags=["images"])
    def list_images() -> dict[str, Any]:
        return {"value": service.list_images()}

    @app.put("/images/{name}", tags=["images"], openapi_extra=documented_body(ImageImport, open_schema=False))
    def import_image(name: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        """An image directory ({"sourceDirectory": ...}) or a self-booting disk ({"sourceFile": ...})."""
        return service.import_image_body(name, body)

    @app.post("/loadBalancer/reload", tags=["loadBalancer"])
    def reload_lb() -> dict[str, Any]:
        return service.reload_load_balancer()

    @app.put("/hosts/{name}", tags=["hosts"], openapi_extra=documented_body(HostAdd, open_schema=False))
    def add_host(name: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return service.add_host(name, body)

    @app.delete("/hosts/{name}", tags=["hosts"])
    def remove_host(name: str) -> dict[str, Any]:
        service.remove_host(name)
        return {"status": "Deleted"}

    @app.get("/hosts", tags=["hosts"])
    def list_hosts() -> dict[str, Any]:
        return {"value": service.list_hosts()}

    arm.register(app, service)
    if extras is not None:
        extras(app)
    publish_schemas(app)
    return app


def _check_action(action: str) -> str:
    """The action's canonical name; path segments match case-insensitively, as ARM's do."""
    return lifecycle.find_action(action).api_name
