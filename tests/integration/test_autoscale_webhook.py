"""An autoscale decision, evaluated through a real Prometheus, delivers Azure's webhook payload to
a loopback HTTP receiver run by the test; a dead receiver is retried, then counted and logged.

No VMs: the scale set lives in a store of its own and the rule is a raw PromQL query Prometheus
answers (``vector(80)``), so the decision is real and immediate. Every port is picked by the
kernel; everything started here is stopped at the end.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from localvmss.autoscaler import Autoscaler
from localvmss.errors import InvalidSpec
from localvmss.metrics.exporter import DaemonMetrics
from localvmss.metrics.prometheus import PrometheusServer
from localvmss.webhooks import WebhookSender
from tests.receiver import WebhookReceiver
from tests.unit.servicefake import make_service, uniform_body


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = PrometheusServer(tmp_path_factory.mktemp("prom"), listen="127.0.0.1:0", scrape_interval_s=5)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.close()


def _dead_port() -> int:
    with socket.socket() as sock:  # bound and closed: nothing listens there now
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _setting(notifications: list[dict[str, Any]]) -> dict[str, Any]:
    rule = {
        "metricTrigger": {"query": "vector(80)", "operator": "GreaterThan", "threshold": 50, "timeWindow": "PT1M"},
        "scaleAction": {"direction": "Increase", "type": "ChangeCount", "value": 1, "cooldown": "PT1M"},
    }
    return {
        "name": "web-scaling",
        "profiles": [{"name": "default", "capacity": {"minimum": 1, "maximum": 3, "default": 1}, "rules": [rule]}],
        "notifications": notifications,
    }


def _deliveries(registry: CollectorRegistry) -> dict[str, float]:
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        if family.name == "localvmss_autoscale_webhook_deliveries":
            return {s.labels["result"]: s.value for s in family.samples if s.name.endswith("_total")}
    return {}


def test_a_scale_out_delivers_azures_payload(
    tmp_path: Path, prometheus: PrometheusServer, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    h = make_service(tmp_path)
    h.service.put_set("web", uniform_body(1))
    registry = CollectorRegistry()
    metrics = DaemonMetrics(registry, process=False)
    sender = WebhookSender(attempts=3, backoff_s=0.05, timeout_s=2, on_result=metrics.webhook_result)
    scaler = Autoscaler(h.store, prometheus.url, 10.0, lambda: None, metrics=metrics, webhooks=sender)
    dead = f"http://127.0.0.1:{_dead_port()}/gone?token=secret"
    try:
        scaler.put_setting(
            "web",
            _setting(
                [
                    {
                        "operation": "Scale",
                        "email": {"sendToSubscriptionAdministrator": False, "customEmails": []},
                        "webhooks": [
                            {"serviceUri": f"{receiver.url}/hooks/autoscale?code=abc", "properties": {"team": "web"}},
                            {"serviceUri": dead},
                        ],
                    }
                ]
            ),
        )
        decision = scaler.evaluate_set("web")
        assert decision is not None and decision.new_capacity == 2
        assert h.store.scale_set("web").capacity == 2
        assert sender.wait_idle(30), "both deliveries ended"
    finally:
        sender.close()

    [request] = receiver.requests
    assert request["path"] == "/hooks/autoscale?code=abc"
    assert request["headers"]["Content-Type"] == "application/json"
    body = request["body"]
    assert (body["version"], body["status"], body["operation"]) == ("1.0", "Activated", "Scale Out")
    ctx = body["context"]
    assert (ctx["oldCapacity"], ctx["newCapacity"]) == ("1", "2")
    assert ctx["name"] == "web-scaling" and ctx["resourceName"] == "web"
    assert ctx["resourceType"] == "microsoft.compute/virtualmachinescalesets"
    assert "from capacity '1' to capacity '2'" in ctx["details"] and "query 80 > 50" in ctx["details"]
    assert ctx["timestamp"].endswith("Z")
    assert body["properties"] == {"team": "web"}

    assert _deliveries(registry) == {"success": 1.0, "failure": 1.0, "dropped": 0.0}
    failed = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "webhook" in r.getMessage()]
    assert len(failed) == 1 and "after 3 attempt(s)" in failed[0] and "secret" not in failed[0], failed


def test_no_change_sends_nothing(tmp_path: Path, prometheus: PrometheusServer, receiver: WebhookReceiver) -> None:
    h = make_service(tmp_path)
    h.service.put_set("web", uniform_body(3))  # at the maximum: the rule fires but nothing changes
    sender = WebhookSender(backoff_s=0.05)
    scaler = Autoscaler(h.store, prometheus.url, 10.0, lambda: None, webhooks=sender)
    try:
        scaler.put_setting("web", _setting([{"webhooks": [{"serviceUri": receiver.url}]}]))
        decision = scaler.evaluate_set("web")
        assert decision is not None and decision.new_capacity == 3
        assert sender.wait_idle(10)
    finally:
        sender.close()
    assert receiver.requests == []


@pytest.mark.parametrize(
    ("notifications", "expected"),
    [
        ([{"email": {"customEmails": ["ops@example.net"]}}], "no mail transport"),
        ([{"webhooks": [{"serviceUri": "file:///etc/passwd"}]}], "must use http or https"),
    ],
)
def test_undeliverable_notifications_are_refused_and_change_nothing(
    tmp_path: Path, prometheus: PrometheusServer, notifications: list[dict[str, Any]], expected: str
) -> None:
    h = make_service(tmp_path)
    h.service.put_set("web", uniform_body(1))
    scaler = Autoscaler(h.store, prometheus.url, 10.0, lambda: None)
    with pytest.raises(InvalidSpec, match=expected):
        scaler.put_setting("web", _setting(notifications))
    assert h.store.autoscale("web") is None
