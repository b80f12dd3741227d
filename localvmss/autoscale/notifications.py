"""Autoscale ``notifications`` shaped like Azure's, and the webhook payload Azure sends (pure).

A setting's ``notifications`` are checked when the setting is saved: every webhook is delivered
when the autoscaler changes the capacity (``webhooks.WebhookSender``), and anything this daemon
cannot deliver is refused then, never accepted and dropped later:

* ``operation`` must be ``Scale`` (Azure's only value);
* ``email`` is refused when it would send mail (a custom address or either subscription
  administrator flag): there is no mail transport here. The empty email object that az writes
  next to a webhook (``sendToSubscriptionAdministrator: false, customEmails: []``) sends nothing
  and is accepted;
* ``webhooks[].serviceUri`` must be an http or https URL with a host (Azure asks for https; plain
  http is allowed so a receiver on loopback or a lab network works), at most ``MAX_WEBHOOKS`` of
  them per setting; ``properties`` are string keys and values, passed through in the payload.

``webhook_payload`` builds Azure's autoscale notification body (version 1.0, status Activated,
operation ``Scale Out``/``Scale In``, ``context`` with old and new capacity as strings).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

__all__ = [
    "MAX_WEBHOOKS",
    "EmailNotification",
    "Notification",
    "WebhookNotification",
    "check_service_uri",
    "operation_name",
    "webhook_payload",
]

MAX_WEBHOOKS = 10
PAYLOAD_VERSION = "1.0"
# Placeholders for Azure's subscription-scoped fields: a local daemon has no subscription.
SUBSCRIPTION_ID = "00000000-0000-0000-0000-000000000000"
RESOURCE_GROUP = "localvmss"
RESOURCE_TYPE = "microsoft.compute/virtualmachinescalesets"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


def check_service_uri(value: Any) -> str:
    """An http(s) URL with a host, else ValueError saying what is wrong (no network access)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("serviceUri must be a non-empty URL such as https://example.net/hook")
    text = value.strip()
    if any(ch.isspace() for ch in text):
        raise ValueError(f"serviceUri {text!r} contains whitespace")
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"serviceUri {text!r} is not a URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"serviceUri {text!r} must use http or https")
    if not parts.hostname:
        raise ValueError(f"serviceUri {text!r} has no host")
    if port == 0:
        raise ValueError(f"serviceUri {text!r} has port 0")
    return text


class WebhookNotification(_Model):
    service_uri: str
    properties: dict[str, str] = Field(default_factory=dict)

    @field_validator("service_uri", mode="before")
    @classmethod
    def _uri(cls, value: Any) -> str:
        return check_service_uri(value)

    @field_validator("properties", mode="before")
    @classmethod
    def _properties(cls, value: Any) -> Any:
        return {} if value is None else value


class EmailNotification(_Model):
    send_to_subscription_administrator: bool = False
    send_to_subscription_co_administrators: bool = False
    custom_emails: list[str] = Field(default_factory=list)

    @field_validator("custom_emails", mode="before")
    @classmethod
    def _emails(cls, value: Any) -> Any:
        return [] if value is None else value

    @model_validator(mode="after")
    def _deliverable(self) -> EmailNotification:
        wanted = []
        if self.send_to_subscription_administrator:
            wanted.append("sendToSubscriptionAdministrator")
        if self.send_to_subscription_co_administrators:
            wanted.append("sendToSubscriptionCoAdministrators")
        if self.custom_emails:
            wanted.append("customEmails")
        if wanted:
            raise ValueError(
                f"email notifications ({', '.join(wanted)}) are not supported: localvmss has no mail "
                f"transport; use a webhook (serviceUri) instead"
            )
        return self


class Notification(_Model):
    operation: Literal["Scale"] = "Scale"
    email: EmailNotification | None = None
    webhooks: list[WebhookNotification] = Field(default_factory=list, max_length=MAX_WEBHOOKS)

    @field_validator("operation", mode="before")
    @classmethod
    def _operation(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "scale":
            return "Scale"
        raise ValueError(f"operation {value!r} is not supported; Azure's only notification operation is Scale")

    @field_validator("webhooks", mode="before")
    @classmethod
    def _webhooks(cls, value: Any) -> Any:
        return [] if value is None else value


def operation_name(old_capacity: int, new_capacity: int) -> str:
    """Azure's ``operation`` of a notification: ``Scale Out`` or ``Scale In``."""
    if new_capacity == old_capacity:
        raise ValueError(f"no scale operation: capacity stays {old_capacity}")
    return "Scale Out" if new_capacity > old_capacity else "Scale In"


def _timestamp(at: datetime) -> str:
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"  # Azure's seven fractional digits


def webhook_payload(
    *,
    setting_name: str,
    scale_set: str,
    old_capacity: int,
    new_capacity: int,
    at: datetime,
    reason: str,
    properties: dict[str, str],
    portal_link: str = "",
) -> dict[str, Any]:
    """Azure's autoscale webhook body for one capacity change of ``scale_set``.

    ``details`` is Azure's sentence followed by our decision's reason (the numbers behind it).
    Subscription and resource group are fixed placeholders; ids are shaped like Azure's so
    receivers that parse them keep working.
    """
    group = f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{RESOURCE_GROUP}"
    resource_id = f"{group}/providers/Microsoft.Compute/virtualMachineScaleSets/{scale_set}"
    details = (
        f"Autoscale successfully started scale operation for resource '{scale_set}' from capacity "
        f"'{old_capacity}' to capacity '{new_capacity}'"
    )
    if reason:
        details += f": {reason}"
    return {
        "version": PAYLOAD_VERSION,
        "status": "Activated",
        "operation": operation_name(old_capacity, new_capacity),
        "context": {
            "timestamp": _timestamp(at),
            "id": f"{group}/providers/microsoft.insights/autoscalesettings/{setting_name}",
            "name": setting_name,
            "details": details,
            "subscriptionId": SUBSCRIPTION_ID,
            "resourceGroupName": RESOURCE_GROUP,
            "resourceName": scale_set,
            "resourceType": RESOURCE_TYPE,
            "resourceId": resource_id,
            "portalLink": portal_link,
            "oldCapacity": str(old_capacity),
            "newCapacity": str(new_capacity),
        },
        "properties": dict(properties),
    }
