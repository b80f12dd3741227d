"""Helpers for end-to-end tests: read what libvirt itself reports, fetch from guests."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from localvmss.cli.client import ApiClient
from localvmss.config import load_config
from localvmss.lab.testbed import DaemonProcess, Testbed
from localvmss.virt.host import Host

POOL = "lvmss-pool"


def libvirt_view(testbed: Testbed, set_name: str) -> dict[str, Any]:
    """Everything of a set that libvirt holds on every lab host: domains, volumes, DHCP hosts."""
    assert testbed.lab is not None
    prefix = f"lvmss-{set_name}-"
    view: dict[str, Any] = {"domains": {}, "volumes": [], "reservations": []}
    for lab_host in testbed.lab.hosts:
        host = Host(lab_host.name, lab_host.socket_uri)
        try:
            for dom in host.owned_domains(prefix):
                view["domains"][dom.name] = (lab_host.name, dom.power_state.value)
            view["volumes"] += [v for v in host.volume_names(POOL, prefix)]
            view["reservations"] += [(mac, ip) for mac, ip in host.network_layout(lab_host.network_name)[4]]
        finally:
            host.close()
    return view


def prometheus_url(daemon: DaemonProcess) -> str:
    """The daemon's own Prometheus (``prometheus_port`` of its configuration)."""
    return f"http://127.0.0.1:{load_config(daemon.config_path, {}).prometheus_port}"


def prom_query(target: DaemonProcess | str, expr: str) -> list[dict[str, Any]]:
    """An instant query to a daemon's Prometheus (or one at a base URL); the result vector. A
    query Prometheus refuses fails the test with its error."""
    base = target if isinstance(target, str) else prometheus_url(target)
    body = httpx.post(f"{base}/api/v1/query", data={"query": expr}, timeout=10).json()
    assert body["status"] == "success", f"{expr!r}: {body.get('error')}"
    return list(body["data"]["result"])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def instances(api: ApiClient, set_name: str) -> list[dict[str, Any]]:
    return list(api.get(f"/scaleSets/{set_name}/virtualMachines")["value"])


def ips(api: ApiClient, set_name: str) -> dict[str, str]:
    return {i["instanceId"]: i["properties"]["networkProfile"]["privateIpAddress"] for i in instances(api, set_name)}


def uniform_body(capacity: int, image: str = "base", **props: Any) -> dict[str, Any]:
    vmp = props.pop("virtualMachineProfile", None) or {
        "storageProfile": {"imageReference": {"id": image}},
        "osProfile": {},
    }
    return {
        "sku": {"name": "Standard_B1ls", "capacity": capacity},
        "properties": {"orchestrationMode": "Uniform", "virtualMachineProfile": vmp, **props},
    }


def create_set(cli: Any, name: str, count: int, *flags: str, port: int | None = None, timeout: float = 600) -> str:
    """``localvmss create NAME --image base --instance-count COUNT`` plus ``flags``; with ``port``
    behind a load-balancer rule PORT:80 with the default HTTP probe. Returns the CLI's output."""
    lb = ("--lb-rule", f"{port}:80", "--health-probe", "http:/healthz") if port is not None else ()
    return str(cli.ok("create", name, "--image", "base", "--instance-count", str(count), *lb, *flags, timeout=timeout))


def dumps(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True)


def settled_sets(api: ApiClient) -> dict[str, object]:
    """Sets and their models, leaving out any still being deleted by an earlier test."""
    return {
        s["name"]: (s["sku"], s["properties"]["virtualMachineProfile"])
        for s in api.get("/scaleSets")["value"]
        if s["properties"]["provisioningState"] != "Deleting"
    }


def backend_names(port: int, tries: int = 40) -> set[str]:
    """The hostnames that answer ``tries`` requests through a load-balancer frontend on loopback."""
    seen = set()
    for _ in range(tries):
        status, body = http_get(f"http://127.0.0.1:{port}/")
        if status == 200:
            seen.add(body)
    return seen


def process_gone(pid: int) -> bool:
    """No such process, or only its zombie is left."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"
