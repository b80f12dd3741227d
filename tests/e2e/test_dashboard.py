"""Every query of the Grafana dashboard returns data from the daemon's live Prometheus, and every
rule of prometheus/localvmss-rules.yml is loaded there and evaluates without error.

One small set behind HAProxy with an autoscale setting whose rule fires at once (a raw query
Prometheus answers), so desired/actual/healthy, instance CPU and memory, HAProxy backends,
autoscale actions (the annotation) and webhook deliveries all have series. The setting's webhook
goes to a loopback receiver run here, so the daemon itself is seen delivering Azure's payload.
Polling has a bounded wait; nothing is timed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from localvmss.cli.client import ApiClient
from localvmss.lab.testbed import DaemonProcess, free_port
from tests.conftest import Cli
from tests.e2e.helpers import http_get, prom_query, prometheus_url, wait_until
from tests.receiver import WebhookReceiver

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "localvmss.json"
# What Grafana would put in for its built-in variables, at the testbed's 2 s scrape interval.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "30s", "${__interval}": "30s"}


def _query_range(base: str, expr: str, start: float) -> list[dict[str, Any]]:
    """What Grafana runs for an annotation: the expression over the dashboard's time range."""
    end = time.time()
    form = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": "5"}
    body = httpx.post(f"{base}/api/v1/query_range", data=form, timeout=10).json()
    assert body["status"] == "success", f"{expr!r}: {body.get('error')}"
    return list(body["data"]["result"])


def _expand(expr: str, set_name: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    expr = expr.replace("${set}", set_name).replace("$set", set_name)
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


def dashboard_queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """{"panel title / refId": expr} for every panel target and Prometheus annotation."""
    out: dict[str, str] = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out[f"{panel['title']} / {target['refId']}"] = target["expr"]
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            out[f"annotation {annotation['name']}"] = annotation["expr"]
    return out


@pytest.fixture(scope="module")
def watched_set(daemon: DaemonProcess) -> Iterator[dict[str, Any]]:
    cli = Cli(daemon.socket_path)
    api = ApiClient(str(daemon.socket_path))
    receiver = WebhookReceiver()
    started = time.time()
    name = f"d{int(started * 1000) % 10**7:07d}"
    port = free_port()
    cli.ok("create", name, "--image", "base", "--instance-count", "1", "--lb-rule", f"{port}:80")
    rule = {
        "metricTrigger": {"query": "vector(80)", "operator": "GreaterThan", "threshold": 50, "timeWindow": "PT1M"},
        "scaleAction": {"direction": "Increase", "type": "ChangeCount", "value": 1, "cooldown": "PT1M"},
    }
    api.put(
        f"/scaleSets/{name}/autoscale",
        {
            "profiles": [{"name": "default", "capacity": {"minimum": 1, "maximum": 2, "default": 1}, "rules": [rule]}],
            "notifications": [
                {"operation": "Scale", "webhooks": [{"serviceUri": f"{receiver.url}/hook", "properties": {}}]}
            ],
        },
    )
    try:
        yield {"name": name, "port": port, "receiver": receiver, "started": started}
    finally:
        receiver.close()
        cli("delete", name)
        api.close()


def test_every_dashboard_query_returns_data(daemon: DaemonProcess, api: ApiClient, watched_set: dict[str, Any]) -> None:
    name, port = watched_set["name"], watched_set["port"]
    base = prometheus_url(daemon)
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    set_query = variables["set"]["query"]["query"]
    metric = re.fullmatch(r"label_values\((\w+), scale_set\)", set_query)
    assert metric is not None, set_query

    # The rule fires at once: 1 -> 2, and the webhook reaches the receiver with Azure's payload.
    wait_until(lambda: api.get(f"/scaleSets/{name}")["sku"]["capacity"] == 2, 120, "the autoscale scale-out")
    wait_until(lambda: watched_set["receiver"].bodies != [], 60, "the autoscale webhook")
    [hook] = watched_set["receiver"].bodies
    assert hook["operation"] == "Scale Out" and hook["context"]["resourceName"] == name
    assert (hook["context"]["oldCapacity"], hook["context"]["newCapacity"]) == ("1", "2")

    wait_until(lambda: api.get(f"/scaleSets/{name}")["properties"].get("readyCount") == 2, 400, "two ready instances")
    for _ in range(10):  # some sessions through HAProxy
        http_get(f"http://127.0.0.1:{port}/")

    # The set variable's values (Grafana's label_values) include the set.
    def set_listed() -> bool:
        values = httpx.get(
            f"{base}/api/v1/label/scale_set/values", params={"match[]": metric.group(1)}, timeout=10
        ).json()["data"]
        return name in values

    wait_until(set_listed, 60, "the set in the $set variable's values")

    pending = {title: _expand(expr, name) for title, expr in dashboard_queries(dashboard).items()}
    assert len(pending) >= 20
    deadline = time.monotonic() + 240
    while pending and time.monotonic() < deadline:
        for title, expr in list(pending.items()):
            found = _query_range(base, expr, watched_set["started"]) if title.startswith("annotation") else None
            if found or (found is None and prom_query(base, expr)):
                del pending[title]
        if pending:
            time.sleep(2)
    assert pending == {}, "panel queries without data: " + json.dumps(pending, indent=1)
    # The annotation marks the one scale-out, and nothing else.
    [annotation] = [a for a in dashboard["annotations"]["list"] if "expr" in a]
    marked = _query_range(base, _expand(annotation["expr"], name), watched_set["started"])
    assert [m["metric"] for m in marked] == [{"scale_set": name, "direction": "out"}], marked


def test_every_rule_is_loaded_and_evaluates(daemon: DaemonProcess, watched_set: dict[str, Any]) -> None:
    base = prometheus_url(daemon)
    shipped = (Path(__file__).resolve().parents[2] / "prometheus" / "localvmss-rules.yml").read_text()
    expected = set(re.findall(r"^\s+- (?:record|alert): (\S+)$", shipped, re.MULTILINE))
    assert len(expected) >= 10

    def evaluated() -> list[dict[str, Any]] | None:
        groups = httpx.get(f"{base}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return (
            rules if {r["name"] for r in rules} >= expected and all(r["health"] != "unknown" for r in rules) else None
        )

    rules: list[dict[str, Any]] = []

    def check() -> bool:
        rules[:] = evaluated() or []
        return bool(rules)

    wait_until(check, 60, "the daemon's Prometheus to evaluate the shipped rules")
    assert {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"} == {}
    for r in rules:
        prom_query(base, r["query"])  # each expression is a valid query there
    # The set's recording rules have series (the rules see the exporter's metrics).
    name = watched_set["name"]
    wait_until(
        lambda: prom_query(base, f'localvmss:scale_set_healthy_instances{{scale_set="{name}"}}') != [],
        60,
        "a recorded series for the set",
    )
