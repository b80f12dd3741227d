"""The REST API (FastAPI; OpenAPI at /openapi.json) with Azure-shaped JSON.

Routes only translate HTTP to ``Service`` calls; every error is a ``LocalVMSSError`` answered
as ``{"error": {"code", "message"}}`` with its HTTP status. Requests arriving over TCP must carry
the configured bearer token; the unix socket is protected by its file mode instead.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Body, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from localvmss import __version__
from localvmss.errors import InvalidSpec, LocalVMSSError, NotFound
from localvmss.service import Service

ACTIONS = {"start", "powerOff", "deallocate", "restart", "reimage", "delete"}


def create_app(service: Service, token: str | None = None, extras: Any = None) -> FastAPI:
    app = FastAPI(
        title="localvmss",
        version=__version__,
        description="Azure-style virtual machine scale sets on libvirt/QEMU hosts.",
    )

    @app.exception_handler(LocalVMSSError)
    async def _project_error(_req: Request, exc: LocalVMSSError) -> JSONResponse:
        return JSONResponse(exc.to_json(), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_req: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": ["body"], "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", []))
        if tuple(first.get("loc", ())) == ("body",):
            message = "request body must be a JSON object"
        else:
            message = f"invalid request at {where}: {first.get('msg')}"
        return JSONResponse(InvalidSpec(message).to_json(), status_code=400)

    @app.middleware("http")
    async def _auth(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        client = request.scope.get("client")
        over_tcp = bool(client and client[0])
        if over_tcp:
            header = request.headers.get("authorization", "")
            if not token or not hmac.compare_digest(header, f"Bearer {token}"):
                return JSONResponse(
                    {"error": {"code": "Unauthorized", "message": "a valid bearer token is required over TCP"}},
                    status_code=401,
                )
        return await call_next(request)

    # -- daemon -------------------------------------------------------------------------------
    @app.get("/healthz", tags=["daemon"])
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    # -- scale sets ---------------------------------------------------------------------------
    @app.get("/scaleSets", tags=["scaleSets"])
    def list_sets() -> dict[str, Any]:
        return {"value": service.list_sets()}

    @app.put("/scaleSets/{name}", tags=["scaleSets"], status_code=200)
    def put_set(name: str, request: Request, response: Response, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        # PUT is create-or-update, as in Azure; "If-None-Match: *" makes it create-only.
        view, created = service.put_set(name, body, create_only=request.headers.get("if-none-match") == "*")
        response.status_code = 201 if created else 200
        return view

    @app.get("/scaleSets/{name}", tags=["scaleSets"])
    def get_set(name: str) -> dict[str, Any]:
        return service.get_set(name)

    @app.patch("/scaleSets/{name}", tags=["scaleSets"])
    def patch_set(name: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        unknown = set(body) - {"sku"}
        sku = body.get("sku")
        if unknown or not isinstance(sku, dict) or set(sku) - {"capacity"} or "capacity" not in sku:
            raise InvalidSpec('PATCH takes {"sku": {"capacity": N}}; use PUT to change the model')
        return service.set_capacity(name, sku["capacity"])

    @app.delete("/scaleSets/{name}", tags=["scaleSets"], status_code=202)
    def delete_set(name: str) -> dict[str, Any]:
        service.delete_set(name)
        return {"status": "Accepted"}

    @app.get("/scaleSets/{name}/virtualMachines", tags=["instances"])
    def list_instances(name: str) -> dict[str, Any]:
        return {"value": service.list_instances(name)}

    @app.get("/scaleSets/{name}/virtualMachines/{instance_id}", tags=["instances"])
    def get_instance(name: str, instance_id: str) -> dict[str, Any]:
        return service.get_instance(name, instance_id)

    @app.patch("/scaleSets/{name}/virtualMachines/{instance_id}", tags=["instances"])
    def patch_instance(name: str, instance_id: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        policy = (body.get("properties") or {}).get("protectionPolicy")
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

    @app.delete("/scaleSets/{name}/virtualMachines/{instance_id}", tags=["instances"], status_code=202)
    def delete_instance(name: str, instance_id: str) -> dict[str, Any]:
        return service.delete_instances(name, [instance_id])

    @app.get("/scaleSets/{name}/virtualMachines/{instance_id}/instanceView", tags=["instances"])
    def instance_view(name: str, instance_id: str) -> dict[str, Any]:
        return service.instance_view(name, instance_id)

    @app.post("/scaleSets/{name}/virtualMachines/{instance_id}/runCommand", tags=["instances"])
    def run_command(name: str, instance_id: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return service.run_command(name, instance_id, body)

    @app.post("/scaleSets/{name}/virtualMachines/{instance_id}/{action}", tags=["instances"], status_code=202)
    def instance_action(
        name: str,
        instance_id: str,
        action: str,
        skipShutdown: str | None = None,  # noqa: N803 (Azure's name)
    ) -> dict[str, Any]:
        _check_action(action)
        skip = _flag("skipShutdown", skipShutdown)
        return service.instance_action(name, action, [instance_id], skip)

    @app.post("/scaleSets/{name}/manualUpgrade", tags=["scaleSets"], status_code=202)
    def manual_upgrade(name: str, body: dict[str, Any] = Body(default={})) -> dict[str, Any]:
        return service.update_instances(name, _instance_ids(body))

    @app.post("/scaleSets/{name}/{action}", tags=["scaleSets"], status_code=202)
    def set_action(
        name: str,
        action: str,
        body: dict[str, Any] = Body(default={}),
        skipShutdown: str | None = None,  # noqa: N803 (Azure's name)
    ) -> dict[str, Any]:
        _check_action(action)
        skip = _flag("skipShutdown", skipShutdown)
        return service.instance_action(name, action, _instance_ids(body), skip)

    @app.put("/scaleSets/{name}/autoscale", tags=["autoscale"])
    def put_autoscale(name: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return service.put_autoscale(name, body)

    @app.get("/scaleSets/{name}/autoscale", tags=["autoscale"])
    def get_autoscale(name: str) -> dict[str, Any]:
        return service.get_autoscale(name)

    @app.delete("/scaleSets/{name}/autoscale", tags=["autoscale"])
    def delete_autoscale(name: str) -> dict[str, Any]:
        service.delete_autoscale(name)
        return {"status": "Deleted"}

    @app.post("/scaleSets/{name}/autoscale/simulate", tags=["autoscale"])
    def simulate_autoscale(name: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return {"value": service.simulate_autoscale(name, body)}

    @app.get("/scaleSets/{name}/activityLog", tags=["scaleSets"])
    def activity(name: str) -> dict[str, Any]:
        return {"value": service.activity(name)}

    # -- Flexible mode VMs ----------------------------------------------------------------------
    @app.get("/virtualMachines", tags=["virtualMachines"])
    def list_vms() -> dict[str, Any]:
        return {"value": service.list_vms()}

    @app.put("/virtualMachines/{vm_name}", tags=["virtualMachines"], status_code=201)
    def put_vm(vm_name: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        service.check_uniform_instance_via_vm_api(vm_name)
        return service.put_vm(vm_name, body)

    @app.get("/virtualMachines/{vm_name}", tags=["virtualMachines"])
    def get_vm(vm_name: str) -> dict[str, Any]:
        try:
            return service.get_vm(vm_name)
        except NotFound:
            service.check_uniform_instance_via_vm_api(vm_name)
            raise

    @app.delete("/virtualMachines/{vm_name}", tags=["virtualMachines"], status_code=202)
    def delete_vm(vm_name: str) -> dict[str, Any]:
        service.check_uniform_instance_via_vm_api(vm_name)
        return service.vm_action(vm_name, "delete")

    @app.post("/virtualMachines/{vm_name}/{action}", tags=["virtualMachines"], status_code=202)
    def vm_action(
        vm_name: str,
        action: str,
        skipShutdown: str | None = None,  # noqa: N803 (Azure's name)
    ) -> dict[str, Any]:
        _check_action(action)
        skip = _flag("skipShutdown", skipShutdown)
        service.check_uniform_instance_via_vm_api(vm_name)
        return service.vm_action(vm_name, action, skip)

    # -- images and hosts -----------------------------------------------------------------------
    @app.get("/images", tags=["images"])
    def list_images() -> dict[str, Any]:
        return {"value": service.list_images()}

    @app.put("/images/{name}", tags=["images"])
    def import_image(name: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        source = body.get("sourceDirectory")
        if not isinstance(source, str) or set(body) - {"sourceDirectory"}:
            raise InvalidSpec('PUT /images/{name} takes {"sourceDirectory": "/absolute/path"}')
        return service.import_image(name, source)

    @app.post("/loadBalancer/reload", tags=["loadBalancer"])
    def reload_lb() -> dict[str, Any]:
        return service.reload_load_balancer()

    @app.put("/hosts/{name}", tags=["hosts"])
    def add_host(name: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return service.add_host(name, body)

    @app.delete("/hosts/{name}", tags=["hosts"])
    def remove_host(name: str) -> dict[str, Any]:
        service.remove_host(name)
        return {"status": "Deleted"}

    @app.get("/hosts", tags=["hosts"])
    def list_hosts() -> dict[str, Any]:
        return {"value": service.list_hosts()}

    if extras is not None:
        extras(app)
    return app


def _check_action(action: str) -> None:
    if action not in ACTIONS:
        raise NotFound(f"no action {action!r}; actions are {', '.join(sorted(ACTIONS))}")


def _flag(name: str, value: str | None) -> bool:
    """Azure's boolean query parameters: true or false, nothing else."""
    if value is None or value.lower() == "false":
        return False
    if value.lower() == "true":
        return True
    raise InvalidSpec(f"{name} must be true or false, not {value!r}")


def _instance_ids(body: dict[str, Any]) -> list[str] | None:
    if set(body) - {"instanceIds"}:
        raise InvalidSpec('the body takes only {"instanceIds": [...]}')
    ids = body.get("instanceIds")
    if ids is None:
        return None
    if not isinstance(ids, list) or not all(isinstance(i, str | int) for i in ids):
        raise InvalidSpec("instanceIds must be a list of instance ids")
    return [str(i) for i in ids]
