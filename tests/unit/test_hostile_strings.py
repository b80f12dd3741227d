"""Hostile strings through the API: each is refused with one line (400, nothing changed) or
stored and rendered harmlessly, checked by parsing what the real renderers write.

Names (set, Flexible VM, resource group, autoscale setting), customData, tags, probe paths, SSH
key comments and computerNamePrefix get control characters, quotes, XML and HAProxy
metacharacters, YAML syntax, Unicode and oversize values. What is accepted is rendered as the
daemon would render it: domain XML (ElementTree: the value is text or an attribute, no element
added), the NoCloud seed (pycdlib + YAML: meta-data holds the value verbatim, user-data is the
decoded customData byte for byte), haproxy.cfg (every line the same directive as with a plain
value: nothing broke a line or added one) and Prometheus's file_sd (JSON with the labels as
stored). Derandomized, a bounded number of examples.
"""

from __future__ import annotations

import base64
import io
import json
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pycdlib
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from localvmss.lb import spec as lbspec
from localvmss.lb.config import SetState, render_config
from localvmss.metrics.file_sd import render_file_sd
from localvmss.metrics.sources import guest_targets
from localvmss.provision import computer_name, os_volume, seed_volume
from localvmss.store import InstanceRow
from localvmss.virt.domainxml import InstanceDomain, Ownership, build_domain_xml, read_ownership
from localvmss.virt.seed import build_nocloud_seed
from tests.unit.servicefake import (
    Harness,
    SharedApi,
    attach_autoscaler,
    instance_row,
    make_service,
    snapshot,
)

CURATED = [
    "",
    " ",
    "a b",
    "a\nb",
    "a\r\nb",
    "\n",
    "x\x00y",
    "x\x1by",
    "tab\there",
    "it's",
    'say "hi"',
    "`id`",
    "$(id)",
    "<x/>",
    "</name><evil/>",
    "a&b",
    "&amp;",
    "]]>",
    "# comment",
    "a#b",
    "%[src]",
    "%{x}",
    "a\\b",
    "- item",
    "key: value",
    "{a: 1}",
    "[1]",
    "*anchor",
    "!!python/object",
    "名前",
    "é",
    "\u202eevil",
    "\u2028",
    "\ufeff",
    "\U0001f600",
    "web",
    "Web",
    "web-",
    "-web",
    "a" * 33,
    "a" * 300,
    "a" * 5000,
]
# Random strings on top of the curated ones, which every property tries each time (``curated``).
HOSTILE = st.one_of(st.text(max_size=24), st.text(min_size=200, max_size=400))


def curated(arg: str, **fixed: object) -> Any:
    """Every CURATED value as an explicit example of ``arg`` (others fixed): always run, whatever
    hypothesis draws besides."""

    def wrap(test: Any) -> Any:
        for value in CURATED:
            test = example(**{arg: value}, **fixed)(test)
        return test

    return wrap


SETTINGS = settings(
    max_examples=12,
    derandomize=True,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failing value is shown as found
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
KEY = (
    ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    .public_key()
    .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    .decode()
)
GROUP = "rg1"


_API = SharedApi()


@contextmanager
def service() -> Iterator[tuple[Harness, Any]]:
    """A fresh service per example (hypothesis runs many in one test)."""
    with tempfile.TemporaryDirectory() as tmp:
        h = make_service(Path(tmp))
        attach_autoscaler(h)
        h.service.put_group(GROUP, {})
        try:
            yield h, _API.client(h)
        finally:
            h.store.close()


def attempt(h: Harness, response_of: Any) -> Any:
    """The response if accepted; None if refused, after checking the refusal: 400, Azure's
    shape, one line, nothing changed."""
    before = snapshot(h.store)
    resp = response_of()
    assert resp.status_code < 500, resp.text
    if resp.status_code < 400:
        return resp
    # 404/405: a name that makes the path another route (or none), e.g. "a/b" or ".."
    assert resp.status_code in (400, 404, 405, 409), resp.text
    error = resp.json()["error"]
    assert {"code", "message"} <= set(error), error
    assert "\n" not in error["message"] and "\r" not in error["message"], error
    assert all(ch.isprintable() for ch in error["message"]), error
    assert snapshot(h.store) == before, "a refused request changed the store"
    return None


def body(
    *,
    prefix: str | None = None,
    keys: list[str] | None = None,
    custom_data: str | None = None,
    probe_path: str | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    os_profile: dict[str, Any] = {}
    if prefix is not None:
        os_profile["computerNamePrefix"] = prefix
    if keys is not None:
        os_profile["linuxConfiguration"] = {"ssh": {"publicKeys": [{"keyData": k} for k in keys]}}
    if custom_data is not None:
        os_profile["customData"] = custom_data
    vmp: dict[str, Any] = {"storageProfile": {"imageReference": {"id": "base"}}}
    if os_profile:
        vmp["osProfile"] = os_profile
    lb: dict[str, Any] = {"loadBalancingRules": [{"protocol": "Tcp", "frontendPort": 8081, "backendPort": 80}]}
    if probe_path is not None:
        lb["probes"] = [{"protocol": "Http", "requestPath": probe_path}]
    vmp["networkProfile"] = {"loadBalancer": lb}
    out: dict[str, Any] = {"sku": {"capacity": 1}, "properties": {"virtualMachineProfile": vmp}}
    if tags is not None:
        out["tags"] = tags
    return out


# -- rendering what was stored, as the daemon does --------------------------------------------
def instance_of(h: Harness, set_name: str, vm_name: str | None = None) -> InstanceRow:
    rows = h.store.instances(set_name)
    return rows[0] if rows else instance_row(set_name, 0, vm_name=vm_name)


def check_domain_xml(inst: InstanceRow) -> None:
    xml = build_domain_xml(
        InstanceDomain(
            name=inst.domain_name,
            domain_type="qemu",
            vcpus=1,
            memory_mib=256,
            pool="localvmss",
            os_volume=os_volume(inst),
            seed_volume=seed_volume(inst),
            network="default",
            mac=inst.mac,
            ownership=Ownership(inst.scale_set, inst.instance_id, inst.model_version, inst.fault_domain),
        )
    )
    root = ET.fromstring(xml)
    assert root.findtext("name") == inst.domain_name
    sources = [s.get("volume") for s in root.iter("source") if s.get("volume")]
    assert sources == [os_volume(inst), seed_volume(inst)]
    owner = read_ownership(xml)
    assert owner is not None and owner.scale_set == inst.scale_set
    plain = build_domain_xml(
        InstanceDomain("plain", "qemu", 1, 256, "pool", "o", "s", "default", inst.mac, ownership=Ownership("p", 0, 1))
    )
    tags = [e.tag for e in ET.fromstring(plain).iter()]
    assert [e.tag for e in root.iter()] == tags, "an element was added"


def read_seed(data: bytes) -> dict[str, bytes]:
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    files = {}
    for name in ("meta-data", "user-data"):
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
        files[name] = out.getvalue()
    return files


def check_seed(h: Harness, set_name: str, inst: InstanceRow) -> None:
    spec = h.store.scale_set(set_name).spec
    user_data = base64.b64decode(spec.custom_data, validate=True) if spec.custom_data else None
    hostname = computer_name(spec, inst)
    files = read_seed(build_nocloud_seed(inst.domain_name, hostname, list(spec.ssh_public_keys), user_data))
    meta = yaml.safe_load(files["meta-data"].decode())
    assert meta["instance-id"] == inst.domain_name and meta["local-hostname"] == hostname
    assert meta.get("public-keys", []) == list(spec.ssh_public_keys)
    assert files["user-data"] == (user_data if user_data is not None else b"#cloud-config\n")


def check_haproxy(h: Harness, set_name: str) -> None:
    spec = h.store.scale_set(set_name).spec
    if spec.load_balancer is None:
        return
    lb = lbspec.from_json(spec.load_balancer)
    members = (lbspec.Member(0, "198.18.1.10"),)

    def directives(text: str) -> list[str]:
        assert all(ch.isprintable() for line in text.splitlines() for ch in line), "a control character"
        return [line.split()[0] if line.split() else "" for line in text.splitlines()]

    text = render_config({set_name: SetState(lb, members)}, run_dir="/run/lvmss", stats_port=9000)
    plain_probe = lb.probe
    if lb.probe.protocol == "http":
        plain_probe = lbspec.HealthProbe(lb.probe.protocol, lb.probe.port, "/plain")
    plain = lbspec.LoadBalancerSpec(lb.rules, plain_probe, lb.nat_pool, lb.bind_address)
    expected = render_config({set_name: SetState(plain, members)}, run_dir="/run/lvmss", stats_port=9000)
    assert directives(text) == directives(expected), "the value broke a line or added a directive"
    if lb.probe.protocol == "http":
        assert sum(lb.probe.path in line.split() for line in text.splitlines()) >= 1


def check_file_sd(h: Harness, set_name: str, inst: InstanceRow) -> None:
    specs = {set_name: h.store.scale_set(set_name).spec}
    images = {name: manifest for name, (manifest, _src) in h.store.images().items()}
    parsed = json.loads(render_file_sd(guest_targets([inst], specs, images)))
    assert [t["labels"]["scale_set"] for t in parsed] == [set_name]


def check_rendered(h: Harness, set_name: str, vm_name: str | None = None) -> None:
    inst = instance_of(h, set_name, vm_name)
    check_domain_xml(inst)
    check_seed(h, set_name, inst)
    check_haproxy(h, set_name)
    check_file_sd(h, set_name, inst)


# -- the properties -----------------------------------------------------------------------------
@SETTINGS
@given(name=HOSTILE)
@example(name="web")
@curated("name")
def test_scale_set_names(name: str) -> None:
    with service() as (h, client):
        if attempt(h, lambda: client.put("/scaleSets/" + _segment(name), json=body())) is not None:
            check_rendered(h, name)


@SETTINGS
@given(name=HOSTILE)
@example(name="vm1")
@curated("name")
def test_flexible_vm_names(name: str) -> None:
    with service() as (h, client):
        h.service.put_set("flex", {"properties": {"orchestrationMode": "Flexible"}})
        vm = {
            "properties": {
                "virtualMachineScaleSet": {"id": "/scaleSets/flex"},
                "storageProfile": {"imageReference": {"id": "base"}},
            }
        }
        if attempt(h, lambda: client.put("/virtualMachines/" + _segment(name), json=vm)) is not None:
            check_rendered(h, "flex", name)


@SETTINGS
@given(name=HOSTILE)
@example(name="rg-2")
@curated("name")
def test_resource_group_names(name: str) -> None:
    with service() as (h, client):
        if attempt(h, lambda: client.put("/resourceGroups/" + _segment(name), json={"tags": {}})) is not None:
            got = client.get("/resourceGroups/" + _segment(name))
            assert got.status_code == 200 and got.json()["name"] == name


@SETTINGS
@given(name=HOSTILE)
@example(name="web-autoscale")
@curated("name")
def test_autoscale_setting_names(name: str) -> None:
    with service() as (h, client):
        h.service.put_set("web", body(), group=GROUP)
        setting = {
            "location": "local",
            "properties": {
                "targetResourceUri": "/subscriptions/x/resourceGroups/rg1/providers/Microsoft.Compute/"
                "virtualMachineScaleSets/web",
                "profiles": [{"name": "p", "capacity": {"minimum": "1", "maximum": "3", "default": "1"}, "rules": []}],
            },
        }
        sub = h.service.cfg.subscription_id
        path = f"/subscriptions/{sub}/resourceGroups/{GROUP}/providers/Microsoft.Insights/autoscalesettings/"
        query = "?api-version=2022-10-01"
        if attempt(h, lambda: client.put(path + _segment(name) + query, json=setting)) is not None:
            got = client.get(path + _segment(name) + query)
            assert got.status_code == 200 and got.json()["name"] == name


@SETTINGS
@given(prefix=HOSTILE)
@example(prefix="web")
@curated("prefix")
def test_computer_name_prefixes(prefix: str) -> None:
    with service() as (h, client):
        if attempt(h, lambda: client.put("/scaleSets/web", json=body(prefix=prefix))) is not None:
            check_rendered(h, "web")


@SETTINGS
@given(text=HOSTILE, encode=st.booleans())
@example(text="#!/bin/sh\necho 'hi' > /x\n", encode=True)
@curated("text", encode=True)
@curated("text", encode=False)
def test_custom_data(text: str, encode: bool) -> None:
    value = base64.b64encode(text.encode("utf-8", "surrogatepass")).decode() if encode else text
    with service() as (h, client):
        if attempt(h, lambda: client.put("/scaleSets/web", json=body(custom_data=value))) is not None:
            check_rendered(h, "web")


@SETTINGS
@given(path=HOSTILE)
@example(path="/healthz")
@curated("path")
def test_probe_paths(path: str) -> None:
    with service() as (h, client):
        if attempt(h, lambda: client.put("/scaleSets/web", json=body(probe_path=path))) is not None:
            check_rendered(h, "web")


@SETTINGS
@given(comment=HOSTILE, raw=st.booleans())
@example(comment="alice@laptop", raw=False)
@curated("comment", raw=False)
@curated("comment", raw=True)
def test_ssh_keys(comment: str, raw: bool) -> None:
    key = comment if raw else f"{KEY} {comment}"
    with service() as (h, client):
        if attempt(h, lambda: client.put("/scaleSets/web", json=body(keys=[key]))) is not None:
            check_rendered(h, "web")


@SETTINGS
@given(key=HOSTILE, value=HOSTILE)
@example(key="env", value="prod")
@curated("key", value="prod")
@curated("value", key="env")
def test_tags(key: str, value: str) -> None:
    with service() as (h, client):
        if attempt(h, lambda: client.put("/scaleSets/web", json=body(tags={key: value}))) is not None:
            assert client.get("/scaleSets/web").json()["tags"] == {key: value}
            check_rendered(h, "web")


def _segment(name: str) -> str:
    """A name as one path segment (percent-encoded, '/' too), as an SDK sends it."""
    from urllib.parse import quote

    return quote(name, safe="") or "%20"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("probe", "/a\nb"),
        ("prefix", "web\n"),
        ("custom_data", "not base64!"),
    ],
)
def test_known_hostile_values_are_refused(field: str, value: str) -> None:
    """Regression cases kept as a table (each was checked by hand too)."""
    kwargs = {"probe": {"probe_path": value}, "prefix": {"prefix": value}, "custom_data": {"custom_data": value}}
    with service() as (h, client):
        assert attempt(h, lambda: client.put("/scaleSets/web", json=body(**kwargs[field]))) is None
