"""Schemathesis over the whole OpenAPI document, in-process, over the real ``Service``.

Every operation gets generated requests (positive and negative, from the typed body schemas)
against a store seeded with a resource group, a Uniform set with instances, a Flexible set
with a VM, an autoscale setting and an operation, so that paths naming something often hit
it. Each answer is checked: no 5xx, its status code documented, its body what the document
says (every refusal Azure's one-line error), and a refused request (4xx) changed nothing in
the store (a whole snapshot before and after). Derandomized, a bounded number of examples.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from localvmss import lifecycle
from localvmss.api import arm
from localvmss.api.app import create_app
from localvmss.operations import OpKind
from tests.unit.servicefake import (
    Harness,
    add_instances,
    api_client,
    attach_autoscaler,
    make_service,
    snapshot,
    uniform_body,
)

GROUP = "rg1"
EXAMPLES = 6  # per operation and generation mode: ~85 operations


def _seeded(tmp: Path) -> Harness:
    h = make_service(tmp)
    attach_autoscaler(h)
    h.service.put_group(GROUP, {"location": h.service.cfg.location})
    h.service.put_set("web", uniform_body(2), group=GROUP)
    add_instances(h.store, "web", 2)
    h.service.put_set("flex", {"properties": {"orchestrationMode": "Flexible"}}, group=GROUP)
    vm = {
        "properties": {
            "virtualMachineScaleSet": {"id": "/scaleSets/flex"},
            "storageProfile": {"imageReference": {"id": "base"}},
        }
    }
    h.service.put_vm("flex-vm1", vm)
    h.service.put_autoscale("web", _autoscale_setting())
    return h


def _autoscale_setting() -> dict[str, Any]:
    return {
        "enabled": True,
        "profiles": [{"name": "default", "capacity": {"minimum": "1", "maximum": "4", "default": "2"}, "rules": []}],
    }


def _known(h: Harness) -> dict[str, list[str]]:
    """Values of path parameters that name something in the seeded store."""
    cfg = h.service.cfg
    op = h.service.begin_operation(OpKind.SET_PUT, "web")
    actions = [a.api_name for a in lifecycle.ACTIONS] + ["manualUpgrade", "osRollingUpgrade"]
    actions += ["setOrchestrationServiceState", "reimageAll"]
    return {
        "subscription": [cfg.subscription_id],
        "group": [GROUP],
        "name": ["web", "flex", "base", "h1"],
        "instance_id": ["0", "1"],
        "vm_name": ["flex-vm1"],
        "action": actions,
        "setting": ["web"],
        "location": [cfg.location],
        "op_id": [op.id],
    }


class _Dispatch:
    """The ASGI app schemathesis calls: the seeded harness's app, made by the fixture (the
    schema must exist when the module is collected, the harness only when the test runs)."""

    def __init__(self) -> None:
        self.app: Any = None
        self.harness: Harness | None = None
        self.known: dict[str, list[str]] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def _document() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        h = make_service(Path(tmp))
        try:
            return dict(create_app(h.service, token="t").openapi())
        finally:
            h.store.close()


TARGET = _Dispatch()
full_schema = schemathesis.openapi.from_dict(_document())
full_schema.app = TARGET
full_schema.config.generation.update(max_examples=EXAMPLES, deterministic=True)


@full_schema.hook
def flatmap_path_parameters(_context: Any, params: dict[str, Any] | None) -> st.SearchStrategy:
    """As generated, or with every path parameter naming something that exists."""
    if not params:
        return st.just(params)
    known = {k: st.sampled_from(TARGET.known[k]) for k in params if k in TARGET.known}
    # The seeded names first: hypothesis leans to the first choice, so they are hit often.
    return st.one_of(st.fixed_dictionaries({**{k: st.just(v) for k, v in params.items()}, **known}), st.just(params))


@full_schema.hook
def flatmap_query(context: Any, query: dict[str, Any] | None) -> st.SearchStrategy:
    """As generated, or with the api-version its provider takes and the seeded group (or none)."""
    query = query or {}
    fixed = dict(query)
    if "api-version" in fixed:
        path = context.operation.path
        provider = next((p for p in arm.API_VERSIONS if p in path), "Microsoft.Resources")
        fixed["api-version"] = arm.API_VERSIONS[provider][-1]
    if "resourceGroup" not in fixed:
        return st.sampled_from([fixed, query])
    ungrouped = {k: v for k, v in fixed.items() if k != "resourceGroup"}
    return st.sampled_from([ungrouped, {**fixed, "resourceGroup": GROUP}, query])


# run-command connects to the instance over SSH (nothing listens in-process); its validation
# is covered by tests/unit/test_api_guard.py and the e2e tests.
schema = full_schema.exclude(path_regex=r"/runCommand$")


@pytest.fixture
def fuzz_harness(tmp_path: Path) -> Harness:
    """A freshly seeded store for each operation (a DELETE does not empty the next one's)."""
    h = _seeded(tmp_path)
    TARGET.app = create_app(h.service, token="t")
    TARGET.harness = h
    TARGET.known = _known(h)
    return h


@schema.parametrize()
@settings(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_are_answered_as_documented(case: Any, fuzz_harness: Harness) -> None:
    h = fuzz_harness
    before = snapshot(h.store)
    response = case.call(headers={"Authorization": "Bearer t"})
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
    case.validate_response(
        response,
        checks=[status_code_conformance, content_type_conformance, response_schema_conformance],
        headers={"Authorization": "Bearer t"},
    )
    if 400 <= response.status_code < 500:
        if case.method != "HEAD":
            error = response.json()["error"]
            assert "\n" not in error["message"], error
        assert snapshot(h.store) == before, f"{case.method} {case.formatted_path} was refused but changed the store"


def test_the_document_types_every_body_and_documents_every_refusal(tmp_path: Path) -> None:
    """Every route that reads a body publishes its schema; every operation documents 400, 404,
    409 and 503 with Azure's error body, and never FastAPI's 422 (this API answers 400)."""
    doc = api_client(make_service(tmp_path)).get("/openapi.json").json()
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            answers = operation["responses"]
            assert "422" not in answers, (method, path)
            for status in ("400", "401", "404", "409", "413", "503"):
                schema_ref = answers[status]["content"]["application/json"]["schema"]["$ref"]
                assert schema_ref == "#/components/schemas/ErrorResponse", (method, path, status)
            body = operation.get("requestBody")
            if body is not None:
                assert "$ref" in body["content"]["application/json"]["schema"], (method, path)
    error = doc["components"]["schemas"]["ErrorDetail"]
    assert set(error["properties"]) == {"code", "message", "target", "details"}
    bodiless = {
        (m, p)
        for p, ops in doc["paths"].items()
        for m, op in ops.items()
        if m in ("put", "patch") and "requestBody" not in op
    }
    assert bodiless == set(), bodiless


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        # answered 500 ('bool' object has no attribute 'get') before the fix
        ("PATCH", "/scaleSets/web/virtualMachines/0", {"properties": True}),
        # answered a two-line message (the subscription's newline quoted) before the fix
        ("GET", "/subscriptions/%0A/resourceGroups?api-version=2024-11-01", None),
    ],
)
def test_requests_the_fuzzer_found(tmp_path: Path, method: str, path: str, payload: Any) -> None:
    h = _seeded(tmp_path)
    before = snapshot(h.store)
    resp = api_client(h).request(method, path, json=payload)
    assert 400 <= resp.status_code < 500, resp.text
    assert "\n" not in resp.json()["error"]["message"]
    assert snapshot(h.store) == before
