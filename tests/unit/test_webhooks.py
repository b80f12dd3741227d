"""Autoscale notifications: what a setting may ask for (tables), Azure's webhook payload, and the
sender's retries, results and redaction (requests answered by an in-process transport)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from localvmss.autoscale.notifications import check_service_uri, operation_name, webhook_payload
from localvmss.autoscale.settings import parse_autoscale_setting
from localvmss.cli import autoscale_cmds as ac
from localvmss.errors import InvalidSpec
from localvmss.webhooks import WebhookSender, redacted
from tests.unit.test_cli_autoscale import FakeDaemon, az, ok
from tests.unit.test_cli_autoscale import daemon as daemon  # noqa: F401 - the fixture

PROFILE = {"name": "default", "capacity": {"minimum": 1, "maximum": 3, "default": 1}}
EMPTY_EMAIL = {
    "sendToSubscriptionAdministrator": False,
    "sendToSubscriptionCoAdministrators": False,
    "customEmails": [],
}


def _setting(notifications: Any) -> dict[str, Any]:
    return {"targetResourceName": "web", "profiles": [PROFILE], "notifications": notifications}


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("notifications", "hooks"),
    [
        (None, []),
        ([], []),
        ([{"operation": "Scale", "webhooks": []}], []),
        ([{"operation": "scale", "email": EMPTY_EMAIL, "webhooks": None}], []),
        (
            [{"operation": "Scale", "email": EMPTY_EMAIL, "webhooks": [{"serviceUri": "http://127.0.0.1:8080/hook"}]}],
            [("http://127.0.0.1:8080/hook", {})],
        ),
        (
            [
                {"webhooks": [{"serviceUri": "https://hooks.example/a?token=x", "properties": {"team": "web"}}]},
                {"webhooks": [{"serviceUri": "http://[::1]:9/b", "properties": None}]},
            ],
            [("https://hooks.example/a?token=x", {"team": "web"}), ("http://[::1]:9/b", {})],
        ),
    ],
)
def test_notifications_accepted(notifications: Any, hooks: list[tuple[str, dict[str, str]]]) -> None:
    setting = parse_autoscale_setting(_setting(notifications))
    assert [(h.service_uri, h.properties) for h in setting.webhooks] == hooks
    # Stored and read back (what the store keeps) gives the same webhooks.
    again = parse_autoscale_setting(setting.model_dump(mode="json", by_alias=True, exclude_none=True))
    assert [(h.service_uri, h.properties) for h in again.webhooks] == hooks


@pytest.mark.parametrize(
    ("notifications", "expected"),
    [
        ([{"operation": "Alert"}], "notifications[0].operation: operation 'Alert' is not supported"),
        ([{"email": {"customEmails": ["ops@example.net"]}}], "email notifications (customEmails) are not supported"),
        (
            [{"email": {"sendToSubscriptionAdministrator": True}}],
            "email notifications (sendToSubscriptionAdministrator) are not supported: localvmss has no mail transport",
        ),
        ([{"webhooks": [{"serviceUri": "ftp://example.net/x"}]}], "must use http or https"),
        ([{"webhooks": [{"serviceUri": "http:///path"}]}], "has no host"),
        ([{"webhooks": [{"serviceUri": "http://h:99999/"}]}], "is not a URL"),
        ([{"webhooks": [{"serviceUri": "http://h/ x"}]}], "contains whitespace"),
        ([{"webhooks": [{"serviceUri": ""}]}], "must be a non-empty URL"),
        ([{"webhooks": [{"serviceUri": "http://h/", "properties": {"a": 1}}]}], "properties.a"),
        ([{"webhooks": [{"serviceUri": "http://h/", "extra": 1}]}], "extra"),
        ([{"webhooks": [{"serviceUri": "http://h/"}] * 11}], "webhooks"),
        ({"webhooks": []}, "notifications"),
    ],
)
def test_notifications_refused_with_one_line(notifications: Any, expected: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        parse_autoscale_setting(_setting(notifications))
    assert expected in err.value.message and "\n" not in err.value.message, err.value.message


@pytest.mark.parametrize(
    ("uri", "ok"),
    [
        ("http://127.0.0.1:1/x", True),
        ("HTTPS://Example.net", True),
        (" http://h/ ", True),
        ("http://h:0/", False),
        ("mailto:ops@example.net", False),
        (None, False),
    ],
)
def test_check_service_uri(uri: Any, ok: bool) -> None:
    if ok:
        assert check_service_uri(uri) == uri.strip()
    else:
        with pytest.raises(ValueError):
            check_service_uri(uri)


# ---------------------------------------------------------------------------------- payload
@pytest.mark.parametrize(("old", "new", "operation"), [(1, 2, "Scale Out"), (5, 3, "Scale In"), (0, 1, "Scale Out")])
def test_payload_has_azures_shape(old: int, new: int, operation: str) -> None:
    at = datetime(2026, 11, 21, 7, 1, 47, 892672, tzinfo=UTC)
    body = webhook_payload(
        setting_name="web-autoscale",
        scale_set="web",
        old_capacity=old,
        new_capacity=new,
        at=at,
        reason="avg Percentage CPU 87 > 70 over PT5M",
        properties={"team": "web"},
    )
    assert body["version"] == "1.0" and body["status"] == "Activated" and body["operation"] == operation
    ctx = body["context"]
    assert set(ctx) == {
        "timestamp",
        "id",
        "name",
        "details",
        "subscriptionId",
        "resourceGroupName",
        "resourceName",
        "resourceType",
        "resourceId",
        "portalLink",
        "oldCapacity",
        "newCapacity",
    }
    assert ctx["timestamp"] == "2026-11-21T07:01:47.8926720Z"
    assert (ctx["oldCapacity"], ctx["newCapacity"]) == (str(old), str(new)), "Azure sends capacities as strings"
    assert ctx["name"] == "web-autoscale" and ctx["id"].endswith("/microsoft.insights/autoscalesettings/web-autoscale")
    assert ctx["resourceName"] == "web" and ctx["resourceId"].endswith("/virtualMachineScaleSets/web")
    assert ctx["resourceType"] == "microsoft.compute/virtualmachinescalesets"
    assert f"from capacity '{old}' to capacity '{new}': avg Percentage CPU 87" in ctx["details"]
    assert body["properties"] == {"team": "web"}
    json.dumps(body)  # serialisable as it is


def test_no_operation_without_a_change() -> None:
    with pytest.raises(ValueError):
        operation_name(2, 2)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://u:p@hooks.example:8443/a/b?token=secret#f", "https://hooks.example:8443/a/b"),
        ("http://127.0.0.1/hook", "http://127.0.0.1/hook"),
    ],
)
def test_logged_urls_hide_secrets(url: str, shown: str) -> None:
    assert redacted(url) == shown


# ----------------------------------------------------------------------------------- sender
class Receiver:
    """Answers with the statuses in ``answers`` in turn (an exception instance is raised)."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.bodies.append(json.loads(request.content))
            answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer, text="ok" if answer < 300 else "no")


@pytest.mark.parametrize(
    ("answers", "attempts", "result", "tries"),
    [
        ((200,), 3, "success", 1),
        ((204,), 3, "success", 1),
        ((500, 502, 200), 3, "success", 3),
        ((httpx.ConnectError("refused"), 200), 3, "success", 2),
        ((500,), 3, "failure", 3),
        ((httpx.ReadTimeout("slow"),), 2, "failure", 2),
        ((301,), 2, "failure", 2),
    ],
)
def test_sender_retries_and_counts_one_result(
    answers: tuple[int | Exception, ...], attempts: int, result: str, tries: int
) -> None:
    receiver = Receiver(*answers)
    results: list[str] = []
    sender = WebhookSender(
        attempts=attempts, backoff_s=0.0, on_result=results.append, transport=httpx.MockTransport(receiver)
    )
    try:
        sender.submit("http://receiver.test/hook", {"operation": "Scale Out"}, "scale set web: 1->2")
        assert sender.wait_idle(10)
    finally:
        sender.close()
    assert results == [result]
    assert len(receiver.bodies) == tries and receiver.bodies[0] == {"operation": "Scale Out"}


def test_failures_are_logged_at_warning_without_the_token(caplog: pytest.LogCaptureFixture) -> None:
    sender = WebhookSender(attempts=1, transport=httpx.MockTransport(Receiver(503)))
    try:
        sender.submit("http://receiver.test/hook?token=secret", {}, "scale set web: 1->2")
        assert sender.wait_idle(10)
    finally:
        sender.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "HTTP 503" in warnings[0] and "scale set web: 1->2" in warnings[0], warnings
    assert "secret" not in warnings[0]


def test_a_full_queue_drops_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    gate = threading.Event()

    def slow(request: httpx.Request) -> httpx.Response:
        gate.wait(10)
        return httpx.Response(200)

    results: list[str] = []
    sender = WebhookSender(max_pending=1, on_result=results.append, transport=httpx.MockTransport(slow))
    try:
        for _ in range(4):  # one in the worker, one queued, the rest dropped (at least one)
            sender.submit("http://receiver.test/hook", {}, "scale set web")
        gate.set()
        assert sender.wait_idle(10)
    finally:
        sender.close()
    assert len(results) == 4 and "dropped" in results and "success" in results, results
    assert any("dropped" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


# ---------------------------------------------------------------------------------- the CLI
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("webhook https://h/x", ("https://h/x", {})),
        (
            "WEBHOOK http://127.0.0.1:8080/hook team=web env=lab",
            ("http://127.0.0.1:8080/hook", {"team": "web", "env": "lab"}),
        ),
        ("webhook http://h/x a=", ("http://h/x", {"a": ""})),
    ],
)
def test_parse_webhook_action(text: str, expected: tuple[str, dict[str, str]]) -> None:
    assert ac.parse_webhook_action(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("email ops@example.net", "email notifications are not supported (localvmss has no mail transport)"),
        ("webhook", "expected 'webhook URL [KEY=VALUE ...]'"),
        ("sms +1555", "expected 'webhook URL"),
        ("webhook ftp://h/x", "must use http or https"),
        ("webhook http://h/x team", "'team' is not KEY=VALUE"),
        ("webhook http://h/x =v", "'=v' is not KEY=VALUE"),
    ],
)
def test_parse_webhook_action_refuses(text: str, fragment: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        ac.parse_webhook_action(text)
    assert fragment in err.value.message and "\n" not in err.value.message, err.value.message


def test_add_and_remove_webhooks_edit_the_scale_notification() -> None:
    setting: dict[str, Any] = {"profiles": [PROFILE], "notifications": [{"operation": "Scale", "email": EMPTY_EMAIL}]}
    ac.add_webhook(setting, "http://h/a", {})
    ac.add_webhook(setting, "http://h/b", {"k": "v"})
    ac.add_webhook(setting, "http://h/a", {"again": "1"})  # same URL: replaced, not doubled
    [scale] = setting["notifications"]
    assert scale["email"] == EMPTY_EMAIL
    assert scale["webhooks"] == [
        {"serviceUri": "http://h/b", "properties": {"k": "v"}},
        {"serviceUri": "http://h/a", "properties": {"again": "1"}},
    ]
    ac.remove_webhook(setting, "http://h/b")
    assert [h["serviceUri"] for h in scale["webhooks"]] == ["http://h/a"]
    with pytest.raises(InvalidSpec, match="no such webhook; the setting has: http://h/a"):
        ac.remove_webhook(setting, "http://h/zzz")
    parse_autoscale_setting({**setting, "targetResourceName": "web"})


def test_cli_create_and_update_webhooks(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    got = ok(monkeypatch, capsys, "create", "--resource", "web", "--count", "1", "--action", "webhook", "http://h/a")
    assert got["notifications"][0]["webhooks"] == [{"serviceUri": "http://h/a", "properties": {}}]
    got = ok(
        monkeypatch,
        capsys,
        "update",
        "--resource",
        "web",
        "--add-action",
        "webhook",
        "https://h/b",
        "team=web",
        "--remove-action",
        "webhook",
        "http://h/a",
    )
    assert got["notifications"][0]["webhooks"] == [{"serviceUri": "https://h/b", "properties": {"team": "web"}}]
    assert got["profiles"][0]["capacity"] == {"minimum": 1, "maximum": 1, "default": 1}, "capacity untouched"
    puts = daemon.puts()
    code, _, err = az(monkeypatch, capsys, "update", "--resource", "web", "--add-action", "email", "ops@example.net")
    assert code == 2 and "no mail transport" in err and daemon.puts() == puts, "refused before any request"
